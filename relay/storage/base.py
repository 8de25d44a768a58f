"""The relay's storage contract: per document, an append-only update log plus a
snapshot, behind a small async interface that every backend implements.

Backends: :class:`~relay.storage.sqlite.SQLiteStorage` (the embedded default),
:class:`~relay.storage.memory.MemoryStorage` (tests, ephemeral relays) and
:class:`~relay.storage.redis.RedisStorage`, shared by several relay processes at
once. All of them pass the one contract test class in
``tests/relay_storage_contract.py``.

Shared storage (:attr:`RelayStorage.shared`): a room a relay loads with
``load(doc_id, follow=True)`` is *followed*: every update another relay process
appends to that document later reaches the :meth:`RelayStorage.on_remote`
callbacks, in log order, each exactly once, from just after what the load
returned, until :meth:`RelayStorage.unfollow`. Single-process backends have no
other writer and never call the callbacks.

Order of calls: :meth:`RelayStorage.open` first, then any of the others, then
:meth:`RelayStorage.close` (or ``async with storage:``). Calls are carried out in
the order they are made: an :meth:`~RelayStorage.append` made before another
gets the smaller ids, and a :meth:`~RelayStorage.load` made after an append
returned sees it.

Errors: a failure of the storage raises a :class:`~crdtsync.errors.StoreError`
subclass (``StoreCorruptError``, ``StoreVersionError``, ``StoreLockedError``,
``StoreWriteError``); a bad argument raises ``ValueError`` or ``TypeError`` before
anything is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, Self, runtime_checkable

from crdtsync.ids import DocId, check_doc_id

__all__ = [
    "Claim",
    "RelayStorage",
    "RemoteCallback",
    "SingleProcess",
    "StorageContext",
    "StoredRoom",
    "StoredUpdate",
    "check_batch",
    "check_claims",
    "check_compact",
    "stale_compaction",
]

RemoteCallback = Callable[[DocId, bytes, int], None]
"""``callback(doc_id, update, entry_id)``: an update another relay process appended
to a followed document, with its log id. ``entry_id`` 0 means ``update`` is the
document's snapshot, delivered because the log entries after what this process
had seen were compacted away (applying it brings the room up to date)."""

Claim = tuple[DocId, int, str]
"""``(doc_id, client id, owner)``: ``owner`` (a token subject) wrote first under
this Yjs client id in this document (the relay's authorship check)."""

MAX_CLIENT_ID = (1 << 53) - 1
MAX_OWNER_BYTES = 256


@dataclass(frozen=True, slots=True)
class StoredUpdate:
    """One log entry.

    ``id`` increases in append order within one storage, across documents and
    restarts, and is never reused (ids need not be contiguous). ``update`` is
    exactly the bytes given to :meth:`RelayStorage.append`.
    """

    id: int
    update: bytes


@dataclass(frozen=True, slots=True)
class StoredRoom:
    """Everything stored for one document: the snapshot, then the log after it.

    The document's state is the snapshot (if any) with every update applied in
    order. An unknown document is ``StoredRoom(doc_id, None, 0, [])``.
    """

    doc_id: DocId
    snapshot: bytes | None
    """The last compacted state (a Yjs v1 update); None if never compacted."""
    snapshot_upto: int
    """Id of the last log entry folded into the snapshot (0 if none)."""
    updates: list[StoredUpdate]
    """Log entries after the snapshot (all with ``id > snapshot_upto``), in append order."""
    claims: dict[int, str] = field(default_factory=dict)
    """Authorship: client id -> the owner who first wrote under it (kept across
    compaction)."""

    @property
    def log_bytes(self) -> int:
        """Total size of the log entries' updates, in bytes (the snapshot not included)."""
        return sum(len(entry.update) for entry in self.updates)


class StorageContext:
    """``async with storage:`` for every backend: :meth:`RelayStorage.open`, then
    :meth:`RelayStorage.close` on the way out."""

    async def open(self) -> None:  # pragma: no cover - the backend's
        raise NotImplementedError

    async def close(self) -> None:  # pragma: no cover - the backend's
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        """:meth:`open`, then return the storage."""
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """:meth:`close`."""
        await self.close()


class SingleProcess:
    """What the single-process backends (memory, SQLite) share: no other process
    appends to them, so nothing is ever delivered to :meth:`on_remote` callbacks,
    and they are ready exactly while open (``_state == "open"``)."""

    shared = False
    """No other relay appends: a room in memory is all that storage holds."""
    _state: str
    _callbacks: list[RemoteCallback]

    @property
    def ready(self) -> bool:
        """True while open."""
        return self._state == "open"

    def on_remote(self, callback: RemoteCallback) -> None:
        """Keep ``callback``; it is never called: no other process can write to this
        storage. (A shared backend calls it for other processes' updates.)"""
        self._callbacks.append(callback)

    def unfollow(self, doc_id: DocId) -> None:
        """Nothing to do: no other process writes here."""


@runtime_checkable
class RelayStorage(Protocol):
    """Async persistence of the relay: per-document append-only update log + snapshot.

    Every method may raise :class:`~crdtsync.errors.StoreError`; a call made before
    :meth:`open` or after :meth:`close` raises it too.
    """

    url: str
    """The storage URL, as :func:`relay.storage.open_storage` accepts it."""

    durable: bool
    """True when data survives ``kill -9`` of the process once :meth:`append`
    (or :meth:`compact`) returned. False for memory storage."""

    shared: bool
    """True when other relay processes append to the same storage (Redis): a room
    in memory is then not known to be all that storage holds, and compaction
    replays storage instead of encoding the room. False for memory and SQLite."""

    async def open(self) -> None:
        """Create the storage or validate the existing one, and lock it for this process.

        Must be called first. Calling it again while open does nothing. A failed
        open (locked, corrupt, ...) raises a ``StoreError`` subclass, leaves existing
        data untouched, and may be retried.
        """
        ...

    async def close(self) -> None:
        """Finish the calls already made, then release everything.

        Idempotent. Every later call (``open`` included) raises ``StoreError``.
        """
        ...

    @property
    def ready(self) -> bool:
        """True while the storage is reachable and takes writes (always, between open
        and close, for memory and SQLite; Redis checks in the background). A relay is
        ready (``/readyz``) only then."""
        ...

    async def load(self, doc_id: DocId, *, follow: bool = False) -> StoredRoom:
        """Everything stored for ``doc_id``; an empty room for an unknown document.

        ``follow``: also deliver, from just after what this returns, what other relay
        processes append to ``doc_id`` (shared storage; see the module docstring),
        until :meth:`unfollow`. Loading a followed document again restarts its
        delivery after the new load."""
        ...

    def unfollow(self, doc_id: DocId) -> None:
        """Stop delivering other processes' updates of ``doc_id`` (the room was
        unloaded). Harmless for a document not followed."""
        ...

    async def append(
        self, batch: Sequence[tuple[DocId, bytes]], claims: Sequence[Claim] = ()
    ) -> list[int]:
        """Append every ``(doc_id, update)`` of ``batch`` in ONE commit; return the ids
        assigned, in batch order.

        ``claims`` are stored in the same commit: a claim on a client id that is
        already claimed in that document is ignored (the first owner stays; the
        caller checks ownership first).

        All or nothing: on failure (disk full, I/O error) raises
        :class:`~crdtsync.errors.StoreWriteError` and nothing of the batch is
        stored; the storage stays usable. Durable (per :attr:`durable`) when it
        returns. An empty batch returns ``[]`` and writes nothing. The caller does
        group commit by batching.
        """
        ...

    async def compact(self, doc_id: DocId, snapshot: bytes, upto: int) -> None:
        """Atomically store ``snapshot`` as the snapshot of ``doc_id`` and delete its log
        entries with ``id <= upto``; entries appended after ``upto`` are kept.

        The caller has verified the snapshot (it holds the old snapshot and every
        entry up to ``upto``). ``ValueError`` if ``upto`` was never assigned or is
        below the current ``snapshot_upto`` (a stale compaction would lose the
        entries the newer one deleted). On failure raises
        :class:`~crdtsync.errors.StoreWriteError` and nothing changed.
        """
        ...

    async def documents(self) -> list[DocId]:
        """Every document with a log entry or a snapshot, sorted."""
        ...

    def on_remote(self, callback: RemoteCallback) -> None:
        """Register ``callback(doc_id, update, entry_id)`` for updates appended by
        ANOTHER relay process sharing this storage to a followed document; a shared
        backend (Redis) calls it from the event loop. Single-process backends
        (memory, SQLite) keep the callback and never call it: no other process can
        write to them.
        """
        ...

    async def __aenter__(self) -> Self:
        """:meth:`open`, then return the storage."""
        ...

    async def __aexit__(self, *exc_info: object) -> None:
        """:meth:`close`."""
        ...


def check_batch(batch: Sequence[tuple[DocId, bytes]]) -> list[tuple[DocId, bytes]]:
    """Validate an :meth:`RelayStorage.append` batch before anything is stored.

    Returns it as a list of ``(doc_id, bytes)``: a ``bytearray`` or ``memoryview``
    is copied to ``bytes``, so changing it later cannot change what is stored.
    Raises ``ValueError`` for an unusable document id and ``TypeError`` for an
    update that is not bytes-like.
    """
    checked: list[tuple[DocId, bytes]] = []
    seen: set[str] = set()
    for doc_id, update in batch:
        if doc_id not in seen:
            check_doc_id(doc_id)
            seen.add(doc_id)
        checked.append((doc_id, _as_bytes(update, "an update")))
    return checked


def check_claims(claims: Sequence[Claim]) -> list[Claim]:
    """Validate :meth:`RelayStorage.append` claims before anything is stored:
    ``ValueError``/``TypeError`` for a bad document id, a client id outside
    0..2**53-1 or an empty or over-long (256 bytes) owner."""
    checked: list[Claim] = []
    for doc_id, client, owner in claims:
        check_doc_id(doc_id)
        if isinstance(client, bool) or not isinstance(client, int):
            raise TypeError(f"a client id must be an int, not {type(client).__name__}")
        if not 0 <= client <= MAX_CLIENT_ID:
            raise ValueError(f"client id {client} is out of range")
        if not isinstance(owner, str):
            raise TypeError(f"an owner must be a str, not {type(owner).__name__}")
        if not owner or len(owner.encode("utf-8", "surrogatepass")) > MAX_OWNER_BYTES:
            raise ValueError(f"an owner must be 1 to {MAX_OWNER_BYTES} bytes long")
        checked.append((doc_id, client, owner))
    return checked


def _as_bytes(data: bytes, what: str) -> bytes:
    """``data`` as ``bytes`` (a copy of a ``bytearray`` or ``memoryview``)."""
    if type(data) is bytes:
        return data
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be bytes, not {type(data).__name__}")
    return bytes(data)


def check_compact(doc_id: DocId, snapshot: bytes, upto: int) -> tuple[DocId, bytes, int]:
    """Validate the arguments of :meth:`RelayStorage.compact` that need no stored state.

    Returns them with ``snapshot`` as ``bytes``. The checks against stored state
    (``upto`` assigned, not stale) are the backend's.
    """
    check_doc_id(doc_id)
    snapshot = _as_bytes(snapshot, "a snapshot")
    if isinstance(upto, bool) or not isinstance(upto, int):
        raise TypeError(f"upto must be an int, not {type(upto).__name__}")
    if upto < 0:
        raise ValueError(f"upto must not be negative, not {upto}")
    return doc_id, snapshot, upto


def stale_compaction(doc_id: DocId, upto: int, current_upto: int, last_id: int) -> str | None:
    """Why ``compact(doc_id, ..., upto)`` must be refused, or None if it may go ahead."""
    if upto > last_id:
        return f"log id {upto} was never assigned (the last is {last_id})"
    if upto < current_upto:
        return (
            f"the snapshot of {doc_id!r} already holds the log up to {current_upto}; "
            f"a snapshot up to {upto} is stale"
        )
    return None
