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
dependencies are missing is stored and held, as the replica does
(:mod:`crdtsync.holding`), and fanned out once it applies.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pycrdt

from crdtsync.errors import InvalidUpdateError
from crdtsync.holding import Held, check_decodes, release_ready
from crdtsync.ids import DocId
from crdtsync.protocol import Awareness, ErrorCode, Hello, Subscribe, Unsubscribe, Update
from crdtsync.protocol import encode_update as _encode_update
from crdtsync.session import CLOSE_INTERNAL, Access, Authenticate, Limits, RelaySession
from crdtsync.statevector import StateVector, decode_state_vector, encode_state_vector
from crdtsync.update import summarize_update

from .presence import Presence, decode_awareness
from .storage import StoredRoom
from .yjs import YjsSession

__all__ = ["Applied", "Hub", "Room", "Write"]

logger = logging.getLogger("relay.rooms")

DEFAULT_COMPACT_MIN_BYTES = 256 * 1024
EMPTY_UPDATE = b"\x00\x00"
"""An update with no structs and no deletions."""
MAX_HELD = 1000
"""Most updates a room holds while they wait for missing dependencies."""
MAX_HELD_BYTES = 16 << 20
"""Most bytes of updates a room holds while they wait for missing dependencies."""


class RoomState(enum.Enum):
    """A room's life cycle: LOADING from storage, then READY."""

    LOADING = "loading"
    READY = "ready"


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one incoming update did.

    ``store``: bytes to persist (what the document integrated, or the held
    update); ``broadcast``: what the document integrated of the update itself,
    for every subscriber but its sender; ``released``: held updates it let the
    document apply, for every subscriber *including* its sender (who lacks them
    too); ``error``: why (part of) the update was refused, if it was.
    """

    store: list[bytes]
    broadcast: list[bytes]
    error: str | None = None
    released: list[bytes] = field(default_factory=list)


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


_Request = Subscribe | Update | Unsubscribe | Awareness


@dataclass(slots=True, eq=False)
class Room:
    """One document: its live ``pycrdt.Doc``, subscribers and stored-log bookkeeping."""

    doc_id: DocId
    state: RoomState = RoomState.LOADING
    doc: pycrdt.Doc[Any] = field(default_factory=pycrdt.Doc)
    sv: StateVector = field(default_factory=dict)
    subscribers: dict[RelaySession, None] = field(default_factory=dict)
    held: list[Held] = field(default_factory=list)
    waiting: list[tuple[RelaySession | None, _Request]] = field(default_factory=list)
    snapshot_bytes: int = 0
    log: list[tuple[int, int]] = field(default_factory=list)  # (id, size) since the snapshot
    log_bytes: int = 0
    writes_in_flight: int = 0
    compacting: bool = False
    idle_since: float | None = None
    waiting_bytes: int = 0
    held_bytes: int = 0
    presence: Presence = field(default_factory=Presence)
    claims: dict[int, str] = field(default_factory=dict)  # client id -> owning subject

    def load(self, stored: StoredRoom) -> None:
        """Rebuild the document from storage: snapshot, then the log in order, holding
        entries whose dependencies are missing (as they were held live)."""
        if stored.snapshot is not None:
            self.doc.apply_update(stored.snapshot)
            self.snapshot_bytes = len(stored.snapshot)
        self.sv = decode_state_vector(self.doc.get_state())
        for entry in stored.updates:
            try:
                self.apply(entry.update)
            except InvalidUpdateError as exc:
                logger.warning("%r: a stored update no longer applies, skipped: %s", self, exc)
        self.claims = dict(stored.claims)
        self.log = [(entry.id, len(entry.update)) for entry in stored.updates]
        self.log_bytes = stored.log_bytes
        self.state = RoomState.READY

    def __repr__(self) -> str:
        return f"<Room {self.doc_id!r} {self.state.value} {len(self.subscribers)} subscribers>"

    def apply(self, update: bytes) -> Applied:
        """Integrate ``update`` (or hold it until its dependencies arrive).

        Raises :class:`~crdtsync.errors.InvalidUpdateError` if nothing of it can be
        used (it is then neither stored nor sent), or if too much is already held
        (:data:`MAX_HELD` updates or :data:`MAX_HELD_BYTES`). If pycrdt integrates
        part of it and then fails, the part it integrated (the diff from the state
        before) is what gets stored and sent, and ``error`` says why the rest was
        refused. A held update is stored (and acknowledged) when it arrives; if
        pycrdt refuses it once its dependencies are there, only what it
        integrated is sent on (and stored again as such).
        """
        try:
            summary = summarize_update(update)
        except ValueError as exc:
            raise InvalidUpdateError(f"undecodable update: {exc}") from exc
        if summary.missing(self.sv):
            if any(item.update == update for item in self.held):
                return Applied([update], [])
            if len(self.held) >= MAX_HELD or self.held_bytes + len(update) > MAX_HELD_BYTES:
                raise InvalidUpdateError(
                    f"{len(self.held)} updates already wait for missing dependencies "
                    f"({self.held_bytes} bytes); send those dependencies first"
                )
            check_decodes(self.doc_id, update)
            self.held.append(Held(update, summary))
            self.held_bytes += len(update)
            logger.debug("%r: holding an update until its dependencies arrive", self)
            return Applied([update], [])
        before = self.sv
        try:
            self.doc.apply_update(update)
        except (ValueError, RuntimeError) as exc:
            part = self.doc.get_update(encode_state_vector(before))
            self.sv = decode_state_vector(self.doc.get_state())
            logger.warning("%r: pycrdt refused an update part-way: %s", self, exc)
            return Applied([part], [part], f"update refused by pycrdt: {exc}")
        self.sv = summary.reach(before)
        if not self.held:
            return Applied([update], [update])
        return self._release(update)

    def _release(self, update: bytes) -> Applied:
        """Apply held updates whose dependencies are now present."""
        store = [update]
        released: list[bytes] = []

        def apply_held(data: bytes) -> None:
            before = self.doc.get_state()
            self.held_bytes -= len(data)
            try:
                self.doc.apply_update(data)
            except (ValueError, RuntimeError) as exc:
                part = self.doc.get_update(before)
                logger.warning("%r: pycrdt refused a held update part-way: %s", self, exc)
                store.append(part)  # what the room integrated is what gets stored and sent
                released.append(part)
                return
            released.append(data)

        release_ready(self.doc, self.held, apply_held)
        self.sv = decode_state_vector(self.doc.get_state())
        return Applied(store, [update], released=released)


class Hub:
    """Every room and connection of one relay process (sans-I/O).

    ``on_load(doc_id)`` asks the host to load a room; ``on_write()`` says that
    writes are waiting; ``on_compact(doc_id)`` says a room's log outgrew its
    snapshot. The host answers through :meth:`loaded`, :meth:`written`,
    :meth:`compacted` and their ``*_failed`` counterparts.
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
        self.refusals: Counter[str] = Counter()
        """ERROR codes (refusals, limits hit) sent to clients, by code."""
        """The host's monotonic time (awareness timestamps)."""
        self.limits = limits
        self.compact_min_bytes = compact_min_bytes
        self.on_load = on_load
        self.on_write = on_write
        self.on_compact = on_compact
        self.rooms: dict[DocId, Room] = {}
        self.sessions: set[RelaySession] = set()
        self._writes: list[Write] = []
        self.deliveries = 0
        self.bytes_received = 0
        self._now = 0.0  # the host's time at the last unload_idle()

    # -- connections ---------------------------------------------------------------------

    def open_session(
        self, name: str = "", on_output: Callable[[], None] | None = None
    ) -> RelaySession:
        """A new connection's session."""
        session = RelaySession(
            self.relay_id,
            self.limits,
            name=name,
            on_output=on_output,
            authenticate=self.authenticate,
            clock=self.clock,
            wall_clock=self.wall_clock,
            counters=self.refusals,
        )
        self.sessions.add(session)
        return session

    def open_yjs_session(
        self,
        doc_id: DocId,
        name: str = "",
        on_output: Callable[[], None] | None = None,
        access: Access | None = None,
    ) -> YjsSession:
        """A new y-websocket connection to ``doc_id``: it joins the room at once (the
        relay's sync step 1 goes out when the room is loaded). ``access``: what its
        token grants, checked by the host before the upgrade."""
        session = YjsSession(
            self.relay_id,
            doc_id,
            self.limits,
            name=name,
            on_output=on_output,
            access=access,
            clock=self.clock,
            wall_clock=self.wall_clock,
            counters=self.refusals,
        )
        self.sessions.add(session)
        self._dispatch(session, session.join(), 0)
        return session

    def close_session(self, session: RelaySession) -> None:
        """The connection ended: remove it from every room (its pending ACKs are dropped;
        the client resends what was not acknowledged)."""
        self.sessions.discard(session)
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

    def _dispatch(
        self,
        session: RelaySession,
        requests: Sequence[Hello | Subscribe | Update | Unsubscribe | Awareness],
        size: int,
    ) -> None:
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

    def _handle(self, room: Room, session: RelaySession | None, request: _Request) -> None:
        if isinstance(request, Update) and session is None:
            self._remote(room, request.update)
        elif isinstance(request, Update):
            self._update(room, session, request.update, request.seq)
        elif isinstance(request, Subscribe) and session is not None:
            self._subscribe(room, session, request.state_vector)
        elif isinstance(request, Awareness) and session is not None:
            self._awareness(room, session, request.payload)
        elif isinstance(request, Unsubscribe) and session is not None:
            self._leave(room, session)

    def _subscribe(self, room: Room, session: RelaySession, state_vector: bytes) -> None:
        if room.doc_id not in session.subscriptions:
            return  # unsubscribed or closed while the room was loading
        session.subscribed(room.doc_id, room.doc, state_vector)
        if session in room.subscribers:
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
        frames: dict[bool, bytes] = {}
        for other in room.subscribers:
            if other is not sender:
                frame = frames.get(other.is_yjs)
                if frame is None:
                    frame = frames[other.is_yjs] = other.encode_awareness(room.doc_id, payload)
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
        native: bytes | None = None
        yjs: bytes | None = None
        for other in room.subscribers:
            if other is sender:
                continue
            if other.is_yjs:
                if yjs is None:
                    yjs = other.encode_update(room.doc_id, update)
                other.push(yjs)
            else:
                if native is None:
                    native = _encode_update(room.doc_id, update)
                other.push(native)
            self.deliveries += 1

    def _update(
        self, room: Room, session: RelaySession | None, update: bytes, seq: int | None
    ) -> None:
        if seq is None and update == EMPTY_UPDATE:
            return  # y-protocols' "nothing to add" sync step 2: nothing to store or send
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
        claims: list[tuple[int, str]] = []
        if self.authorship and session is not None and session.access is not None:
            try:
                claims = self._claims(room, session.access.subject, update)
            except (ValueError, PermissionError) as exc:
                code = (
                    ErrorCode.AUTHORSHIP
                    if isinstance(exc, PermissionError)
                    else ErrorCode.INVALID_UPDATE
                )
                logger.warning("%r: update for %r refused: %s", session, room.doc_id, exc)
                session.reject(room.doc_id, seq, code, str(exc))
                return
        try:
            applied = room.apply(update)
        except InvalidUpdateError as exc:
            logger.info("%r: invalid update for %r: %s", session, room.doc_id, exc)
            if session is not None:
                session.reject(room.doc_id, seq, ErrorCode.INVALID_UPDATE, str(exc))
            return
        if applied.error is not None and session is not None:
            session.reject(room.doc_id, seq, ErrorCode.INVALID_UPDATE, applied.error)
            seq = None
        for data in applied.broadcast:
            self._fanout(room, session, data)
        for data in applied.released:
            self._fanout(room, None, data)  # the sender lacks what its update released too
        for client, subject in claims:
            room.claims[client] = subject
        if applied.store:
            last = len(applied.store) - 1
            for index, data in enumerate(applied.store):
                self._writes.append(
                    Write(
                        room.doc_id,
                        data,
                        session,
                        seq if index == last else None,
                        room,
                        claims if index == 0 else [],
                    )
                )
            room.writes_in_flight += len(applied.store)
            self.on_write()

    @staticmethod
    def _claims(room: Room, subject: str, update: bytes) -> list[tuple[int, str]]:
        """The client ids under which ``update`` adds content the room lacks, claimed
        for ``subject``. Raises ``PermissionError`` if one is owned by another
        subject (client-id poisoning: advancing someone else's clock would make the
        room ignore that client's real updates), ``ValueError`` if undecodable."""
        summary = summarize_update(update)
        claims: list[tuple[int, str]] = []
        for client, spans in summary.ranges.items():
            if not spans or spans[-1][1] <= room.sv.get(client, 0):
                continue  # nothing new under this client id
            owner = room.claims.get(client)
            if owner is None:
                claims.append((client, subject))
            elif owner != subject:
                raise PermissionError(
                    f"client id {client} belongs to another subject; "
                    "a replica writes only under its own client ids"
                )
        return claims

    def tick(self) -> None:
        """Time passes (the host calls this about every second): authentication
        deadlines and token expiry of every connection."""
        for session in list(self.sessions):
            session.tick()

    def remote_update(self, doc_id: DocId, update: bytes) -> None:
        """An update another relay process stored (shared storage): apply and fan out
        to every subscriber here; it is not stored again."""
        room = self.rooms.get(doc_id)
        if room is None:
            return  # not loaded here: storage already has it
        if room.state is RoomState.LOADING:
            room.waiting.append((None, Update(doc_id, update)))
            return
        self._remote(room, update)

    def _remote(self, room: Room, update: bytes) -> None:
        try:
            applied = room.apply(update)
        except InvalidUpdateError as exc:
            logger.warning("%r: invalid update from another relay process: %s", room, exc)
            return
        for data in (*applied.broadcast, *applied.released):
            self._fanout(room, None, data)

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
        self._check_compaction(room)

    def load_failed(self, doc_id: DocId, error: BaseException) -> None:
        """Storage could not load the room: tell who waited, forget the room."""
        room = self.rooms.pop(doc_id, None)
        if room is None:
            return
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
        for write, entry_id in zip(writes, ids, strict=True):
            room = write.room
            if room is not None and self.rooms.get(write.doc_id) is room:
                room.writes_in_flight -= 1
                room.log.append((entry_id, len(write.update)))
                room.log_bytes += len(write.update)
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
            sessions = [*room.subscribers, *(s for s, _ in room.waiting if s is not None)]
            for session in sessions:
                session.fail(CLOSE_INTERNAL, ErrorCode.STORAGE_FAILED, "storage failed; retry")
            logger.warning("room %r dropped after a storage failure; it reloads on demand", doc_id)

    # -- compaction ----------------------------------------------------------------------

    def _check_compaction(self, room: Room) -> None:
        if room.compacting:
            return
        if room.log_bytes > max(self.compact_min_bytes, room.snapshot_bytes):
            room.compacting = True
            self.on_compact(room.doc_id)

    def compacted(self, doc_id: DocId, snapshot_bytes: int, upto: int) -> None:
        """The host stored a verified snapshot covering log entries up to ``upto``."""
        room = self.rooms.get(doc_id)
        if room is None:
            return
        room.compacting = False
        room.snapshot_bytes = snapshot_bytes
        room.log = [(entry_id, size) for entry_id, size in room.log if entry_id > upto]
        room.log_bytes = sum(size for _, size in room.log)

    def compaction_failed(self, doc_id: DocId, error: BaseException) -> None:
        """Compaction did not happen (logged); it is tried again after more writes."""
        room = self.rooms.get(doc_id)
        logger.warning("compaction of %r failed: %s", doc_id, error)
        if room is not None:
            room.compacting = False
            room.snapshot_bytes = max(room.snapshot_bytes, room.log_bytes)  # back off

    # -- memory ------------------------------------------------------------------------------

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
                and room.idle_since is not None
                and now - room.idle_since >= idle_for
            ):
                del self.rooms[doc_id]
                done.append(doc_id)
        if done:
            logger.info("unloaded %d idle room(s)", len(done))
        return done


def replay(stored: StoredRoom) -> tuple[pycrdt.Doc[Any], list[Held]]:
    """A document rebuilt from stored content exactly as a room loads it, and the
    updates still held (compaction verifies its snapshot against this)."""
    room = Room(stored.doc_id)
    room.load(stored)
    return room.doc, room.held
