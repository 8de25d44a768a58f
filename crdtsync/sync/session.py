"""Sans-I/O sync state machines: frames in, frames out.

No sockets, no asyncio, no clock, no threads. The asyncio client
(:mod:`crdtsync.sync.client`) and the property tests' simulated network drive
these same objects:

    session.receive(data)              # one websocket message from the peer
    for frame in session.frames_to_send():
        await websocket.send(frame)    # the I/O layer's whole job

:class:`ClientSession` is one replica's side of the connection to a relay (it
is reused across reconnects). The relay's side is ``relay.session``.

A sync round for one document, as the client sees it::

    SUBSCRIBE(doc, our state vector)  ->
                 <-  (UPDATE pieces of a large answer,) SYNC(doc, what we lack, relay's sv)
    UPDATE(doc, what the relay lacks, seq = our last outbox number)  ->
                                      <-  ACK(doc, seq)            (once durably stored)
    ... then live: every local change is sent as UPDATE with its own seq,
    every change from others arrives as UPDATE without one.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from typing import Protocol

from ..errors import InvalidUpdateError, ProtocolError
from ..events import (
    AwarenessReceived,
    DocumentLive,
    DocumentOverLimit,
    DocumentRestricted,
    DocumentSynced,
    RelayErrorReceived,
    SessionEvent,
    StatusChanged,
    SyncStatus,
)
from ..ids import DocId, ReplicaId
from ..statevector import decode_state_vector
from .protocol import (
    DEFAULT_MAX_DOCS,
    DEFAULT_MAX_FRAME,
    PROTOCOL_VERSION,
    Ack,
    Auth,
    Awareness,
    ErrorCode,
    ErrorFrame,
    Frame,
    Hello,
    Subscribe,
    Sync,
    Unsubscribe,
    Update,
    Welcome,
    decode_frame,
    encode_frame,
)

__all__ = ["FRAME_OVERHEAD", "MAX_RECEIVE", "ClientSession", "SyncTarget"]

logger = logging.getLogger("crdtsync.sync.session")

MAX_RECEIVE = 256 << 20
"""Largest frame a client accepts from its relay. Larger than the upload limit: an
older relay sends a whole document in one SYNC, and one item may not be cut."""

FRAME_OVERHEAD = 1024
"""Room left in a frame for everything but the update bytes (doc id, keys, seq)."""


class SyncTarget(Protocol):
    """What a :class:`ClientSession` needs from the replica it syncs
    (:class:`crdtsync.Replica` implements it)."""

    def state_vector(self, doc_id: str) -> bytes:
        """The document's encoded state vector."""
        ...

    def diff(self, doc_id: str, state_vector: bytes) -> bytes:
        """An update with everything the document has beyond ``state_vector``
        (and its whole delete set)."""
        ...

    def apply_remote(self, doc_id: str, update: bytes) -> bool:
        """Apply and store an update from the relay (idempotent)."""
        ...

    def last_seq(self, doc_id: str) -> int:
        """The highest outbox sequence number issued for the document (0 if none)."""
        ...

    def pending(self, doc_id: str) -> int:
        """How many local updates of the document are not acknowledged."""
        ...

    def pending_batches(
        self, doc_id: str, max_bytes: int = ..., *, state_vector: bytes | None = ...
    ) -> Sequence[_Batch]:
        """The outbox merged into updates of at most about ``max_bytes``, for a peer
        at ``state_vector``: no batch may wait for another replica's batch that
        waits for it (see :meth:`crdtsync.Replica.pending_batches`)."""
        ...

    def acknowledge(self, doc_id: str, seq: int) -> None:
        """Drop outbox entries up to ``seq`` (the relay stored them)."""
        ...


class _Batch(Protocol):
    @property
    def last_seq(self) -> int: ...
    @property
    def update(self) -> bytes: ...


class _Phase(enum.Enum):
    IDLE = 0  # not subscribed on the current connection
    SUBSCRIBING = 1  # SUBSCRIBE sent, waiting for SYNC
    LIVE = 2  # SYNC applied; local changes are sent as they happen


class _ClientDoc:
    __slots__ = ("blocked", "over_limit", "phase", "restricted", "sent_seq", "synced")

    def __init__(self) -> None:
        self.phase = _Phase.IDLE
        self.sent_seq = 0  # highest outbox seq sent on this connection
        self.blocked = False  # the relay rejected one of our updates: stop uploading
        self.synced = False
        self.restricted: str | None = None  # permission_denied / read_only on this connection
        self.over_limit = False  # beyond the relay's documents per connection

    @property
    def counted(self) -> bool:
        """Whether it counts towards the overall status (it can sync here)."""
        return self.restricted is None and not self.over_limit


class ClientSession:
    """The replica's side of the sync protocol, across any number of connections.

    Life cycle, driven by the I/O layer::

        session.connecting()          # dialing (status CONNECTING)
        session.connected()           # transport open: HELLO is queued
        session.receive(data)         # each message; raises ProtocolError on bad frames
        session.local_update(...)     # the replica stored a local change
        session.connection_lost()     # status OFFLINE; every document resubscribes next time

    After any call, send :meth:`frames_to_send` in order and handle
    :meth:`events`. DESIGN.md guarantee 4: only stored changes are ever sent
    (the session reads them from the replica's outbox and diff).

    ``max_frame`` bounds what the client sends (lowered to the relay's limit from
    WELCOME); ``max_receive`` bounds what it accepts.
    """

    def __init__(
        self,
        target: SyncTarget,
        replica_id: ReplicaId,
        *,
        token: str | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_receive: int = MAX_RECEIVE,
    ) -> None:
        self._target = target
        self.max_receive = max_receive
        self.replica_id = replica_id
        self.token = token
        self._max_frame = max_frame
        self._limit = max_frame  # min(ours, the relay's) once welcomed
        self._max_docs = DEFAULT_MAX_DOCS
        self._docs: dict[DocId, _ClientDoc] = {}
        self._subscribed: set[DocId] = set()  # on this connection (max_docs at most)
        self._out: list[bytes] = []
        self._events: list[SessionEvent] = []
        self._status = SyncStatus.OFFLINE
        self._welcomed = False
        self._unsynced = 0  # documents added and not synced
        self.relay_id: str | None = None

    # -- state ------------------------------------------------------------------------

    @property
    def status(self) -> SyncStatus:
        """The overall status (see :class:`SyncStatus`)."""
        return self._status

    @property
    def documents(self) -> list[DocId]:
        """The documents this session syncs."""
        return list(self._docs)

    def is_synced(self, doc_id: str) -> bool:
        """True if ``doc_id`` is caught up with the relay and nothing of it is pending."""
        doc = self._docs.get(DocId(doc_id))
        return doc is not None and doc.synced

    def restriction(self, doc_id: str) -> str | None:
        """``permission_denied`` or ``read_only`` if the relay restricted ``doc_id`` on
        this connection (see :class:`~crdtsync.events.DocumentRestricted`), else None."""
        doc = self._docs.get(DocId(doc_id))
        return doc.restricted if doc is not None else None

    def over_limit(self, doc_id: str) -> DocumentOverLimit | None:
        """What keeps ``doc_id`` from syncing on this connection if it is beyond the
        relay's documents per connection, else None."""
        key = DocId(doc_id)
        doc = self._docs.get(key)
        if doc is None or not doc.over_limit:
            return None
        return DocumentOverLimit(key, self._max_docs, self._over_limit_message(key))

    def send_auth(self, token: str) -> bool:
        """Use ``token`` from now on; send it (AUTH) if connected. True if sent."""
        self.token = token
        if not self._welcomed:
            return False
        self._send(Auth(token))
        return True

    def is_blocked(self, doc_id: str) -> bool:
        """True if the relay rejected an update of ``doc_id`` on this connection."""
        doc = self._docs.get(DocId(doc_id))
        return doc is not None and doc.blocked

    def frames_to_send(self) -> list[bytes]:
        """Frames to send, in order; each call returns the new ones only."""
        out, self._out = self._out, []
        return out

    def events(self) -> list[SessionEvent]:
        """Events since the last call, in order."""
        events, self._events = self._events, []
        return events

    # -- documents --------------------------------------------------------------------

    def add_document(self, doc_id: str) -> None:
        """Sync ``doc_id`` (now if connected, else from the next connection)."""
        key = DocId(doc_id)
        if key in self._docs:
            return
        self._docs[key] = _ClientDoc()
        self._unsynced += 1
        if self._welcomed:
            if len(self._subscribed) < self._max_docs:
                self._subscribe(key, self._docs[key])
            else:
                self._beyond_limit(key, self._docs[key])
        self._update_status()

    def remove_document(self, doc_id: str) -> None:
        """Stop syncing ``doc_id`` (its outbox is kept for later)."""
        key = DocId(doc_id)
        doc = self._docs.pop(key, None)
        if doc is None:
            return
        if not doc.synced and doc.counted:
            self._unsynced -= 1
        if self._welcomed and doc.phase is not _Phase.IDLE:
            self._send(Unsubscribe(key))
        if key in self._subscribed:
            self._subscribed.discard(key)
            self._admit()
        self._update_status()

    def _admit(self) -> None:
        """A place among the relay's documents per connection is free: the first
        document beyond the limit takes it."""
        for doc_id, doc in self._docs.items():
            if len(self._subscribed) >= self._max_docs:
                return
            if doc.over_limit:
                doc.over_limit = False
                if not doc.synced and doc.counted:
                    self._unsynced += 1
                self._subscribe(doc_id, doc)

    # -- connection life cycle ---------------------------------------------------------

    def connecting(self) -> None:
        """The I/O layer is opening a connection."""
        self._set_status(SyncStatus.CONNECTING)

    def connected(self) -> None:
        """The transport is open: queue HELLO (everything else waits for WELCOME)."""
        self._reset()
        self._set_status(SyncStatus.CONNECTING)
        self._send(Hello(self.replica_id, self.token))

    def connection_lost(self) -> None:
        """The connection ended (for any reason). Unsent frames are discarded; the
        next connection resubscribes and resends whatever is unacknowledged."""
        self._reset()
        self._set_status(SyncStatus.OFFLINE)

    def _reset(self) -> None:
        self._out = []
        self._welcomed = False
        self._limit = self._max_frame
        self._subscribed.clear()
        for doc_id, doc in self._docs.items():
            if not doc.counted:  # the next connection may carry another token or limit
                doc.restricted = None
                doc.over_limit = False
                if not doc.synced:
                    self._unsynced += 1
            doc.phase = _Phase.IDLE
            doc.sent_seq = 0
            doc.blocked = False
            self._set_synced(doc_id, doc, False)

    # -- frames in ----------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Handle one message from the relay.

        Raises :class:`~crdtsync.errors.ProtocolError` if it is malformed or not
        allowed now; the I/O layer then closes the connection and reconnects.
        """
        frame = decode_frame(data, self.max_receive)
        self.receive_frame(frame)

    def receive_frame(self, frame: Frame) -> None:
        """Handle one decoded frame (see :meth:`receive`)."""
        if isinstance(frame, Update):
            self._on_update(frame)
        elif isinstance(frame, Ack):
            self._on_ack(frame)
        elif isinstance(frame, Sync):
            self._on_sync(frame)
        elif isinstance(frame, Awareness):
            if frame.doc_id in self._docs:
                self._events.append(AwarenessReceived(frame.doc_id, frame.payload))
        elif isinstance(frame, ErrorFrame):
            self._on_error(frame)
        elif isinstance(frame, Welcome):
            self._on_welcome(frame)
        else:
            raise ProtocolError(f"a relay does not send {type(frame).__name__} frames")

    def _require_welcome(self, frame: Frame) -> None:
        if not self._welcomed:
            raise ProtocolError(f"{type(frame).__name__} before WELCOME")

    def _on_welcome(self, frame: Welcome) -> None:
        if self._welcomed:
            raise ProtocolError("WELCOME received twice")
        if frame.version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"relay speaks protocol version {frame.version}, we speak {PROTOCOL_VERSION}"
            )
        self._welcomed = True
        self.relay_id = frame.relay_id
        self._limit = min(self._max_frame, frame.max_frame)
        self._max_docs = frame.max_docs
        self._set_status(SyncStatus.SYNCING)
        for count, (doc_id, doc) in enumerate(self._docs.items()):
            if count < self._max_docs:
                self._subscribe(doc_id, doc)
            else:
                self._beyond_limit(doc_id, doc)
        if len(self._docs) > self._max_docs:
            logger.error(
                "relay %s syncs at most %d documents per connection; %d of the %d open here "
                "do not sync (raise its limit: crdtsync-relay --max-docs %d)",
                frame.relay_id,
                self._max_docs,
                len(self._docs) - self._max_docs,
                len(self._docs),
                len(self._docs),
            )
        self._update_status()

    def _subscribe(self, doc_id: DocId, doc: _ClientDoc) -> None:
        self._subscribed.add(doc_id)
        doc.phase = _Phase.SUBSCRIBING
        self._send(Subscribe(doc_id, self._target.state_vector(doc_id)))

    def _on_sync(self, frame: Sync) -> None:
        self._require_welcome(frame)
        doc = self._docs.get(frame.doc_id)
        if doc is None or doc.phase is _Phase.IDLE:
            logger.debug("ignoring SYNC for %r, not subscribed", frame.doc_id)
            return
        self._apply(frame.doc_id, frame.update)
        self._upload(frame.doc_id, doc, frame.state_vector)
        doc.phase = _Phase.LIVE  # from now on, local changes are sent as they are stored
        self._events.append(DocumentLive(frame.doc_id))
        self._check_synced(frame.doc_id, doc)

    def _upload(self, doc_id: DocId, doc: _ClientDoc, relay_sv: bytes) -> None:
        """Send what the relay lacks: the diff against its state vector, which
        covers the whole outbox, or the outbox in merged batches if the diff is
        larger than a frame."""
        if self._target.pending(doc_id) == 0 and not _ahead(
            self._target.state_vector(doc_id), relay_sv
        ):
            return
        diff = self._target.diff(doc_id, relay_sv)  # stores unsaved changes first, or raises
        last = self._target.last_seq(doc_id)
        pending = self._target.pending(doc_id) > 0
        seq = last if pending else None
        if len(diff) + FRAME_OVERHEAD <= self._limit:
            self._send(Update(doc_id, diff, seq))
            doc.sent_seq = last
            return
        if not pending:
            logger.error(
                "%r: the relay lacks %d bytes that are not in the outbox and exceed a frame",
                doc_id,
                len(diff),
            )
            return
        batches = self._target.pending_batches(
            doc_id, self._limit - FRAME_OVERHEAD, state_vector=relay_sv
        )
        for batch in batches:
            if len(batch.update) + FRAME_OVERHEAD > self._limit:
                logger.error(
                    "%r: outbox update %d is %d bytes, over the relay's frame limit of %d; "
                    "it stays pending",
                    doc_id,
                    batch.last_seq,
                    len(batch.update),
                    self._limit,
                )
                doc.blocked = True
                return
            self._send(Update(doc_id, batch.update, batch.last_seq))
            doc.sent_seq = batch.last_seq

    def _on_update(self, frame: Update) -> None:
        self._require_welcome(frame)
        if frame.doc_id not in self._docs:
            logger.debug("ignoring UPDATE for %r, not synced here", frame.doc_id)
            return
        self._apply(frame.doc_id, frame.update)

    def _apply(self, doc_id: DocId, update: bytes) -> None:
        try:
            self._target.apply_remote(doc_id, update)
        except InvalidUpdateError as exc:
            raise ProtocolError(f"relay sent an invalid update for {doc_id!r}: {exc}") from exc

    def _on_ack(self, frame: Ack) -> None:
        self._require_welcome(frame)
        doc = self._docs.get(frame.doc_id)
        if doc is None:
            return
        if frame.seq > doc.sent_seq:
            raise ProtocolError(
                f"ACK {frame.seq} for {frame.doc_id!r}, but only up to {doc.sent_seq} was sent"
            )
        self._target.acknowledge(frame.doc_id, frame.seq)
        self._check_synced(frame.doc_id, doc)

    def _on_error(self, frame: ErrorFrame) -> None:
        self._events.append(RelayErrorReceived(frame))
        doc = self._docs.get(frame.doc_id) if frame.doc_id is not None else None
        log = logger.error if frame.fatal else logger.warning
        log(
            "relay error %s%s: %s",
            frame.code,
            f" on {frame.doc_id!r}" if frame.doc_id else "",
            frame.message,
        )
        if doc is not None and frame.seq is not None:
            # The update stays in the outbox (never lost); resending it on this
            # connection would only be refused again.
            doc.blocked = True
        elif doc is not None and frame.code in (
            ErrorCode.TOO_MANY_DOCUMENTS,
            ErrorCode.NOT_SUBSCRIBED,
            ErrorCode.PERMISSION_DENIED,
        ):
            assert frame.doc_id is not None
            doc.phase = _Phase.IDLE
            self._subscribed.discard(frame.doc_id)
            if frame.code == ErrorCode.TOO_MANY_DOCUMENTS:
                self._beyond_limit(frame.doc_id, doc)
        if (
            doc is not None
            and frame.doc_id is not None
            and frame.code in (ErrorCode.PERMISSION_DENIED, ErrorCode.READ_ONLY)
        ):
            self._restrict(frame.doc_id, doc, frame.code, frame.message)

    def _restrict(self, doc_id: DocId, doc: _ClientDoc, code: str, message: str) -> None:
        """The relay limits our access to ``doc_id``: it no longer counts towards the
        overall status (it cannot get in sync on this connection)."""
        if doc.restricted is None:
            if not doc.synced and doc.counted:
                self._unsynced -= 1
            doc.restricted = code
            self._events.append(DocumentRestricted(doc_id, code, message))
            self._update_status()

    def _beyond_limit(self, doc_id: DocId, doc: _ClientDoc) -> None:
        """``doc_id`` is beyond the relay's documents per connection: it does not
        sync here, and no longer counts towards the overall status."""
        if doc.over_limit:
            return
        if not doc.synced and doc.counted:
            self._unsynced -= 1
        doc.over_limit = True
        doc.phase = _Phase.IDLE
        event = self.over_limit(doc_id)
        assert event is not None
        self._events.append(event)
        self._update_status()

    def _over_limit_message(self, doc_id: DocId) -> str:
        count = len(self._docs)
        return (
            f"{doc_id!r} does not sync: relay {self.relay_id} syncs at most {self._max_docs} "
            f"documents per connection and this replica has {count} open; raise the relay's "
            f"limit (crdtsync-relay --max-docs {max(count, self._max_docs + 1)}) or open fewer "
            "documents (its changes stay stored and pending)"
        )

    # -- local changes ---------------------------------------------------------------------

    def local_update(self, doc_id: str, seq: int, update: bytes) -> None:
        """The replica stored local change ``seq`` of ``doc_id``: send it if the
        document is live. Safe to call from inside a pycrdt observer (it does not
        read the document)."""
        doc = self._docs.get(DocId(doc_id))
        if doc is None:
            return
        if doc.synced:
            self._set_synced(DocId(doc_id), doc, False)
            self._update_status()
        if doc.phase is not _Phase.LIVE or doc.blocked or seq <= doc.sent_seq:
            return  # sent with the next SYNC's upload instead
        if len(update) + FRAME_OVERHEAD > self._limit:
            logger.error(
                "%r: local update %d is %d bytes, over the relay's frame limit of %d; "
                "it stays pending",
                doc_id,
                seq,
                len(update),
                self._limit,
            )
            doc.blocked = True
            return
        self._send(Update(DocId(doc_id), update, seq))
        doc.sent_seq = seq

    def send_awareness(self, doc_id: str, payload: bytes) -> bool:
        """Queue presence for ``doc_id``; False (nothing queued) if it is not live."""
        doc = self._docs.get(DocId(doc_id))
        if doc is None or doc.phase is not _Phase.LIVE:
            return False
        self._send(Awareness(DocId(doc_id), payload))
        return True

    # -- bookkeeping --------------------------------------------------------------------------

    def _send(self, frame: Frame) -> None:
        self._out.append(encode_frame(frame))

    def _check_synced(self, doc_id: DocId, doc: _ClientDoc) -> None:
        synced = doc.phase is _Phase.LIVE and not doc.blocked and self._target.pending(doc_id) == 0
        self._set_synced(doc_id, doc, synced)
        self._update_status()

    def _set_synced(self, doc_id: DocId, doc: _ClientDoc, synced: bool) -> None:
        if doc.synced == synced:
            return
        doc.synced = synced
        if doc.counted:
            self._unsynced += -1 if synced else 1
        self._events.append(DocumentSynced(doc_id, synced))

    def _update_status(self) -> None:
        if not self._welcomed:
            return
        self._set_status(SyncStatus.SYNCED if self._unsynced == 0 else SyncStatus.SYNCING)

    def _set_status(self, status: SyncStatus) -> None:
        if status is not self._status:
            self._status = status
            self._events.append(StatusChanged(status))


def _ahead(ours: bytes, theirs: bytes) -> bool:
    """True if state vector ``ours`` has a clock beyond ``theirs`` for some client."""
    if ours == theirs:
        return False
    have = decode_state_vector(theirs)
    return any(clock > have.get(client, 0) for client, clock in decode_state_vector(ours).items())
