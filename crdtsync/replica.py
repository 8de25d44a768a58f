"""Replica: CRDT documents that work offline and never lose a change they accepted.

A :class:`Replica` owns one local store (an SQLite file by default) and hands
out real :class:`pycrdt.Doc` objects. Every transaction on an opened document is
written to the store, together with its outbox entry, from a ``Doc.observe``
callback: when the Python call that made the change returns, the change is
stored (DESIGN.md guarantee 2). The sync layer later sends the outbox and calls
:meth:`Replica.acknowledge` when a relay has stored it (guarantee 4: change →
persist → outbox → send; nothing is ever sent that is not stored).

Client ids: each (replica, document) pair writes under one 32-bit pycrdt client
id, chosen at random when the document is created and kept in the store. It is
reused across restarts, which keeps state vectors small. This is safe because a
change is stored before it can be sent: after a restart the document's clock
for that client id resumes exactly where the stored history ends, and no peer
can have seen a change under that id that the store does not have.

Updates that arrive before their dependencies (an earlier update of the same
client, an item they refer to, an item they delete) are *held*: stored
verbatim as PENDING entries, and applied to the document only once everything
they depend on is there. pycrdt 0.14.13 integrates such updates inconsistently
when given them early (the same updates in different orders can end in
different documents), so they never reach it early.
"""

from __future__ import annotations

import logging
import os
import secrets
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import pycrdt

from .awareness import AwarenessLink
from .errors import (
    InvalidUpdateError,
    ReplicaClosedError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    SyncError,
)
from .events import DocumentOpened, LocalUpdate, PendingChanged, ReplicaEvent, SyncStatus
from .holding import Held, check_decodes, release_ready
from .ids import DocId, ReplicaId, check_doc_id
from .protocol import DEFAULT_MAX_FRAME
from .statevector import decode_state_vector, same_state
from .store.base import (
    EMPTY_SNAPSHOT,
    DocumentInfo,
    EntryKind,
    NewEntry,
    OutboxEntry,
    Store,
    StoredDocument,
)
from .store.memory import MemoryStore
from .store.sqlite import SQLiteStore
from .update import summarize_update

if TYPE_CHECKING:
    from .client import Connector, Token

__all__ = ["Durability", "PendingBatch", "Replica"]

logger = logging.getLogger(__name__)

Durability = Literal["normal", "full", "memory"]

_EMPTY_UPDATE = b"\x00\x00"
# Stores in use by a Replica: two replicas writing one store would share client ids.
_CLAIMED: weakref.WeakSet[Store] = weakref.WeakSet()
_LOAD_GROUP = 100  # updates applied per transaction when rebuilding a document
_MERGE_GROUP = 1000  # bound on updates merged at once (merge_updates is quadratic)
DEFAULT_COMPACT_MIN_BYTES = 256 * 1024


def _new_client_id() -> int:
    """A random non-zero 32-bit client id, as Yjs uses."""
    return secrets.randbits(32) or 1


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """Consecutive outbox entries merged into one update, for sending.

    Acknowledging ``last_seq`` acknowledges the whole batch.
    """

    first_seq: int
    last_seq: int
    update: bytes

    @property
    def count(self) -> int:
        """How many outbox entries the batch holds."""
        return self.last_seq - self.first_seq + 1


@dataclass(slots=True, eq=False)
class _Unsaved:
    kind: EntryKind
    data: bytes


@dataclass(slots=True, eq=False)
class _OpenDoc:
    """A document this replica has open, and its bookkeeping."""

    doc_id: DocId
    doc: pycrdt.Doc[Any]
    last_seq: int
    acked_seq: int
    log_bytes: int = 0
    """Bytes appended since the last compaction (what compaction would fold)."""
    remote: bool = False
    """True while :meth:`Replica.apply_remote` applies an update."""
    unsaved: list[_Unsaved] = field(default_factory=list)
    """Changes the document holds that a failed write could not store yet."""
    held: list[Held] = field(default_factory=list)
    """Received updates waiting for their dependencies (stored as PENDING entries)."""
    compact_at: int = 0
    """Log bytes above which the next automatic compaction runs."""

    @property
    def pending(self) -> int:
        local_unsaved = sum(1 for u in self.unsaved if u.kind is EntryKind.LOCAL)
        return self.last_seq - self.acked_seq + local_unsaved


class Replica:
    """A local replica: opens documents from a durable store and records every change.

    ``Replica(path)`` opens or creates an SQLite store at ``path``.
    ``durability`` is ``"normal"`` (WAL; survives a process crash, the default),
    ``"full"`` (fsync per commit; survives power loss) or ``"memory"`` (no file).
    ``Replica(":memory:")`` is the same as ``durability="memory"``. A custom
    :class:`~crdtsync.store.Store` can be passed as ``store=`` instead of a path.

    ``compact_min_bytes``: a document's log is folded into its snapshot when the
    bytes appended since the last compaction exceed both this and the snapshot's
    size.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        durability: Durability = "normal",
        *,
        store: Store | None = None,
        compact_min_bytes: int = DEFAULT_COMPACT_MIN_BYTES,
    ) -> None:
        if durability not in ("normal", "full", "memory"):
            raise ValueError(f"durability must be 'normal', 'full' or 'memory', not {durability!r}")
        if store is not None:
            if path is not None:
                raise ValueError("pass either a path or a store, not both")
        elif path is None:
            raise ValueError("a path (or ':memory:', or store=) is required")
        elif durability == "memory" or os.fspath(path) == ":memory:":
            store = MemoryStore()
            durability = "memory"
        else:
            store = SQLiteStore(path, durability)
        if store in _CLAIMED:
            raise StoreLockedError("this store is already used by another Replica")
        _CLAIMED.add(store)
        if isinstance(store, SQLiteStore):
            durability = store.durability
        elif isinstance(store, MemoryStore):
            durability = "memory"
        self._store: Store = store
        self.durability: Durability = durability
        self.compact_min_bytes = compact_min_bytes
        self._replica_id = store.replica_id()
        self._docs: dict[DocId, _OpenDoc] = {}
        self._observers: list[Callable[[ReplicaEvent], None]] = []
        self._closed = False
        self._stored = 0  # entries stored since open: tells apply_remote what it changed
        self._connector: Connector | None = None
        self._unobserve_sync: Callable[[], None] = _nothing
        self._unobserve_awareness: Callable[[], None] = _nothing
        self._presence = AwarenessLink()
        logger.debug("replica %s opened (durability=%s)", self._replica_id, durability)

    # -- identity and lifecycle ------------------------------------------------

    @property
    def replica_id(self) -> ReplicaId:
        """This replica's stable id, created with its store."""
        return self._replica_id

    @property
    def store(self) -> Store:
        """The store this replica writes to."""
        return self._store

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def close(self) -> None:
        """Close the store. Opened documents stay readable; editing them then raises
        :class:`~crdtsync.errors.ReplicaClosedError` (wrapped by pycrdt in an
        ``ExceptionGroup``) because the change could not be stored.
        Changes an earlier failed write kept in memory get one more attempt.
        Calling ``close()`` twice is harmless.
        """
        if self._closed:
            return
        if self._connector is not None and self._connector.running:
            logger.warning(
                "replica %s closed while connected to %s; call disconnect() first",
                self._replica_id,
                self._connector.url,
            )
            self._connector.cancel()
        try:
            self.flush()  # a last chance for changes a failed write kept in memory
        except StoreError as exc:
            unsaved = ", ".join(d.doc_id for d in self._docs.values() if d.unsaved)
            logger.error(
                "closing replica with changes that could not be stored (%s): %s", unsaved, exc
            )
        self._closed = True
        _CLAIMED.discard(self._store)
        self._store.close()
        logger.debug("replica %s closed", self._replica_id)

    def __enter__(self) -> Replica:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"unclosed Replica {self._replica_id}", ResourceWarning, stacklevel=2)
            self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ReplicaClosedError("the replica is closed")

    # -- documents -------------------------------------------------------------

    def documents(self) -> list[str]:
        """Ids of every document in the store (opened or not), sorted."""
        self._check_open()
        return list(self._store.documents())

    def open(self, doc_id: str) -> pycrdt.Doc[Any]:
        """Return the document ``doc_id``, loaded from the store (created if new).

        No network is involved. Opening the same id again returns the same
        ``pycrdt.Doc`` object. Every transaction on it is stored before the
        call that made it returns.
        """
        self._check_open()
        key = check_doc_id(doc_id)
        state = self._docs.get(key)
        if state is None:
            state = self._load(key)
            self._docs[key] = state
            if self._observers:
                self._emit(DocumentOpened(key))
        return state.doc

    def _load(self, doc_id: DocId) -> _OpenDoc:
        stored = self._store.load_document(doc_id)
        if stored is None:
            info = self._store.create_document(doc_id, _new_client_id())
            stored = StoredDocument(info, EMPTY_SNAPSHOT, 0, [])
            logger.debug("created document %r (client id %d)", doc_id, info.client_id)
        elif self._store.unclean:
            # Writes the store reported durable may be lost (power loss in "normal"
            # durability) while peers have them: never reuse their clocks.
            info = self._store.set_client_id(doc_id, _new_client_id())
            logger.warning(
                "document %r: new client id %d after an unclean shutdown (was %d)",
                doc_id,
                info.client_id,
                stored.info.client_id,
            )
            stored = StoredDocument(info, stored.snapshot, stored.snapshot_upto, stored.entries)
        info = stored.info
        doc, held, rejected = _rebuild(stored)
        state = _OpenDoc(
            doc_id=doc_id,
            doc=doc,
            last_seq=info.last_seq,
            acked_seq=info.acked_seq,
            log_bytes=sum(len(e.data) for e in stored.entries),
            held=held,
            compact_at=self._compact_threshold(len(stored.snapshot)),
        )
        self._discard(state, rejected)
        doc.observe(partial(self._on_transaction, state))
        self._auto_compact(state)
        return state

    def client_id(self, doc_id: str) -> int:
        """The 32-bit pycrdt client id this replica writes ``doc_id`` under.

        Raises ``KeyError`` if the store has no such document.
        """
        state = self._docs.get(check_doc_id(doc_id))
        if state is not None:
            return state.doc.client_id
        return self._info(doc_id).client_id

    def _info(self, doc_id: str) -> DocumentInfo:
        """The stored bookkeeping of ``doc_id``, without loading (or creating) it."""
        self._check_open()
        info = self._store.document_info(check_doc_id(doc_id))
        if info is None:
            raise KeyError(f"no document {doc_id!r} in this replica")
        return info

    def _state(self, doc_id: str) -> _OpenDoc:
        self.open(doc_id)
        return self._docs[DocId(doc_id)]

    # -- recording changes -------------------------------------------------------

    def _on_transaction(self, state: _OpenDoc, event: pycrdt.TransactionEvent) -> None:
        """pycrdt calls this at the end of every transaction that changed the doc.

        This is the hot path of every local edit: keep it lean.
        """
        update = event.update
        if update == _EMPTY_UPDATE:
            return
        kind = EntryKind.REMOTE if state.remote else EntryKind.LOCAL
        if self._closed:
            state.unsaved.append(_Unsaved(kind, update))
            raise ReplicaClosedError(
                f"the replica is closed: this change to {state.doc_id!r} was not stored"
            )
        if state.unsaved:
            self._write(state, [*state.unsaved, _Unsaved(kind, update)])
            return
        # One entry, nothing unsaved before it: the common case, without _write's lists.
        seq = state.last_seq + 1 if kind is EntryKind.LOCAL else None
        try:
            self._store.append(state.doc_id, (NewEntry(kind, update, seq),))
        except StoreError:
            self._keep_unsaved(state, [_Unsaved(kind, update)])
            raise
        self._after_write(state, 1, len(update), seq)
        if seq is not None and self._observers:
            self._emit(LocalUpdate(state.doc_id, seq, update))

    def _write(self, state: _OpenDoc, items: list[_Unsaved]) -> None:
        """Store ``items`` in one transaction, or keep them all as unsaved and raise."""
        entries = []
        seq = state.last_seq
        for item in items:
            if item.kind is EntryKind.LOCAL:
                seq += 1
                entries.append(NewEntry(item.kind, item.data, seq))
            else:
                entries.append(NewEntry(item.kind, item.data))
        try:
            self._store.append(state.doc_id, entries)
        except StoreError:
            self._keep_unsaved(state, items)
            raise
        state.unsaved = []
        written = sum(len(item.data) for item in items)
        self._after_write(state, len(items), written, None if seq == state.last_seq else seq)
        if self._observers:
            for entry in entries:
                if entry.seq is not None:
                    self._emit(LocalUpdate(state.doc_id, entry.seq, entry.data))

    def _after_write(self, state: _OpenDoc, count: int, size: int, seq: int | None) -> None:
        """Bookkeeping once ``count`` entries (``size`` bytes) are stored; ``seq`` is the
        new last outbox sequence number if local changes were among them."""
        self._stored += count
        state.log_bytes += size
        if seq is not None:
            state.last_seq = seq
            if self._observers:
                self._emit(PendingChanged(state.doc_id, state.pending))
        if state.log_bytes > state.compact_at:
            self._auto_compact(state)

    @staticmethod
    def _keep_unsaved(state: _OpenDoc, items: list[_Unsaved]) -> None:
        state.unsaved = items
        logger.error(
            "could not store %d change(s) to %r; kept in memory until the next write",
            len(items),
            state.doc_id,
        )

    def flush(self) -> None:
        """Store changes that an earlier failed write left in memory (no-op if none).

        Raises :class:`~crdtsync.errors.StoreWriteError` if the store still fails.
        """
        self._check_open()
        for state in list(self._docs.values()):
            if state.unsaved:
                self._write(state, state.unsaved)

    def apply_remote(self, doc_id: str, update: bytes) -> bool:
        """Apply an update received from elsewhere, and store it. Idempotent.

        The change is stored (never in the outbox) before this returns, and the
        document's observers fire as for any change. An update whose
        dependencies have not arrived yet is stored and held, and applied as
        soon as they have. Returns True if something new was stored (a change,
        or an update now held); False if the update was already known.

        Raises :class:`~crdtsync.errors.InvalidUpdateError` if the update cannot
        be decoded (nothing is applied or stored then), or if pycrdt rejects it
        part-way (what it integrated before failing is stored).
        """
        state = self._state(doc_id)
        if not isinstance(update, bytes):
            raise TypeError(f"update must be bytes, not {type(update).__name__}")
        try:
            summary = summarize_update(update)
        except ValueError as exc:
            raise InvalidUpdateError(f"update for {doc_id!r} rejected: {exc}") from exc
        before = self._stored
        if summary.missing(decode_state_vector(state.doc.get_state())):
            if any(held.update == update for held in state.held):
                return False
            check_decodes(doc_id, update)
            self._write(state, [*state.unsaved, _Unsaved(EntryKind.PENDING, update)])
            state.held.append(Held(update, summary))
            logger.debug("holding an update for %r until its dependencies arrive", doc_id)
            return True
        self._integrate(state, update)
        rejected = release_ready(state.doc, state.held, partial(self._integrate, state))
        self._discard(state, rejected)
        return self._stored != before

    def _integrate(self, state: _OpenDoc, update: bytes) -> None:
        """Apply a remote update whose dependencies are all present; the observer stores it."""
        state.remote = True
        try:
            state.doc.apply_update(update)
        except ExceptionGroup as group:  # a store failure raised from our observer
            store_errors = group.subgroup(StoreError)
            if store_errors is not None and len(store_errors.exceptions) == len(group.exceptions):
                raise store_errors.exceptions[0] from group
            raise
        except (ValueError, RuntimeError) as exc:
            raise InvalidUpdateError(
                f"update for {state.doc_id!r} rejected by pycrdt: {exc}"
            ) from exc
        finally:
            state.remote = False

    def _discard(self, state: _OpenDoc, rejected: Sequence[Held]) -> None:
        """Forget held updates pycrdt refused once their dependencies arrived.

        Whatever part of them pycrdt integrated before failing was stored by the
        observer; the rest can never apply, so its PENDING entry is removed
        rather than left to fail every rebuild.
        """
        if not rejected:
            return
        bad = {held.update for held in rejected}
        stored = self._store.load_document(state.doc_id)
        ids = (
            []
            if stored is None
            else [e.id for e in stored.entries if e.kind is EntryKind.PENDING and e.data in bad]
        )
        self._store.remove_entries(state.doc_id, ids)
        for held in rejected:
            logger.warning(
                "discarded a held update for %r that pycrdt rejected: %s",
                state.doc_id,
                held.update[:64].hex(),
            )

    # -- outbox --------------------------------------------------------------------

    def pending(self, doc_id: str) -> int:
        """Local updates to ``doc_id`` not yet acknowledged by a relay (0: all acknowledged)."""
        self._check_open()
        key = check_doc_id(doc_id)
        state = self._docs.get(key)
        if state is not None:
            return state.pending
        info = self._store.document_info(key)
        return 0 if info is None else info.pending

    def outbox(self, doc_id: str) -> list[OutboxEntry]:
        """The unacknowledged local updates of ``doc_id``, in order, with their sequence numbers.

        Empty for a document the store does not have. Does not load the document.
        """
        self._check_open()
        key = check_doc_id(doc_id)
        if key not in self._docs and self._store.document_info(key) is None:
            return []
        return self._store.outbox(key)

    def pending_batches(
        self, doc_id: str, max_bytes: int = 1 << 20, *, state_vector: bytes | None = None
    ) -> list[PendingBatch]:
        """The outbox of ``doc_id`` merged into as few updates as fit ``max_bytes`` each.

        Consecutive entries are merged with ``pycrdt.merge_updates`` in bounded
        groups. An entry larger than ``max_bytes`` on its own forms its own batch.

        ``state_vector``: the state vector of the peer the batches are for. An
        entry that needs items the peer lacks and no earlier entry carries (another
        replica's changes the relay lost in a crash) then starts a new batch. A
        merged batch spans a stretch of time: a change another replica made within
        it can depend on the batch's start while the batch's end depends on that
        change, and a peer that applies an update only once all it needs is there
        (the relay and replicas do) would then wait for each of the two forever.
        Entries are single transactions, so such a dependency can only point back
        in time: with the rule above, no two batches can wait for each other.
        """
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        have = None if state_vector is None else decode_state_vector(state_vector)
        batches: list[PendingBatch] = []
        group: list[OutboxEntry] = []
        size = 0

        def flush_group() -> None:
            data = [entry.data for entry in group]
            update = data[0] if len(data) == 1 else pycrdt.merge_updates(*data)
            batches.append(PendingBatch(group[0].seq, group[-1].seq, update))

        for entry in self.outbox(doc_id):
            waits = False
            if have is not None:
                summary = summarize_update(entry.data)
                waits = bool(summary.missing(have))
                have = summary.reach(have)
            if group and (
                waits or size + len(entry.data) > max_bytes or len(group) >= _MERGE_GROUP
            ):
                flush_group()
                group, size = [], 0
            group.append(entry)
            size += len(entry.data)
        if group:
            flush_group()
        return batches

    def acknowledge(self, doc_id: str, seq: int) -> None:
        """A relay durably stored every local update of ``doc_id`` up to ``seq``.

        Drops those entries from the outbox (they stay in the document's history).
        Acknowledging an older ``seq`` again is harmless. Raises ``KeyError`` for
        a document the store does not have, ``ValueError`` for a ``seq`` never issued.
        """
        key = check_doc_id(doc_id)
        state = self._docs.get(key)
        if state is None:  # not loaded: no need to load it to acknowledge
            before = self._info(key).acked_seq
            info = self._store.acknowledge(key, seq)
            if info.acked_seq != before:
                self._emit(PendingChanged(key, info.pending))
            return
        if seq <= state.acked_seq:
            return
        info = self._store.acknowledge(key, seq)
        state.acked_seq = info.acked_seq
        self._emit(PendingChanged(key, state.pending))

    # -- what the sync session reads (crdtsync.session.SyncTarget) --------------------

    def state_vector(self, doc_id: str) -> bytes:
        """The encoded Yjs state vector of ``doc_id`` (loads the document)."""
        return self._state(doc_id).doc.get_state()

    def diff(self, doc_id: str, state_vector: bytes) -> bytes:
        """An update with everything ``doc_id`` has beyond ``state_vector``, plus its
        whole delete set (deletions do not show in state vectors).

        Changes that a failed write left in memory are stored first; raises
        :class:`~crdtsync.errors.StoreWriteError` if they still cannot be.
        """
        state = self._state(doc_id)
        if state.unsaved:
            # DESIGN.md guarantee 4: never send what is not stored. Store changes a
            # failed write left in memory first, or raise StoreWriteError.
            self._write(state, state.unsaved)
        return state.doc.get_update(state_vector)

    def last_seq(self, doc_id: str) -> int:
        """The highest outbox sequence number issued for ``doc_id`` (0 if none)."""
        self._check_open()
        key = check_doc_id(doc_id)
        state = self._docs.get(key)
        if state is not None:
            return state.last_seq
        info = self._store.document_info(key)
        return 0 if info is None else info.last_seq

    # -- syncing with a relay ------------------------------------------------------

    async def connect(
        self,
        url: str,
        *,
        token: Token = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        first_attempt_timeout: float = 2.0,
    ) -> None:
        """Start syncing every open document (and every one opened later) with the
        relay at ``url`` (``ws://host:port`` or ``wss://...``).

        The connection is made, and remade after any failure with capped
        exponential backoff, in the background until :meth:`disconnect`. Watch
        :attr:`status`, or await :meth:`wait_synced`. Half-open connections are
        detected with websocket pings every ``ping_interval`` seconds.

        ``token``: the relay's access token, or a callable (plain or async)
        returning a fresh one; it is called before each connection and when the
        relay warns that the current token expires (the new one is sent on the
        open connection; nothing pending is lost).

        Waits up to ``first_attempt_timeout`` seconds for the first attempt, so a
        relay that refuses the token makes this raise
        :class:`~crdtsync.errors.AuthError` (fatal: no retry loop). Offline or
        slow networks do not raise: syncing carries on in the background.
        Raises ``RuntimeError`` if already connected.
        """
        from .client import Connector  # noqa: PLC0415 - keeps websockets off offline imports

        self._check_open()
        if self._connector is not None and self._connector.running:
            raise RuntimeError(f"already connected to {self._connector.url}")
        connector = Connector(
            self,
            url,
            token=token,
            max_frame=max_frame,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
        )
        self._connector = connector
        for doc_id in self._docs:
            connector.add_document(doc_id)
        self._unobserve_sync = self.observe(connector.on_replica_event)
        presence = self._presence
        connector.on_awareness(self._awareness_received)
        self._unobserve_awareness = self.observe(presence.on_event)
        presence.attach(connector)
        connector.start()
        try:
            await connector.wait_first_attempt(first_attempt_timeout)
        except SyncError:
            await self.disconnect()
            raise

    async def disconnect(self) -> None:
        """Close the connection to the relay and stop reconnecting. Unacknowledged
        changes stay in the outbox for the next :meth:`connect`. Harmless if not
        connected."""
        connector, self._connector = self._connector, None
        if connector is None:
            return
        self._unobserve_sync()
        self._unobserve_sync = _nothing
        self._unobserve_awareness()
        self._unobserve_awareness = _nothing
        await self._presence.detach()
        await connector.stop()

    async def wait_synced(self, doc_id: str, timeout: float | None = None) -> None:
        """Wait until ``doc_id`` has nothing pending and is caught up with the relay.

        Opens the document if it is not open. Raises ``TimeoutError`` after
        ``timeout`` seconds, ``RuntimeError`` if not connected, or the
        :class:`~crdtsync.errors.SyncError` that stopped syncing for good.
        """
        key = check_doc_id(doc_id)
        self.open(key)
        if self._connector is None:
            raise RuntimeError("not connected: call connect() first")
        await self._connector.wait_synced(key, timeout)

    def awareness(self, doc_id: str) -> pycrdt.Awareness:
        """The presence of ``doc_id``'s users (cursors, names): a ``pycrdt.Awareness``.

        Set this replica's state there (``set_local_state({...})`` or
        ``set_local_state_field(key, value)``; ``None`` withdraws it) and read or
        ``observe`` everyone's in ``states`` (keyed by client id; this replica's
        is ``client_id(doc_id)``). While connected, the state is exchanged through
        the relay with other replicas and with Yjs clients on its ``/yjs`` path;
        it is never stored. A client that disconnects disappears from ``states``
        (the relay removes it; anything silent for 30 s times out), and remote
        states are dropped while this replica is offline. Opens the document if
        it is not open.
        """
        key = check_doc_id(doc_id)
        return self._presence.get(key, self.open(key))

    def _awareness_received(self, doc_id: DocId, payload: bytes) -> None:
        if not self._closed:
            self._presence.received(doc_id, payload, self.open(doc_id))

    @property
    def status(self) -> SyncStatus:
        """The sync status: OFFLINE, CONNECTING, SYNCING or SYNCED."""
        if self._connector is None:
            return SyncStatus.OFFLINE
        return self._connector.status

    @property
    def connector(self) -> Connector | None:
        """The connection to the relay (None when not connected)."""
        return self._connector

    # -- compaction ------------------------------------------------------------------

    def _compact_threshold(self, snapshot_bytes: int) -> int:
        """Log bytes above which the document is compacted: the log outgrew the snapshot."""
        return max(self.compact_min_bytes, snapshot_bytes)

    def compact(self, doc_id: str) -> None:
        """Fold the document's log into a new snapshot now (it also happens automatically).

        Raises :class:`~crdtsync.errors.StoreError` if the store cannot be written;
        nothing is lost then.
        """
        self._compact(self._state(doc_id))

    def _auto_compact(self, state: _OpenDoc) -> None:
        """Compact if the log outgrew the snapshot. A failure here is not the caller's:
        the change that triggered it is stored, so it is logged and retried later."""
        if state.log_bytes <= state.compact_at:
            return
        try:
            self._compact(state)
        except StoreError as exc:
            state.compact_at = state.log_bytes * 2  # retry later, not at every edit
            logger.warning("automatic compaction of %r failed (will retry): %s", state.doc_id, exc)

    def _compact(self, state: _OpenDoc) -> None:
        """Rebuild the document from the store, encode it, verify, then drop folded entries.

        Works from the store, not the live document: pycrdt forbids reading a
        document inside its own observer, and the store is what must be kept.
        Unacknowledged local entries are kept (the outbox survives compaction);
        so are received updates still waiting for dependencies.
        """
        stored = self._store.load_document(state.doc_id)
        if stored is None:  # pragma: no cover - the document was created on open
            raise StoreCorruptError(f"document {state.doc_id!r} vanished from the store")
        doc, held, _ = _rebuild(stored)  # rejected held updates are simply not carried
        snapshot = doc.get_update()
        # Verify before deleting anything: the snapshot alone must rebuild the same
        # items and deletions (state vector and delete set).
        check: pycrdt.Doc[Any] = pycrdt.Doc()
        check.apply_update(snapshot)
        if not same_state(check, doc):
            raise StoreCorruptError(
                f"compaction of {state.doc_id!r} did not reproduce the document; nothing changed"
            )
        drop: list[int] = []
        carry: list[NewEntry] = []
        still_held = {held.update for held in held}
        for entry in stored.entries:
            if entry.kind is EntryKind.LOCAL:
                if entry.seq is None or entry.seq <= stored.info.acked_seq:
                    drop.append(entry.id)
                # else: still in the outbox; it stays in the log (the snapshot holds it too)
            else:
                drop.append(entry.id)
                if entry.kind is EntryKind.PENDING and entry.data in still_held:
                    # Still waiting for dependencies: the snapshot cannot hold it.
                    carry.append(NewEntry(EntryKind.PENDING, entry.data))
                    still_held.discard(entry.data)
        upto = stored.entries[-1].id if stored.entries else stored.snapshot_upto
        self._store.replace_snapshot(state.doc_id, snapshot, upto, drop, carry)
        logger.debug(
            "compacted %r: %d entries folded into a %d-byte snapshot, %d carried",
            state.doc_id,
            len(drop),
            len(snapshot),
            len(carry),
        )
        state.log_bytes = sum(len(entry.data) for entry in carry)
        state.compact_at = self._compact_threshold(len(snapshot))

    # -- events ------------------------------------------------------------------------

    def observe(self, callback: Callable[[ReplicaEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every replica event; return a function that stops it.

        Events so far: :class:`~crdtsync.events.PendingChanged`. Events caused by
        an edit arrive during pycrdt's commit of it: do not read or change the
        document from the callback (see :mod:`crdtsync.events`).
        """
        self._observers.append(callback)

        def unobserve() -> None:
            if callback in self._observers:
                self._observers.remove(callback)

        return unobserve

    def _emit(self, event: ReplicaEvent) -> None:
        for callback in list(self._observers):
            try:
                callback(event)
            except Exception:  # an app's observer must not break persistence
                logger.exception("replica observer %r failed on %r", callback, event)


def _rebuild(stored: StoredDocument) -> tuple[pycrdt.Doc[Any], list[Held], list[Held]]:
    """A new Doc holding the stored snapshot and log, writing under the stored client id.

    Entries are applied in log order; PENDING entries are held until their
    dependencies are present, exactly as :meth:`Replica.apply_remote` does live.
    Returns the document, the updates still held, and held updates pycrdt rejected.
    """
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=stored.info.client_id)
    held: list[Held] = []
    try:
        doc.apply_update(stored.snapshot)
        group: list[bytes] = []
        for entry in stored.entries:
            if entry.kind is EntryKind.PENDING:
                held.append(Held(entry.data, summarize_update(entry.data)))
            else:
                group.append(entry.data)
            if len(group) >= _LOAD_GROUP:
                _apply_group(doc, group)
        _apply_group(doc, group)
    except (ValueError, RuntimeError) as exc:
        raise StoreCorruptError(
            f"document {stored.info.doc_id!r} cannot be rebuilt from the store: {exc}"
        ) from exc
    rejected = release_ready(doc, held, doc.apply_update)
    return doc, held, rejected


def _apply_group(doc: pycrdt.Doc[Any], group: list[bytes]) -> None:
    """Apply updates in one transaction (cheaper than one each), then empty ``group``."""
    if group:
        with doc.transaction():
            for update in group:
                doc.apply_update(update)
        group.clear()


def _nothing() -> None:
    """A no-op unsubscribe."""
