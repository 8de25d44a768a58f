"""One room: a document the relay has loaded, its subscribers and its stored log.

A :class:`Room` is plain state, kept and changed by the :class:`relay.rooms.Hub`:
its :class:`~crdtsync.document.LiveDocument` (the same holding rules as a
replica's), who subscribes, what waits while it loads, and the bookkeeping
that ties writes to storage commits and triggers compaction. No I/O.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Any

import pycrdt

from crdtsync.document import LiveDocument
from crdtsync.ids import DocId
from crdtsync.statevector import DeleteSet, StateVector
from crdtsync.sync.protocol import Awareness, Subscribe, Unsubscribe, Update
from crdtsync.update import UpdateSummary

from .presence import Presence
from .session import RelaySession
from .storage.base import StoredRoom

__all__ = [
    "MAX_HELD",
    "MAX_HELD_BYTES",
    "LiveSnapshot",
    "Remote",
    "Room",
    "RoomState",
    "SharedDiff",
    "Write",
    "replay",
]

logger = logging.getLogger("relay.rooms")

MAX_HELD = 1000
"""Most updates a room holds while they wait for missing dependencies."""
MAX_HELD_BYTES = 16 << 20
"""Most bytes of updates a room holds while they wait for missing dependencies."""


class RoomState(enum.Enum):
    """A room's life cycle: LOADING from storage, then READY."""

    LOADING = "loading"
    READY = "ready"


@dataclass(frozen=True, slots=True)
class LiveSnapshot:
    """A room's document encoded for compaction from memory: ``snapshot`` must
    load into ``expected`` (state vector, delete set), and covers the stored log
    up to entry ``upto``."""

    snapshot: bytes
    expected: tuple[StateVector, DeleteSet]
    upto: int


@dataclass(slots=True, eq=False)
class Write:
    """One update waiting to be appended to storage, and the ACK it releases."""

    doc_id: DocId
    update: bytes
    sender: RelaySession | None = None
    seq: int | None = None
    room: Room | None = None
    claims: list[tuple[int, str]] = field(default_factory=list)
    """``(client id, subject)`` authorship claims this update makes (stored with it)."""
    received: float = 0.0
    """The hub's clock when the update arrived (ACK latency)."""


@dataclass(frozen=True, slots=True)
class Remote:
    """An update another relay process stored (shared storage), waiting for the
    room to load; ``entry_id`` is its log id (0: not a log entry)."""

    update: bytes
    entry_id: int


RoomRequest = Subscribe | Update | Unsubscribe | Awareness | Remote


@dataclass(slots=True, eq=False)
class SharedDiff:
    """What clients at one state vector lack, encoded once for every large sync that
    starts from it (new replicas all start empty): ``update`` holds at most what
    the room holds (its diff when the first of them started, or its stored
    snapshot); the SYNC that ends each one carries the rest. Kept while
    ``users`` syncs send it; ``pending`` while storage reads the snapshot."""

    update: bytes
    users: int = 0
    pending: bool = False


def live_document(doc_id: DocId) -> LiveDocument:
    return LiveDocument(
        name=doc_id, exclusive=True, max_held=MAX_HELD, max_held_bytes=MAX_HELD_BYTES
    )


@dataclass(slots=True, eq=False)
class Room:
    """One document: its live document, subscribers and stored-log bookkeeping."""

    doc_id: DocId
    state: RoomState = RoomState.LOADING
    live: LiveDocument = field(init=False)
    subscribers: dict[RelaySession, None] = field(default_factory=dict)
    waiting: list[tuple[RelaySession | None, RoomRequest]] = field(default_factory=list)
    snapshot_bytes: int = 0
    log: list[tuple[int, int]] = field(default_factory=list)  # (id, size) since the snapshot
    log_bytes: int = 0
    writes_in_flight: int = 0
    compacting: bool = False
    idle_since: float | None = None
    waiting_bytes: int = 0
    presence: Presence = field(default_factory=Presence)
    claims: dict[int, str] = field(default_factory=dict)  # client id -> owning subject
    load_delayed: bool = False  # waiting sessions were told storage is unreachable
    syncing: int = 0  # large syncs in progress or waiting (the room stays loaded)
    diffs: dict[bytes, SharedDiff] = field(default_factory=dict)  # by client state vector

    def __post_init__(self) -> None:
        self.live = live_document(self.doc_id)

    @property
    def doc(self) -> pycrdt.Doc[Any]:
        """The room's live document."""
        return self.live.doc

    def load(self, stored: StoredRoom) -> None:
        """Rebuild the document from storage: snapshot, then the log in order, holding
        entries whose dependencies are missing (as they were held live)."""
        if stored.snapshot is not None:
            self.snapshot_bytes = len(stored.snapshot)
        entries = ((entry.update, True) for entry in stored.updates)
        refused = self.live.load(stored.snapshot, entries)
        for update in refused:
            logger.warning("%r: a stored update no longer applies (%d bytes)", self, len(update))
        self.claims = dict(stored.claims)
        self.log = [(entry.id, len(entry.update)) for entry in stored.updates]
        self.log_bytes = stored.log_bytes
        self.state = RoomState.READY

    def stored(self, entry_id: int, size: int) -> None:
        """A log entry of ``size`` bytes is in storage (here or by another relay)."""
        self.log.append((entry_id, size))
        self.log_bytes += size

    def compacted(self, snapshot_bytes: int, upto: int) -> None:
        """A snapshot of ``snapshot_bytes`` covering the log up to ``upto`` is stored."""
        self.compacting = False
        self.snapshot_bytes = snapshot_bytes
        self.log = [(entry_id, size) for entry_id, size in self.log if entry_id > upto]
        self.log_bytes = sum(size for _, size in self.log)

    def claims_for(self, subject: str, summary: UpdateSummary) -> list[tuple[int, str]]:
        """The client ids under which the update summarized adds content the room
        lacks, claimed for ``subject``. Raises ``PermissionError`` if one is owned by
        another subject (client-id poisoning: advancing someone else's clock would
        make the room ignore that client's real updates)."""
        claims: list[tuple[int, str]] = []
        have = self.live.state_vector()
        for client, spans in summary.ranges.items():
            if not spans or spans[-1][1] <= have.get(client, 0):
                continue  # nothing new under this client id
            owner = self.claims.get(client)
            if owner is None:
                claims.append((client, subject))
            elif owner != subject:
                raise PermissionError(
                    f"client id {client} belongs to another subject; "
                    "a replica writes only under its own client ids"
                )
        return claims

    def __repr__(self) -> str:
        return f"<Room {self.doc_id!r} {self.state.value} {len(self.subscribers)} subscribers>"


def replay(stored: StoredRoom) -> LiveDocument:
    """A document rebuilt from stored content exactly as a room loads it, with the
    updates still held (compaction verifies its snapshot against this)."""
    room = Room(stored.doc_id)
    room.load(stored)
    return room.live
