"""Large syncs: a SYNC answer sent in pieces as the connection drains, and how
many are sent at once. No I/O.

A SUBSCRIBE is answered with what the client lacks. When that is small it goes
out at once, as one SYNC. When it is large (more than
:attr:`~relay.limits.Limits.sync_piece_bytes`), or when the connection already
has a backlog, the answer becomes a :class:`SyncStream`:

1. it waits for one of :attr:`~relay.limits.Limits.max_concurrent_syncs`
   slots (large ones only), so memory stays bounded however many join;
2. the room's diff against the client's state vector is encoded once, and
   shared by every stream that starts from the same state vector (new
   replicas all start empty); for an empty state vector the host may read
   the room's stored snapshot instead (:attr:`Syncs.request_snapshot`), which
   costs the event loop nothing, where pycrdt's encoding of a large document
   is one call that holds it for ~3 ms per MB;
3. the diff goes out as UPDATE frames (y-protocols: update messages) of about
   ``sync_piece_bytes``, each one the client integrates at once
   (:func:`crdtsync.pieces.split_update`): the I/O layer asks for the next one
   with :meth:`Syncs.feed` whenever the connection has drained, so a slow link
   is never a slow consumer, and a client that loses the connection keeps
   what arrived: its next SUBSCRIBE says so and the relay resumes there;
4. a SYNC ends it, with everything the room gained meanwhile and the whole
   delete set, and the client joins the room's fan-out (from then on it gets
   every update as it happens).

Clients that speak an older version of the protocol apply UPDATE frames the
same way, before the SYNC: the frame set is unchanged.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass

from crdtsync.ids import DocId
from crdtsync.pieces import split_update
from crdtsync.statevector import StateVector, decode_state_vector, encode_state_vector

from .limits import Limits
from .room import Room, SharedDiff
from .session import RelaySession

__all__ = ["SyncStream", "Syncs"]

logger = logging.getLogger("relay.syncs")

EMPTY_STATE_VECTOR = b"\x00"
SPLIT_STEP = 128
"""Structs the splitter reads per step (a few milliseconds at most)."""


@dataclass(slots=True, eq=False)
class SyncStream:
    """One sync answer on its way to one client, in pieces."""

    room: Room
    session: RelaySession
    state_vector: bytes
    """The client's state vector, from its SUBSCRIBE."""
    large: bool
    """Takes one of the relay's concurrent-sync slots."""
    diff: SharedDiff | None = None
    key: bytes | None = None
    """Where ``diff`` is shared in ``room.diffs`` (None: this stream's own)."""
    pieces: Generator[bytes | None, None, StateVector] | None = None
    slot: bool = False
    sent: int = 0
    """Bytes of pieces queued so far."""

    @property
    def doc_id(self) -> DocId:
        return self.room.doc_id

    @property
    def runnable(self) -> bool:
        """It may send now (a large one needs its slot first, and its diff)."""
        return (self.slot or not self.large) and not (self.diff is not None and self.diff.pending)


class Syncs:
    """Every sync stream of one relay (owned by :class:`relay.rooms.Hub`).

    ``join(room, session)`` is called when a stream has sent its last piece and
    the SYNC: the session joins the room's fan-out.
    """

    def __init__(self, limits: Limits, join: Callable[[Room, RelaySession], None]) -> None:
        self.limits = limits
        self._join = join
        self.active = 0
        """Streams holding a slot (at most ``max_concurrent_syncs``, unless an
        answer turned out large after it was encoded)."""
        self.waiting: deque[SyncStream] = deque()
        """Large streams waiting for a slot, oldest first."""
        self._streams: dict[RelaySession, dict[DocId, SyncStream]] = {}
        self.completed = 0
        """Streams that reached their SYNC (for /health)."""
        self.request_snapshot: Callable[[DocId], None] | None = None
        """Set by a host that can read a room's stored snapshot: called for a large
        sync from an empty state vector; the host answers :meth:`snapshot_loaded`."""

    # -- deciding -----------------------------------------------------------------------------

    def answer(self, room: Room, session: RelaySession, state_vector: bytes) -> None:
        """Answer ``session``'s SUBSCRIBE to ``room``: at once when small, else with
        a stream; the session joins the room's fan-out once it has its SYNC."""
        if room.doc_id not in session.subscriptions:
            return  # unsubscribed or closed while the room was loading
        if session.greet(room.doc_id, room.doc):
            self._join(room, session)
            return
        large = self.is_large(room, state_vector)
        if large or session.backlog > self.limits.sync_piece_bytes:
            self.start(room, session, state_vector, large=large)  # with flow control
            return
        self.cancel(session, room.doc_id)  # a new SUBSCRIBE replaces a stream
        update = room.doc.get_update(state_vector)
        if len(update) > self.limits.sync_piece_bytes:  # larger than the room's size said
            self.start(room, session, state_vector, large=True, encoded=update)
            return
        session.sync(room.doc_id, update, room.doc.get_state())
        self._join(room, session)

    def is_large(self, room: Room, state_vector: bytes) -> bool:
        """Whether the answer to a client at ``state_vector`` is likely larger than a
        piece: the room's stored size, in proportion to the clock ticks the client
        lacks (the diff itself is only encoded once the stream has its slot)."""
        stored = room.snapshot_bytes + room.log_bytes
        if stored <= self.limits.sync_piece_bytes:
            return False
        have = decode_state_vector(state_vector)
        ours = room.live.state_vector()
        total = sum(ours.values()) or 1
        lacking = sum(max(0, clock - have.get(client, 0)) for client, clock in ours.items())
        return stored * lacking // total > self.limits.sync_piece_bytes

    # -- streams --------------------------------------------------------------------------

    def start(
        self,
        room: Room,
        session: RelaySession,
        state_vector: bytes,
        *,
        large: bool,
        encoded: bytes | None = None,
    ) -> None:
        """Answer ``session``'s SUBSCRIBE to ``room`` with a stream. ``encoded``: the
        diff, if already encoded (then it goes ahead even when every slot is
        taken: its memory is spent already)."""
        self.cancel(session, room.doc_id)
        stream = SyncStream(room, session, state_vector, large)
        if encoded is not None:
            stream.diff = SharedDiff(encoded, 1)
            stream.large = True
            self._take_slot(stream)
        self._streams.setdefault(session, {})[room.doc_id] = stream
        room.syncing += 1
        if stream.large and not stream.slot:
            if self.active < self.limits.max_concurrent_syncs:
                self._take_slot(stream)
            else:
                self.waiting.append(stream)
                logger.info(
                    "%r: sync of %r waits for a slot (%d in progress, %d waiting)",
                    session,
                    room.doc_id,
                    self.active,
                    len(self.waiting),
                )
        if stream.runnable and session.on_sync is not None:
            session.on_sync()

    def pending(self, session: RelaySession) -> bool:
        """True if ``session`` has a stream that can send now."""
        streams = self._streams.get(session)
        return streams is not None and any(s.runnable for s in streams.values())

    def streaming(self, session: RelaySession) -> bool:
        """True if ``session`` has a stream, sending or waiting."""
        return bool(self._streams.get(session))

    def feed(self, session: RelaySession) -> bool:
        """The connection has drained: do the next step of ``session``'s first
        runnable stream (queue one piece, or a bounded part of the work towards
        it). Returns True while ``session`` has more to send."""
        streams = self._streams.get(session)
        stream = next((s for s in streams.values() if s.runnable), None) if streams else None
        if stream is None:
            return False
        if session.close is not None:
            self.cancel(session, stream.doc_id)
            return False
        if stream.pieces is None:
            self._begin(stream)
        else:
            try:
                piece = next(stream.pieces)
            except StopIteration as done:
                self._finish(stream, done.value)
            except ValueError as exc:  # the room's own encoding: a bug if it happens
                logger.error("%r: cannot split the sync of %r: %s", session, stream.doc_id, exc)
                self._finish(stream)
            else:
                if piece is not None:
                    stream.sent += len(piece)
                    session.queue_reply(session.encode_update(stream.doc_id, piece))
        return self.pending(session)

    def cancel(self, session: RelaySession, doc_id: DocId) -> None:
        """Drop ``session``'s stream of ``doc_id`` (unsubscribed, closed, resubscribed)."""
        streams = self._streams.get(session)
        stream = streams.pop(doc_id, None) if streams else None
        if stream is None:
            return
        if not streams:
            del self._streams[session]
        if stream in self.waiting:
            self.waiting.remove(stream)
        self._release(stream)
        logger.info("%r: sync of %r stopped after %d bytes", session, stream.doc_id, stream.sent)

    def snapshot_loaded(self, room: Room, snapshot: bytes | None) -> None:
        """The host read ``room``'s stored snapshot (None: there is none, or reading
        failed: pycrdt encodes the room instead)."""
        shared = room.diffs.get(EMPTY_STATE_VECTOR)
        if shared is None or not shared.pending:
            return  # every stream waiting for it has gone
        shared.update = snapshot if snapshot else room.doc.get_update(EMPTY_STATE_VECTOR)
        shared.pending = False
        for streams in self._streams.values():
            stream = _stream_of(streams, room)
            if stream is not None and stream.diff is shared and stream.session.on_sync:
                stream.session.on_sync()

    def cancel_room(self, room: Room) -> list[RelaySession]:
        """Drop every stream of ``room`` (it is dropped); returns their sessions."""
        sessions = [
            session
            for session, streams in self._streams.items()
            if _stream_of(streams, room) is not None
        ]
        for session in sessions:
            self.cancel(session, room.doc_id)
        return sessions

    # -- steps ---------------------------------------------------------------------------

    def _begin(self, stream: SyncStream) -> None:
        """First step: encode the diff (or share one), and either answer at once (it
        is small after all) or start cutting it into pieces."""
        room, session = stream.room, stream.session
        piece_bytes = self.limits.sync_piece_bytes
        if stream.diff is None:
            shared = room.diffs.get(stream.state_vector) if stream.large else None
            if shared is not None:
                stream.key = stream.state_vector
            elif self._from_storage(stream):
                shared = room.diffs[EMPTY_STATE_VECTOR] = SharedDiff(b"", pending=True)
                stream.key = EMPTY_STATE_VECTOR
                assert self.request_snapshot is not None
                self.request_snapshot(room.doc_id)
            else:
                update = room.doc.get_update(stream.state_vector)
                if len(update) <= piece_bytes:  # small after all: the SYNC itself
                    self._done(stream)
                    session.sync(room.doc_id, update, room.doc.get_state())
                    self._join(room, session)
                    return
                shared = SharedDiff(update)
                if stream.large:
                    room.diffs[stream.state_vector] = shared
                    stream.key = stream.state_vector
                if not stream.slot:
                    self._take_slot(stream)  # large after all: it counts
            shared.users += 1
            stream.diff = shared
            if shared.pending:
                return  # runnable again once storage has read the snapshot
        have = decode_state_vector(stream.state_vector)
        stream.pieces = split_update(stream.diff.update, have, piece_bytes, step=SPLIT_STEP)
        logger.info(
            "%r: sync of %r in pieces of %d bytes (%d bytes to send)",
            session,
            room.doc_id,
            piece_bytes,
            len(stream.diff.update),
        )

    def _from_storage(self, stream: SyncStream) -> bool:
        """Whether to send the room's stored snapshot rather than encode it: a large
        sync from nothing, a host that reads snapshots, and a stored log small
        enough for the final SYNC to carry."""
        return (
            stream.large
            and self.request_snapshot is not None
            and stream.state_vector == EMPTY_STATE_VECTOR
            and stream.room.log_bytes <= self.limits.sync_piece_bytes
            and stream.room.snapshot_bytes > self.limits.sync_piece_bytes
        )

    def _finish(self, stream: SyncStream, reach: StateVector | None = None) -> None:
        """Every piece is out (the client reaches ``reach``; None: the pieces failed):
        the SYNC with the rest (what the room gained meanwhile, or everything the
        client lacks) and the whole delete set; the client joins the fan-out."""
        room, session = stream.room, stream.session
        reached = stream.state_vector if reach is None else encode_state_vector(reach)
        self._done(stream)
        self.completed += 1
        session.sync(room.doc_id, room.doc.get_update(reached), room.doc.get_state())
        logger.info("%r: sync of %r done (%d bytes of pieces)", session, room.doc_id, stream.sent)
        self._join(room, session)

    def _done(self, stream: SyncStream) -> None:
        streams = self._streams.get(stream.session)
        if streams is not None and streams.get(stream.doc_id) is stream:
            del streams[stream.doc_id]
            if not streams:
                del self._streams[stream.session]
        self._release(stream)

    def _take_slot(self, stream: SyncStream) -> None:
        stream.slot = True
        self.active += 1

    def _release(self, stream: SyncStream) -> None:
        """Give back what ``stream`` held: its slot (to the next waiting stream), its
        share of the diff, its place in the room."""
        if stream.pieces is not None:
            stream.pieces.close()
            stream.pieces = None
        diff, stream.diff = stream.diff, None
        if diff is not None:
            diff.users -= 1
            if not diff.users and stream.key is not None:
                stream.room.diffs.pop(stream.key, None)
        stream.room.syncing -= 1
        if stream.slot:
            stream.slot = False
            self.active -= 1
            self._admit()

    def _admit(self) -> None:
        while self.waiting and self.active < self.limits.max_concurrent_syncs:
            stream = self.waiting.popleft()
            self._take_slot(stream)
            if stream.session.on_sync is not None:
                stream.session.on_sync()


def _stream_of(streams: dict[DocId, SyncStream], room: Room) -> SyncStream | None:
    stream = streams.get(room.doc_id)
    return stream if stream is not None and stream.room is room else None
