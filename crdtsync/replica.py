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
different documents), so they never reach it early
(:class:`~crdtsync.document.LiveDocument`).

A replica works with no network at all: nothing here imports the sync package.
:meth:`Replica.connect` asks the factory registered with :func:`register_sync`
(the ``crdtsync`` package registers :mod:`crdtsync.sync`'s connector, imported
only when an app first connects) for a :class:`SyncLink`, and delegates
``status``, ``wait_synced`` and ``disconnect`` to it.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
import warnings
import weakref
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import Any, Literal

import pycrdt

from .attachments import DEFAULT_MAX_ATTACHMENT_BYTES
from .awareness import AwarenessBook
from .compaction import rebuild_document
from .document import (
    DEFAULT_COMPACT_MIN_BYTES,
)
from .errors import (
    ReplicaClosedError,
    StoreError,
    StoreLockedError,
)
from .events import (
    DocumentOpened,
    EventBus,
    PendingChanged,
    ReplicaEvent,
)
from .ids import DocId, ReplicaId, check_doc_id
from .link import Connectable, SyncLink
from .offline import OfflineReplica
from .outbox import PendingBatch, merge_outbox
from .recording import OpenDocument
from .records import Records
from .store.base import (
    EMPTY_SNAPSHOT,
    DocumentInfo,
    OutboxEntry,
    Store,
    StoredDocument,
)
from .store.memory import MemoryStore
from .store.sqlite import SQLiteStore

__all__ = ["Durability", "Replica"]

logger = logging.getLogger(__name__)

Durability = Literal["normal", "full", "memory"]

# Stores in use by a Replica: two replicas writing one store would share client ids.
_CLAIMED: weakref.WeakSet[Store] = weakref.WeakSet()


def _new_client_id() -> int:
    """A random non-zero 32-bit client id, as Yjs uses."""
    return secrets.randbits(32) or 1


class Replica(OfflineReplica, Connectable):
    """A local replica: opens documents from a durable store and records every change.

    ``Replica(path)`` opens or creates an SQLite store at ``path``.
    ``durability`` is ``"normal"`` (WAL; survives a process crash, the default),
    ``"full"`` (fsync per commit; survives power loss) or ``"memory"`` (no file).
    ``Replica(":memory:")`` is the same as ``durability="memory"``. A custom
    :class:`~crdtsync.store.Store` can be passed as ``store=`` instead of a path.

    ``compact_min_bytes``: a document's log is folded into its snapshot when the
    bytes appended since the last compaction exceed both this and the snapshot's
    size.

    Offline apps (see :mod:`crdtsync.offline`): ``evict_after`` drops, when the
    replica opens and after each prefetch, the local copy of documents unused
    (not opened or fetched) for that long with nothing pending (see
    :meth:`evict`). Attachments are kept beside an SQLite store, in
    ``<path>.attachments/`` (in memory otherwise), up to ``max_attachment_bytes``
    each. ``clock`` (seconds since the epoch) is injectable for tests.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        durability: Durability = "normal",
        *,
        store: Store | None = None,
        compact_min_bytes: int = DEFAULT_COMPACT_MIN_BYTES,
        evict_after: timedelta | None = None,
        max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if evict_after is not None and evict_after <= timedelta(0):
            raise ValueError(f"evict_after must be positive, not {evict_after}")
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
        self._docs: dict[DocId, OpenDocument] = {}
        self._collections: dict[DocId, Records] = {}
        self.events = EventBus()
        """Where this replica and its sync connection report events (see :meth:`observe`)."""
        self.presence = AwarenessBook()
        """The awareness objects of this replica's documents (see :meth:`awareness`)."""
        self._closed = False
        self._link: SyncLink | None = None
        self._offline_init(
            store.path if isinstance(store, SQLiteStore) else None,
            clock=clock,
            evict_after=evict_after,
            max_attachment_bytes=max_attachment_bytes,
        )
        logger.debug("replica %s opened (durability=%s)", self._replica_id, durability)
        self._auto_evict()

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
        if self._link is not None and self._link.running:
            logger.warning(
                "replica %s closed while connected to %s; call disconnect() first",
                self._replica_id,
                self._link.url,
            )
            self._link.cancel()
        try:
            self.flush()  # a last chance for changes a failed write kept in memory
        except StoreError as exc:
            unsaved = ", ".join(d.doc_id for d in self._docs.values() if d.unsaved)
            logger.error(
                "closing replica with changes that could not be stored (%s): %s", unsaved, exc
            )
        self._closed = True
        for state in self._docs.values():
            state.closed = True
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

    def open_documents(self) -> list[DocId]:
        """Ids of the documents opened since this replica opened, in opening order."""
        return list(self._docs)

    def open(self, doc_id: str, *, offline_only: bool = False) -> pycrdt.Doc[Any]:
        """Return the document ``doc_id``, loaded from the store (created if new).

        No network is involved. Opening the same id again returns the same
        ``pycrdt.Doc`` object. Every transaction on it is stored before the
        call that made it returns. ``offline_only=True``: raise
        :class:`~crdtsync.errors.DocumentNotCachedError` instead of creating a
        document the store does not have (never fetched, or evicted).
        """
        self._check_open()
        key = check_doc_id(doc_id)
        state = self._docs.get(key)
        if state is None:
            if offline_only:
                self._check_cached(key)
            state = self._load(key)
            self._docs[key] = state
            try:
                self._store.touch(key, opened_at=self._clock())
            except StoreError as exc:  # a timestamp, never a change: opening goes on
                logger.warning("could not record the opening of %r: %s", key, exc)
            if self.events:
                self.events.emit(DocumentOpened(key))
        return state.doc

    def _load(self, doc_id: DocId) -> OpenDocument:
        stored = self._store.load_document(doc_id)
        if stored is None:
            info = self._store.create_document(doc_id, _new_client_id())
            stored = StoredDocument(info, EMPTY_SNAPSHOT, 0, [])
            logger.debug("created document %r (client id %d)", doc_id, info.client_id)
        elif stored.info.rotate:
            # Writes the store reported durable may be lost (power loss in "normal"
            # durability) while peers have them: never reuse their clocks. The store
            # flags every document after an unclean shutdown, until each is rotated.
            info = self._store.set_client_id(doc_id, _new_client_id())
            logger.warning(
                "document %r: new client id %d after an unclean shutdown (was %d)",
                doc_id,
                info.client_id,
                stored.info.client_id,
            )
            stored = StoredDocument(info, stored.snapshot, stored.snapshot_upto, stored.entries)
        live, rejected = rebuild_document(stored)
        state = OpenDocument(
            live,
            stored.info,
            self._store,
            self.events,
            log_bytes=sum(len(e.data) for e in stored.entries),
            snapshot_bytes=len(stored.snapshot),
            compact_min_bytes=self.compact_min_bytes,
        )
        state.discard(rejected)
        state.auto_compact()
        return state

    def records(self, name: str) -> Records:
        """The records collection ``name``, kept in the document of that id (opened
        if needed; the same object for the same name). See :mod:`crdtsync.records`.
        """
        key = check_doc_id(name)
        collection = self._collections.get(key)
        if collection is None:
            state = self._state(key)
            collection = Records(key, state, self.events, self._replica_id)
            self._collections[key] = collection
        return collection

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

    def _state(self, doc_id: str) -> OpenDocument:
        self.open(doc_id)
        return self._docs[DocId(doc_id)]

    def flush(self) -> None:
        """Store changes that an earlier failed write left in memory (no-op if none).

        Raises :class:`~crdtsync.errors.StoreWriteError` if the store still fails.
        """
        self._check_open()
        for state in list(self._docs.values()):
            state.flush()

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
        return state.apply_remote(update)

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
        """The outbox of ``doc_id`` merged into as few updates as fit ``max_bytes``
        each, for a peer at ``state_vector`` (see :func:`crdtsync.outbox.merge_outbox`:
        no two batches ever wait for each other)."""
        return merge_outbox(self.outbox(doc_id), max_bytes, state_vector)

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
                self.events.emit(PendingChanged(key, info.pending))
            return
        if seq <= state.acked_seq:
            return
        info = self._store.acknowledge(key, seq)
        state.acked_seq = info.acked_seq
        self.events.emit(PendingChanged(key, state.pending))

    # -- what the sync session reads (crdtsync.sync.session.SyncTarget) ---------------

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
        # DESIGN.md guarantee 4: never send what is not stored. Store changes a
        # failed write left in memory first, or raise StoreWriteError.
        state.flush()
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
        return self.presence.get(key, self.open(key))

    # -- compaction ------------------------------------------------------------------

    def compact(self, doc_id: str) -> None:
        """Fold the document's log into a new snapshot now (it also happens automatically).

        Raises :class:`~crdtsync.errors.StoreError` if the store cannot be written;
        nothing is lost then.
        """
        self._state(doc_id).compact()

    # -- events ------------------------------------------------------------------------

    def observe(self, callback: Callable[[ReplicaEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every replica event; return a function that stops it.

        The events (every one is exported from ``crdtsync``):
        :class:`~crdtsync.events.PendingChanged`, :class:`~crdtsync.events.LocalUpdate`
        and :class:`~crdtsync.events.DocumentOpened` from the replica itself;
        :class:`~crdtsync.events.RecordsChanged` and
        :class:`~crdtsync.events.ConflictDetected` from its records collections
        (:meth:`records`; delivered after the transaction, when the collection can
        be read);
        :class:`~crdtsync.events.StatusChanged`,
        :class:`~crdtsync.events.DocumentSynced`,
        :class:`~crdtsync.events.DocumentLive`,
        :class:`~crdtsync.events.DocumentRestricted`,
        :class:`~crdtsync.events.DocumentOverLimit` and
        :class:`~crdtsync.events.RelayErrorReceived` while connected. Events caused
        by an edit arrive during pycrdt's commit of it: do not read or change the
        document from the callback (see :mod:`crdtsync.events`).

        Offline apps: :class:`~crdtsync.events.SyncStateChanged` (carrying a
        :class:`~crdtsync.events.SyncState`), :class:`~crdtsync.events.DocumentRefused`
        and :class:`~crdtsync.events.DocumentFetched`.
        """
        unobserve = self.events.observe(callback)
        if not self._closed:
            self._sync_tracker()  # SyncStateChanged needs the tracker
        return unobserve
