"""Events a :class:`crdtsync.Replica` reports to its observers.

Events are frozen dataclasses; an observer is a plain callable registered with
:meth:`crdtsync.Replica.observe` (the replica's :class:`EventBus`), called
synchronously after the change it reports is stored. An observer that raises is
logged and does not affect the replica or the other observers.

Like pycrdt's own observers, an event caused by an edit is delivered while
pycrdt is still committing that edit's transaction: the observer must not read
or change the document then (pycrdt raises "Already borrowed"). Update a
counter or a label, or schedule the work (``loop.call_soon``) instead.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from .ids import DocId

__all__ = [
    "AwarenessReceived",
    "ConflictDetected",
    "DocumentFetched",
    "DocumentLive",
    "DocumentOpened",
    "DocumentOverLimit",
    "DocumentRefused",
    "DocumentRestricted",
    "DocumentSynced",
    "EventBus",
    "LocalUpdate",
    "PendingChanged",
    "RecordsChanged",
    "RelayErrorInfo",
    "RelayErrorReceived",
    "ReplicaEvent",
    "SessionEvent",
    "StatusChanged",
    "SyncState",
    "SyncStateChanged",
    "SyncStatus",
]

logger = logging.getLogger("crdtsync.events")


@dataclass(frozen=True, slots=True)
class PendingChanged:
    """A document's count of unacknowledged local updates changed.

    ``pending > 0``: "saved on this device, will upload"; ``pending == 0``:
    every local change was acknowledged by a relay ("uploaded").
    """

    doc_id: DocId
    pending: int


@dataclass(frozen=True, slots=True)
class LocalUpdate:
    """A local change to ``doc_id`` was stored and entered the outbox as ``seq``.

    ``update`` is the change's encoded Yjs update. The sync client sends it from
    this event (DESIGN.md guarantee 4: it is stored before anyone sees it).
    """

    doc_id: DocId
    seq: int
    update: bytes


@dataclass(frozen=True, slots=True)
class DocumentOpened:
    """``doc_id`` was opened (loaded from the store) for the first time since the
    replica opened; a connected replica starts syncing it."""

    doc_id: DocId


@dataclass(frozen=True, slots=True)
class RecordsChanged:
    """Records of ``collection`` were added, edited, deleted or restored, by this
    replica (``local``) or by others (received through sync).

    ``upserted_ids``: the records now live; ``deleted_ids``: the records now deleted
    (including deleted records edited inside their tombstone). Reported once the
    change is stored, after the transaction (the collection can be read from the
    callback); sorted ids.
    """

    collection: str
    upserted_ids: tuple[str, ...]
    deleted_ids: tuple[str, ...]
    local: bool


@dataclass(frozen=True, slots=True)
class ConflictDetected:
    """A received change made ``field`` of record ``record_id`` in ``collection`` hold
    concurrent values (see ``Records.conflicts()``), or added one to a conflict."""

    collection: str
    record_id: str
    field: str


class SyncStatus(enum.Enum):
    """Where a replica stands with its relay, from the app's point of view."""

    OFFLINE = "offline"
    """Not connected (never connected, disconnected, or waiting to retry)."""
    CONNECTING = "connecting"
    """Opening the connection or waiting for the relay's WELCOME."""
    SYNCING = "syncing"
    """Connected; some document is not caught up or has unacknowledged changes."""
    SYNCED = "synced"
    """Connected; every document is caught up and nothing is pending."""


@dataclass(frozen=True, slots=True)
class StatusChanged:
    """The session's overall :class:`SyncStatus` changed. ``state``: the replica's
    whole :class:`SyncState` at that moment (None when the session reports it
    before the replica adds it)."""

    status: SyncStatus
    state: SyncState | None = None


@dataclass(frozen=True, slots=True)
class DocumentSynced:
    """``doc_id`` is caught up with the relay and has nothing pending (``synced``
    True), or stopped being so (False)."""

    doc_id: DocId
    synced: bool


@dataclass(frozen=True, slots=True)
class DocumentLive:
    """The relay answered ``doc_id``'s SUBSCRIBE on the current connection: from now
    on changes flow both ways as they happen (presence is announced again)."""

    doc_id: DocId


@dataclass(frozen=True, slots=True)
class DocumentRestricted:
    """The relay limits this replica's access to ``doc_id`` (on this connection):
    ``code`` is ``permission_denied`` (the token grants nothing: the document does
    not sync) or ``read_only`` (it syncs down, but local changes stay stored and
    pending, never acknowledged, until a token allows writing)."""

    doc_id: DocId
    code: str
    message: str

    @property
    def read_only(self) -> bool:
        """True if the document is readable but not writable."""
        return self.code == "read_only"


@dataclass(frozen=True, slots=True)
class DocumentOverLimit:
    """``doc_id`` does not sync on this connection: the relay syncs at most ``limit``
    documents per connection (its ``--max-docs``) and this replica has more open.
    It stays readable and writable here, its changes stay stored and pending, and
    it does not hold the overall status at SYNCING; it syncs again on a
    connection with room for it (another document closed on this one, or a
    relay with a higher limit). ``message`` says so for people."""

    doc_id: DocId
    limit: int
    message: str


class RelayErrorInfo(Protocol):
    """An ERROR frame from the relay, as events carry it (the sync protocol's
    ``ErrorFrame`` is one)."""

    @property
    def code(self) -> str:
        """The error code (``invalid_update``, ``read_only``, ...)."""
        ...

    @property
    def message(self) -> str:
        """What the relay says, for people."""
        ...

    @property
    def doc_id(self) -> DocId | None:
        """The document it is about, if any."""
        ...

    @property
    def seq(self) -> int | None:
        """The refused update's sequence number, if any."""
        ...

    @property
    def fatal(self) -> bool:
        """True if the relay closes the connection."""
        ...


@dataclass(frozen=True, slots=True)
class RelayErrorReceived:
    """The relay sent ERROR. Fatal errors end the connection; for the others the
    session carries on (a rejected update stays in the outbox, never lost)."""

    error: RelayErrorInfo


@dataclass(frozen=True, slots=True)
class AwarenessReceived:
    """Presence information for ``doc_id`` from another client."""

    doc_id: DocId
    payload: bytes


# -- offline apps: what a UI shows (issue 15) -----------------------------------------


@dataclass(frozen=True, slots=True)
class SyncState:
    """Everything a UI needs to say "offline / saving / uploaded / failed, retry",
    totalled across documents and attachments (:attr:`crdtsync.Replica.sync_state`).

    ``status``: the connection (:class:`SyncStatus`). ``pending_documents`` /
    ``pending_updates``: documents with unacknowledged local changes, and how many
    changes. ``pending_attachments``: attachments stored here and not yet on the
    relay. ``last_synced_at``: when the replica last had everything acknowledged
    while connected, changes and attachments (kept across restarts).
    ``last_error``: what failed last (a :class:`~crdtsync.errors.CrdtsyncError`;
    None once connected again, or once a failed attachment upload goes through).
    ``attempts``: connection attempts since the last success. ``next_attempt_at``:
    when the next one is due (None unless waiting; ``retry_now()`` skips the wait).
    ``refused``: documents whose changes the relay refuses for good, with the
    relay's error code (``read_only``, ``permission_denied``, ...): see ``reset()``.
    """

    status: SyncStatus
    pending_documents: int
    pending_updates: int
    pending_attachments: int
    last_synced_at: datetime | None
    last_error: Exception | None
    attempts: int
    next_attempt_at: datetime | None
    refused: tuple[tuple[DocId, str], ...] = ()

    @property
    def pending(self) -> bool:
        """True if anything (a change or an attachment) waits to be uploaded."""
        return bool(self.pending_updates or self.pending_attachments)


@dataclass(frozen=True, slots=True)
class SyncStateChanged:
    """:attr:`crdtsync.Replica.sync_state` changed: ``state`` is the new one."""

    state: SyncState


@dataclass(frozen=True, slots=True)
class DocumentRefused:
    """The relay refuses ``doc_id``'s local changes for good on this connection
    (``code``: ``read_only``, ``permission_denied``, ``document_too_large``, ...).
    They stay stored and pending; :meth:`crdtsync.Replica.reset` drops them."""

    doc_id: DocId
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class DocumentFetched:
    """``doc_id``'s data came from the relay over HTTP (prefetch or refresh) and is
    stored; ``fetched_at`` is when (also :meth:`crdtsync.Replica.fetched_at`)."""

    doc_id: DocId
    fetched_at: datetime


SessionEvent = (
    StatusChanged
    | DocumentSynced
    | DocumentLive
    | DocumentRestricted
    | DocumentOverLimit
    | RelayErrorReceived
    | AwarenessReceived
)


ReplicaEvent = (
    PendingChanged
    | LocalUpdate
    | DocumentOpened
    | RecordsChanged
    | ConflictDetected
    | StatusChanged
    | DocumentSynced
    | DocumentLive
    | DocumentRestricted
    | DocumentOverLimit
    | RelayErrorReceived
    | SyncStateChanged
    | DocumentRefused
    | DocumentFetched
)
"""Every event type a replica reports to :meth:`crdtsync.Replica.observe`."""


class EventBus:
    """The observers of one replica's events (:data:`ReplicaEvent`).

    The replica and its sync connection both report here; an app registers
    with :meth:`crdtsync.Replica.observe`. Callbacks run synchronously, in
    registration order; one that raises is logged and the others still run.
    """

    __slots__ = ("_emitting", "_observers", "_queued")

    def __init__(self) -> None:
        self._observers: list[Callable[[ReplicaEvent], None]] = []
        self._queued: list[ReplicaEvent] = []
        self._emitting = False

    def __bool__(self) -> bool:
        """True if anyone observes (lets hot paths skip building events)."""
        return bool(self._observers)

    def observe(self, callback: Callable[[ReplicaEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event; return a function that stops it."""
        self._observers.append(callback)

        def unobserve() -> None:
            if callback in self._observers:
                self._observers.remove(callback)

        return unobserve

    def emit(self, event: ReplicaEvent) -> None:
        """Deliver ``event`` to every observer. An event emitted by an observer is
        delivered after the current one has reached every observer, so all
        observers see events in one order."""
        if self._emitting:
            self._queued.append(event)
            return
        self._emitting = True
        try:
            self._deliver(event)
            while self._queued:
                self._deliver(self._queued.pop(0))
        finally:
            self._emitting = False
            self._queued.clear()

    def _deliver(self, event: ReplicaEvent) -> None:
        for callback in list(self._observers):
            try:
                callback(event)
            except Exception:  # an app's observer must not break persistence or syncing
                logger.exception("replica observer %r failed on %r", callback, event)
