"""The relay's rooms: one live document per active doc id, its subscribers,
fan-out, and the bookkeeping that ties ACKs to storage commits. No I/O.

:class:`Hub` is the whole relay minus sockets, disk and clocks. The server
(:mod:`relay.server`) and the property tests drive it the same way:

- ``hub.receive(session, data)`` for every message of a connection;
- when ``on_load(doc_id)`` fires, load the room from storage and call
  :meth:`Hub.loaded` (or :meth:`Hub.load_failed`);
- when ``on_write()`` fires, take :meth:`Hub.take_writes`, append them to storage
  in one commit and call :meth:`Hub.written` (or :meth:`Hub.write_failed`):
  ACKs go out only then (DESIGN.md guarantee 2), fan-out never waits for it;
- call :meth:`Hub.unload_idle` now and then with the time, so memory stays bounded.

A received update is applied to the room's ``pycrdt.Doc`` before anything else:
nothing pycrdt refuses reaches storage or other clients. An update whose
dependencies are missing is stored and held, as the replica does (both keep
their documents in a :class:`crdtsync.document.LiveDocument`), and fanned out
once it applies.

The hub knows one kind of connection, :class:`relay.session.RelaySession`;
others (y-websocket's :class:`relay.yjs.YjsSession`) are passed in by the host
(:meth:`Hub.open_session`'s ``kind``) and differ only in how they encode.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from crdtsync.document import (
    DEFAULT_COMPACT_MIN_BYTES,
    EMPTY_UPDATE,
    compact_threshold,
)
from crdtsync.errors import InvalidUpdateError
from crdtsync.ids import DocId
from crdtsync.statevector import doc_state
from crdtsync.sync.protocol import Awareness, ErrorCode, Hello, Subscribe, Unsubscribe, Update

from .limits import Limits
from .presence import decode_awareness
from .room import LiveSnapshot, Remote, Room, RoomRequest, RoomState, Write
from .session import CLOSE_INTERNAL, Authenticate, RelaySession, Request
from .storage.base import StoredRoom
from .syncs import Syncs

__all__ = ["Hub"]

logger = logging.getLogger("relay.rooms")


class Hub:
    """Every room and connection of one relay process (sans-I/O).

    ``on_load(doc_id)`` asks the host to load a room; ``on_write()`` says that
    writes are waiting; ``on_compact(doc_id)`` says a room's log outgrew its
    snapshot; ``on_unload(doc_id)`` says a room left memory. The host answers
    through :meth:`loaded`, :meth:`written`, :meth:`compacted` and their
    ``*_failed`` counterparts.
    """

    def __init__(
        self,
        relay_id: str,
        limits: Limits = Limits(),  # noqa: B008 - frozen dataclass
        *,
        compact_min_bytes: int = DEFAULT_COMPACT_MIN_BYTES,
        on_load: Callable[[DocId], None] = lambda doc_id: None,
        on_write: Callable[[], None] = lambda: None,
        on_compact: Callable[[DocId], None] = lambda doc_id: None,
        on_unload: Callable[[DocId], None] = lambda doc_id: None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        authenticate: Authenticate | None = None,
        authorship: bool | None = None,
    ) -> None:
        self.relay_id = relay_id
        self.authenticate = authenticate
        """Token check for HELLO (None: an open relay)."""
        self.authorship = authenticate is not None if authorship is None else authorship
        """Refuse updates adding content under a client id another subject owns
        (on by default with tokens: the subject is what owns a client id)."""
        self.wall_clock = wall_clock
        self.clock = clock
        """The host's monotonic time (awareness timestamps)."""
        self.refusals: Counter[str] = Counter()
        """ERROR codes (refusals, limits hit) sent to clients, by code."""
        self.limits = limits
        self.compact_min_bytes = compact_min_bytes
        self.on_load = on_load
        self.on_write = on_write
        self.on_compact = on_compact
        self.on_unload = on_unload
        """Called with the id of every room dropped from memory (unloaded when idle,
        or dropped after a failed load or write)."""
        self.rooms: dict[DocId, Room] = {}
        self.sessions: set[RelaySession] = set()
        self.syncs = Syncs(limits, self._join)
        """Large sync answers, sent in pieces (:mod:`relay.syncs`)."""
        self._writes: list[Write] = []
        self.bytes_received = 0
        """Bytes of every message received (metrics)."""
        self.updates_received = 0
        """Updates received from clients (metrics)."""
        self.updates_stored = 0
        """Writes stored (metrics)."""
        self.deliveries = 0
        """Updates queued for a subscriber by fan-out (metrics)."""
        self.remote_updates = 0
        """Updates other relay processes stored, applied here (metrics)."""
        self._bytes_sent_closed = 0
        self._now = 0.0  # the host's time at the last unload_idle()

    # -- connections ---------------------------------------------------------------------

    def open_session(
        self,
        name: str = "",
        on_output: Callable[[], None] | None = None,
        *,
        kind: Callable[..., RelaySession] = RelaySession,
        **options: Any,
    ) -> RelaySession:
        """A new connection's session: ``kind(relay_id, limits, name=, on_output=,
        authenticate=, clock=, wall_clock=, counters=, **options)``, native by
        default. Its :meth:`~relay.session.RelaySession.opening_requests` are
        handled at once (a y-websocket session joins its document's room)."""
        session = kind(
            self.relay_id,
            self.limits,
            name=name,
            on_output=on_output,
            authenticate=self.authenticate,
            clock=self.clock,
            wall_clock=self.wall_clock,
            counters=self.refusals,
            **options,
        )
        self.sessions.add(session)
        self._dispatch(session, session.opening_requests(), 0)
        return session

    def close_session(self, session: RelaySession) -> None:
        """The connection ended: remove it from every room (its pending ACKs are dropped;
        the client resends what was not acknowledged)."""
        if session in self.sessions:
            self.sessions.discard(session)
            self._bytes_sent_closed += session.bytes_sent
        for doc_id in session.subscriptions:
            room = self.rooms.get(doc_id)
            if room is not None:
                self._leave(room, session)
        session.subscriptions.clear()
        for write in self._writes:
            if write.sender is session:
                write.sender = None

    def receive(self, session: RelaySession, data: bytes) -> None:
        """Handle one message from ``session``'s client."""
        self.bytes_received += len(data)
        self._dispatch(session, session.receive(data), len(data))

    def _dispatch(self, session: RelaySession, requests: Sequence[Request], size: int) -> None:
        for request in requests:
            if isinstance(request, Hello):
                logger.info("%r: hello", session)
                continue
            room = self.rooms.get(request.doc_id)
            if room is None:
                if not isinstance(request, Subscribe):
                    continue  # the session checked the subscription; nothing to do
                room = self._create(request.doc_id)
            if room.state is RoomState.READY:
                self._handle(room, session, request)
            elif isinstance(request, Update | Awareness) and (
                room.waiting_bytes + size > self.limits.max_queued_bytes
            ):
                seq = request.seq if isinstance(request, Update) else None
                session.reject(
                    room.doc_id, seq, ErrorCode.BUSY, "the document is still loading; wait for SYNC"
                )
            else:
                room.waiting.append((session, request))
                room.waiting_bytes += size

    def _handle(self, room: Room, session: RelaySession | None, request: RoomRequest) -> None:
        if isinstance(request, Remote):
            self._remote(room, request.update, request.entry_id)
        elif isinstance(request, Update) and session is not None:
            self._update(room, session, request.update, request.seq)
        elif isinstance(request, Subscribe) and session is not None:
            self.syncs.answer(room, session, request.state_vector)
        elif isinstance(request, Awareness) and session is not None:
            self._awareness(room, session, request.payload)
        elif isinstance(request, Unsubscribe) and session is not None:
            self._leave(room, session)

    def _join(self, room: Room, session: RelaySession) -> None:
        """``session`` has its SYNC (``Syncs.answer``): now it gets the room's updates."""
        if session in room.subscribers or room.doc_id not in session.subscriptions:
            return  # a resync on the same connection
        room.subscribers[session] = None
        room.idle_since = None
        present = room.presence.snapshot()
        if present is not None:
            session.push(session.encode_awareness(room.doc_id, present))
        logger.info(
            "%r subscribed to %r (%d subscribers)", session, room.doc_id, len(room.subscribers)
        )

    def _leave(self, room: Room, session: RelaySession) -> None:
        self.syncs.cancel(session, room.doc_id)
        room.subscribers.pop(session, None)
        room.waiting = [(s, r) for s, r in room.waiting if s is not session]
        gone = room.presence.remove_owner(session)
        if gone is not None:
            self._broadcast_awareness(room, None, gone)
        if not room.subscribers and room.idle_since is None:
            room.idle_since = self._now

    # -- awareness (presence; never stored) ------------------------------------------------

    def _awareness(self, room: Room, session: RelaySession, payload: bytes) -> None:
        if not payload:  # an empty update asks for every current state
            present = room.presence.snapshot()
            if present is not None:
                session.push(session.encode_awareness(room.doc_id, present))
            return
        try:
            entries = decode_awareness(payload)
        except ValueError as exc:
            session.error(ErrorCode.BAD_FRAME, f"malformed awareness update: {exc}", room.doc_id)
            return
        changed = room.presence.apply(entries, session, self.clock())
        if changed is not None:
            self._broadcast_awareness(room, session, changed)

    def _broadcast_awareness(self, room: Room, sender: RelaySession | None, payload: bytes) -> None:
        frames: dict[str, bytes] = {}
        for other in room.subscribers:
            if other is not sender:
                frame = frames.get(other.wire)
                if frame is None:
                    frame = frames[other.wire] = other.encode_awareness(room.doc_id, payload)
                other.push(frame)

    def expire_awareness(self, now: float) -> int:
        """Remove presence not renewed within its timeout (y-protocols: 30 s) and tell
        the rooms; ``now`` is :attr:`clock` time. Returns how many rooms changed."""
        changed = 0
        for room in self.rooms.values():
            if room.presence:
                gone = room.presence.expire(now)
                if gone is not None:
                    self._broadcast_awareness(room, None, gone)
                    changed += 1
        return changed

    def _fanout(self, room: Room, sender: RelaySession | None, update: bytes) -> None:
        """Send ``update`` to every subscriber but ``sender``, encoded once per kind of
        connection (native frame, y-protocols message)."""
        frames: dict[str, bytes] = {}
        for other in room.subscribers:
            if other is sender:
                continue
            frame = frames.get(other.wire)
            if frame is None:
                frame = frames[other.wire] = other.encode_update(room.doc_id, update)
            other.push(frame)
        self.deliveries += len(room.subscribers) - (sender in room.subscribers)

    def _update(
        self, room: Room, session: RelaySession | None, update: bytes, seq: int | None
    ) -> None:
        if seq is None and update == EMPTY_UPDATE:
            return  # y-protocols' "nothing to add" sync step 2: nothing to store or send
        self.updates_received += 1
        size = room.snapshot_bytes + room.log_bytes + len(update)
        if size > self.limits.max_doc_bytes:
            if session is not None:
                session.reject(
                    room.doc_id,
                    seq,
                    ErrorCode.DOCUMENT_TOO_LARGE,
                    f"the document would exceed {self.limits.max_doc_bytes} bytes",
                )
            return
        try:
            summary = room.live.summarize(update)
        except InvalidUpdateError as exc:
            logger.info("%r: invalid update for %r: %s", session, room.doc_id, exc)
            if session is not None:
                session.reject(room.doc_id, seq, ErrorCode.INVALID_UPDATE, str(exc))
            return
        claims: list[tuple[int, str]] = []
        if self.authorship and session is not None and session.access is not None:
            try:
                claims = room.claims_for(session.access.subject, summary)
            except PermissionError as exc:
                logger.warning("%r: update for %r refused: %s", session, room.doc_id, exc)
                session.reject(room.doc_id, seq, ErrorCode.AUTHORSHIP, str(exc))
                return
        try:
            applied = room.live.apply(update, summary)
        except InvalidUpdateError as exc:
            logger.info("%r: invalid update for %r: %s", session, room.doc_id, exc)
            if session is not None:
                session.reject(room.doc_id, seq, ErrorCode.INVALID_UPDATE, str(exc))
            return
        if applied.error is not None and session is not None:
            session.reject(room.doc_id, seq, ErrorCode.INVALID_UPDATE, applied.error)
            seq = None
        if applied.integrated is None:  # held: stored (and acknowledged) as it came
            store = [update]
        else:
            # What the room integrated is what gets stored and sent: the update (or
            # the part pycrdt took), then the part of any released update pycrdt
            # refused on release (the held original is stored already).
            store = [applied.integrated, *(part for _, part in applied.released.refused)]
            self._fanout(room, session, applied.integrated)
            for data in applied.released.integrated:
                self._fanout(room, None, data)  # the sender lacks what its update released too
        for client, subject in claims:
            room.claims[client] = subject
        last = len(store) - 1
        now = self.clock()
        for index, data in enumerate(store):
            self._writes.append(
                Write(
                    room.doc_id,
                    data,
                    session,
                    seq if index == last else None,
                    room,
                    claims if index == 0 else [],
                    now,
                )
            )
        room.writes_in_flight += len(store)
        self.on_write()

    def tick(self) -> None:
        """Time passes (the host calls this about every second): authentication
        deadlines and token expiry of every connection."""
        for session in list(self.sessions):
            session.tick()

    def remote_update(self, doc_id: DocId, update: bytes, entry_id: int = 0) -> None:
        """An update another relay process stored under log id ``entry_id`` (shared
        storage; 0: not a log entry, e.g. a snapshot): apply and fan out to every
        subscriber here; it is not stored again. Its size counts towards the room's
        compaction as if it had been stored here."""
        room = self.rooms.get(doc_id)
        if room is None:
            return  # not loaded here: storage already has it
        if room.state is RoomState.LOADING:
            room.waiting.append((None, Remote(update, entry_id)))
            return
        self._remote(room, update, entry_id)

    def _remote(self, room: Room, update: bytes, entry_id: int) -> None:
        try:
            applied = room.live.apply(update)
        except InvalidUpdateError as exc:
            logger.warning("%r: invalid update from another relay process: %s", room, exc)
            return
        self.remote_updates += 1
        if applied.integrated is not None:
            for data in (applied.integrated, *applied.released.integrated):
                self._fanout(room, None, data)
        if entry_id:
            room.stored(entry_id, len(update))
            self._check_compaction(room)

    # -- loading -------------------------------------------------------------------------

    def _create(self, doc_id: DocId) -> Room:
        room = Room(doc_id)
        self.rooms[doc_id] = room
        logger.debug("loading room %r", doc_id)
        self.on_load(doc_id)
        return room

    def loaded(self, doc_id: DocId, stored: StoredRoom) -> None:
        """Storage returned the room's content: build it and answer who waited."""
        room = self.rooms.get(doc_id)
        if room is None or room.state is not RoomState.LOADING:
            return
        try:
            room.load(stored)
        except (ValueError, RuntimeError) as exc:  # a stored snapshot pycrdt refuses
            self.load_failed(doc_id, exc)
            return
        logger.info(
            "loaded room %r (%d log entries, %d bytes)", doc_id, len(stored.updates), room.log_bytes
        )
        waiting, room.waiting = room.waiting, []
        room.waiting_bytes = 0
        for session, request in waiting:
            if session is None or session in self.sessions:
                self._handle(room, session, request)
        if not room.subscribers and room.idle_since is None:
            room.idle_since = self._now  # everyone left while it loaded: unload it in time
        self._check_compaction(room)

    def load_failed(self, doc_id: DocId, error: BaseException) -> None:
        """Storage could not load the room: tell who waited, forget the room."""
        room = self.rooms.pop(doc_id, None)
        if room is None:
            return
        self.on_unload(doc_id)
        logger.error("could not load room %r: %s", doc_id, error)
        # Fatal for the connections that wait: they reconnect after a backoff and
        # try again (the failure may be transient), resending what is unacknowledged.
        for session in dict.fromkeys(s for s, _ in room.waiting if s is not None):
            session.fail(CLOSE_INTERNAL, ErrorCode.INTERNAL, f"document {doc_id!r} unavailable")

    # -- storage writes ------------------------------------------------------------------

    @property
    def writes_waiting(self) -> int:
        """Writes not yet taken by :meth:`take_writes`."""
        return len(self._writes)

    def take_writes(self) -> list[Write]:
        """The writes to append in the next storage commit (in order)."""
        writes, self._writes = self._writes, []
        return writes

    def written(self, writes: Sequence[Write], ids: Sequence[int]) -> None:
        """``writes`` are durably stored under ``ids``: send the ACKs they release."""
        acks: dict[tuple[RelaySession, DocId], int] = {}
        touched: dict[DocId, Room] = {}
        self.updates_stored += len(writes)
        for write, entry_id in zip(writes, ids, strict=True):
            room = write.room
            if room is not None and self.rooms.get(write.doc_id) is room:
                room.writes_in_flight -= 1
                room.stored(entry_id, len(write.update))
                touched[write.doc_id] = room
            sender = write.sender
            if sender is not None and write.seq is not None:
                key = (sender, write.doc_id)
                if sender.ackable(write.doc_id, write.seq):
                    acks[key] = max(acks.get(key, 0), write.seq)
        for (session, doc_id), seq in acks.items():
            session.stored(doc_id, seq)
        for room in touched.values():
            self._check_compaction(room)

    def write_failed(self, writes: Sequence[Write], error: BaseException) -> None:
        """Storage refused the commit: nothing is acknowledged.

        The rooms involved now hold content their storage lacks, and a client's
        later diff against them would leave it out (the relay "has" it). So each
        such room is dropped, to be reloaded from storage, and everyone in it is
        disconnected with ERROR: on reconnect the senders resend from their
        outboxes (after a backoff), and what is acknowledged is really stored.
        """
        logger.error("storage failed; %d update(s) not acknowledged: %s", len(writes), error)
        for write in writes:
            if write.room is not None and self.rooms.get(write.doc_id) is write.room:
                write.room.writes_in_flight -= 1
            if write.sender is not None:
                write.sender.reject(
                    write.doc_id, write.seq, ErrorCode.STORAGE_FAILED, f"not stored: {error}"
                )
        for room in dict.fromkeys(write.room for write in writes if write.room is not None):
            if self.rooms.get(room.doc_id) is not room:
                continue  # already dropped (and maybe reloaded from storage since)
            del self.rooms[room.doc_id]
            doc_id = room.doc_id
            self.on_unload(doc_id)
            sessions = [*room.subscribers, *(s for s, _ in room.waiting if s is not None)]
            sessions += self.syncs.cancel_room(room)  # its syncs in progress too
            for session in sessions:
                session.fail(CLOSE_INTERNAL, ErrorCode.STORAGE_FAILED, "storage failed; retry")
            logger.warning("room %r dropped after a storage failure; it reloads on demand", doc_id)

    def storage_unavailable(self, writes: Sequence[Write], error: BaseException) -> None:
        """Storage cannot be reached; the host keeps ``writes`` and retries them (no
        ACK until stored). Tells each sender once per document (ERROR
        storage_unavailable, not fatal: nothing to resend)."""
        told: set[tuple[RelaySession, DocId]] = set()
        for write in writes:
            sender = write.sender
            if sender is not None and write.seq is not None and (sender, write.doc_id) not in told:
                told.add((sender, write.doc_id))
                sender.notice(
                    ErrorCode.STORAGE_UNAVAILABLE,
                    f"storage unreachable ({error}); kept, acknowledged once stored",
                    write.doc_id,
                )

    def load_delayed(self, doc_id: DocId, error: BaseException) -> bool:
        """Storage cannot be reached to load ``doc_id``; the host retries. Tells who
        waits for the room (once). False if the room is no longer waiting to load
        (the host stops retrying)."""
        room = self.rooms.get(doc_id)
        if room is None or room.state is not RoomState.LOADING:
            return False
        if not room.load_delayed:
            room.load_delayed = True
            for session in dict.fromkeys(s for s, _ in room.waiting if s is not None):
                session.notice(
                    ErrorCode.STORAGE_UNAVAILABLE,
                    f"storage unreachable ({error}); the document loads once it is back",
                    doc_id,
                )
        return True

    # -- compaction ----------------------------------------------------------------------

    def _check_compaction(self, room: Room) -> None:
        if room.compacting:
            return
        if room.log_bytes > compact_threshold(room.snapshot_bytes, self.compact_min_bytes):
            room.compacting = True
            self.on_compact(room.doc_id)

    def live_snapshot(self, doc_id: DocId, *, shared: bool = False) -> LiveSnapshot | None:
        """The room's document for compaction from memory, or None when storage must
        be replayed instead: with nothing in flight and nothing held, the room's
        document is exactly what storage holds up to its last log entry, unless
        other relay processes write the same storage (``shared``)."""
        room = self.rooms.get(doc_id)
        if (
            shared
            or room is None
            or room.state is not RoomState.READY
            or room.live.held
            or room.writes_in_flight
            or not room.log
        ):
            return None
        return LiveSnapshot(room.doc.get_update(), doc_state(room.doc), room.log[-1][0])

    def compacted(self, doc_id: DocId, snapshot_bytes: int, upto: int) -> None:
        """The host stored a verified snapshot covering log entries up to ``upto``."""
        room = self.rooms.get(doc_id)
        if room is None:
            return
        room.compacted(snapshot_bytes, upto)

    def compaction_failed(self, doc_id: DocId, error: BaseException) -> None:
        """Compaction did not happen (logged); it is tried again after more writes."""
        room = self.rooms.get(doc_id)
        logger.warning("compaction of %r failed: %s", doc_id, error)
        if room is not None:
            room.compacting = False
            room.snapshot_bytes = max(room.snapshot_bytes, room.log_bytes)  # back off

    # -- queries for the host ------------------------------------------------------------

    def document_state(self, doc_id: DocId) -> bytes | None:
        """The loaded room's document as one update (None if the room is not loaded)."""
        room = self.rooms.get(doc_id)
        if room is None or room.state is not RoomState.READY:
            return None
        return room.doc.get_update()

    @property
    def bytes_sent(self) -> int:
        """Bytes of every frame handed to a connection's writer (metrics)."""
        return self._bytes_sent_closed + sum(session.bytes_sent for session in self.sessions)

    @property
    def queued_bytes(self) -> int:
        """Bytes queued for every connection and not yet taken by its writer."""
        return sum(session.queued_bytes for session in self.sessions)

    def unload_idle(self, now: float, idle_for: float) -> list[DocId]:
        """Unload rooms without subscribers for ``idle_for`` seconds and nothing in
        flight. ``now`` is the host's monotonic time; a room counts as idle from the
        call before it lost its last subscriber. Returns the ids unloaded."""
        self._now = now
        done: list[DocId] = []
        for doc_id, room in list(self.rooms.items()):
            if (
                room.state is RoomState.READY
                and not room.subscribers
                and not room.waiting
                and room.writes_in_flight == 0
                and not room.compacting
                and not room.syncing
                and room.idle_since is not None
                and now - room.idle_since >= idle_for
            ):
                del self.rooms[doc_id]
                done.append(doc_id)
                self.on_unload(doc_id)
        if done:
            logger.info("unloaded %d idle room(s)", len(done))
        return done
