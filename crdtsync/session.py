"""Sans-I/O sync state machines: frames in, frames out.

No sockets, no asyncio, no clock, no threads. The asyncio client
(:mod:`crdtsync.client`), the relay server and the property tests' simulated
network all drive these same objects:

    session.receive(data)              # one websocket message from the peer
    for frame in session.frames_to_send():
        await websocket.send(frame)    # the I/O layer's whole job

:class:`ClientSession` is one replica's side of one connection (it is reused
across reconnects); :class:`RelaySession` is the relay's side of one connection.
The relay's rooms (``relay.rooms``) decide what a received update does; the
relay session only checks that the peer follows the protocol.

A sync round for one document, as the client sees it::

    SUBSCRIBE(doc, our state vector)  ->
                                      <-  SYNC(doc, what we lack, relay's state vector)
    UPDATE(doc, what the relay lacks, seq = our last outbox number)  ->
                                      <-  ACK(doc, seq)            (once durably stored)
    ... then live: every local change is sent as UPDATE with its own seq,
    every change from others arrives as UPDATE without one.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from .errors import AuthError, InvalidUpdateError, ProtocolError
from .events import (
    AwarenessReceived,
    DocumentLive,
    DocumentRestricted,
    DocumentSynced,
    RelayErrorReceived,
    SessionEvent,
    StatusChanged,
    SyncStatus,
)
from .ids import DocId, ReplicaId
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
    encode_update,
)
from .statevector import decode_state_vector

if TYPE_CHECKING:
    import pycrdt

__all__ = [
    "AwarenessReceived",
    "ClientSession",
    "DocumentSynced",
    "RelayErrorReceived",
    "RelaySession",
    "SessionEvent",
    "StatusChanged",
    "SyncStatus",
    "SyncTarget",
]

logger = logging.getLogger("crdtsync.session")

MAX_RECEIVE = 256 << 20
"""Largest frame a client accepts from its relay. Larger than the upload limit: a
SYNC carries a whole document to a new replica, and cannot be split."""

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
    __slots__ = ("blocked", "phase", "restricted", "sent_seq", "synced")

    def __init__(self) -> None:
        self.phase = _Phase.IDLE
        self.sent_seq = 0  # highest outbox seq sent on this connection
        self.blocked = False  # the relay rejected one of our updates: stop uploading
        self.synced = False
        self.restricted: str | None = None  # permission_denied / read_only on this connection


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
            self._subscribe(key, self._docs[key])
        self._update_status()

    def remove_document(self, doc_id: str) -> None:
        """Stop syncing ``doc_id`` (its outbox is kept for later)."""
        key = DocId(doc_id)
        doc = self._docs.pop(key, None)
        if doc is None:
            return
        if not doc.synced and doc.restricted is None:
            self._unsynced -= 1
        if self._welcomed and doc.phase is not _Phase.IDLE:
            self._send(Unsubscribe(key))
        self._update_status()

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
        for doc_id, doc in self._docs.items():
            if doc.restricted is not None:  # the next connection may carry another token
                doc.restricted = None
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
            if count >= self._max_docs:
                logger.error(
                    "relay %s accepts %d documents per connection; %d are not synced",
                    frame.relay_id,
                    self._max_docs,
                    len(self._docs) - count,
                )
                break
            self._subscribe(doc_id, doc)
        self._update_status()

    def _subscribe(self, doc_id: DocId, doc: _ClientDoc) -> None:
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
            doc.phase = _Phase.IDLE
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
            doc.restricted = code
            if not doc.synced:
                self._unsynced -= 1
            self._events.append(DocumentRestricted(doc_id, code, message))
            self._update_status()

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
        if doc.restricted is None:
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


# -- the relay's side ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may do on a relay."""

    max_frame: int = DEFAULT_MAX_FRAME
    """Largest frame accepted (bytes)."""
    max_docs: int = DEFAULT_MAX_DOCS
    """Most documents one connection may subscribe to at once."""
    max_queued_bytes: int = 8 << 20
    """Bytes queued for a connection beyond which it is closed as a slow consumer."""
    max_pre_auth_bytes: int = 64 << 10
    """Largest first frame (HELLO with its token); nothing else is accepted before it."""
    auth_timeout: float = 10.0
    """Seconds a connection has to complete a valid HELLO; traffic does not extend it."""
    max_updates_per_second: float = 5000.0
    """UPDATE and AWARENESS frames per second per connection, with one second of
    burst (0: unlimited). Beyond: ERROR rate_limited and the connection is closed."""
    max_bytes_per_second: int = 32 << 20
    """Bytes per second per connection, with one second of burst (0: unlimited)."""
    max_doc_bytes: int = 256 << 20
    """Largest document (stored bytes: snapshot and log) the relay holds."""
    max_connections_per_address: int = 1000
    """Open connections from one client address (0: unlimited); more get HTTP 429."""

    def __post_init__(self) -> None:
        if self.max_frame < 1024:
            raise ValueError(f"max_frame must be at least 1024 bytes, not {self.max_frame}")
        if self.max_docs < 1:
            raise ValueError(f"max_docs must be at least 1, not {self.max_docs}")
        if self.max_queued_bytes < self.max_frame:
            raise ValueError("max_queued_bytes must be at least max_frame")
        if self.max_pre_auth_bytes < 256:
            raise ValueError("max_pre_auth_bytes must be at least 256")
        if self.auth_timeout <= 0:
            raise ValueError(f"auth_timeout must be positive, not {self.auth_timeout}")
        for name in ("max_updates_per_second", "max_bytes_per_second"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative (0 means unlimited)")
        if self.max_doc_bytes < self.max_frame:
            raise ValueError("max_doc_bytes must be at least max_frame")
        if self.max_connections_per_address < 0:
            raise ValueError("max_connections_per_address must not be negative")


class Access(Protocol):
    """What an authenticated connection may do (``relay.auth.Grant`` is one)."""

    @property
    def subject(self) -> str:
        """Who the token was issued to."""
        ...

    @property
    def expires_at(self) -> float | None:
        """Expiry, in seconds since the epoch (None: never)."""
        ...

    def can_read(self, doc_id: str) -> bool:
        """May subscribe to ``doc_id`` and receive its updates and presence."""
        ...

    def can_write(self, doc_id: str) -> bool:
        """May also send updates to ``doc_id``."""
        ...


Authenticate = Callable[[str | None], Access]
"""Checks a token (None: none sent) and returns what it grants; raises
:class:`~crdtsync.errors.AuthError` with the refusal's code otherwise."""


class _Bucket:
    """A token bucket: ``rate`` per second, holding at most ``capacity``."""

    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self.stamp = now

    def take(self, amount: float, now: float) -> bool:
        """Take ``amount``; False (nothing taken) if the bucket holds less."""
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        if amount > self.level:
            return False
        self.level -= amount
        return True


@dataclass(frozen=True, slots=True)
class Close:
    """The relay session decided to close the connection (websocket close code)."""

    code: int
    reason: str


CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN_LATER = 1013


class RelaySession:
    """The relay's side of one connection.

    :meth:`receive` checks each frame against the protocol and returns the
    requests the relay's rooms must act on (HELLO, SUBSCRIBE, UPDATE,
    UNSUBSCRIBE, AWARENESS frames that passed). Everything the rooms answer goes
    out through :meth:`sync`, :meth:`push`, :meth:`stored`, :meth:`reject` and
    :meth:`error`; the I/O layer sends :meth:`frames_to_send` and closes the
    connection when :attr:`close` is set.

    ``on_output`` (optional) is called whenever frames are queued, so the I/O
    layer can wake the connection's writer.
    """

    is_yjs: ClassVar[bool] = False
    """True for y-websocket connections (:class:`relay.yjs.YjsSession`)."""

    def __init__(
        self,
        relay_id: str,
        limits: Limits = Limits(),
        *,
        name: str = "",
        on_output: Callable[[], None] | None = None,
        authenticate: Authenticate | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        counters: Counter[str] | None = None,
    ) -> None:
        self.relay_id = relay_id
        self.counters: Counter[str] = Counter() if counters is None else counters
        """ERROR codes sent, by code (the relay shares one counter across sessions)."""
        self.limits = limits
        self.name = name
        self.on_output = on_output
        self.authenticate = authenticate
        """Token check; None: the relay is open (no tokens)."""
        self.access: Access | None = None
        """What the token grants (None when the relay does not check tokens)."""
        self.clock = clock
        self.wall_clock = wall_clock
        self.replica_id: ReplicaId | None = None
        self.subscriptions: set[DocId] = set()
        self.close: Close | None = None
        self._out: deque[bytes] = deque()
        self._queued = 0
        self._refused: dict[DocId, int] = {}  # doc -> lowest seq refused (ACKs stop below it)
        now = clock()
        self.opened_at = now
        rate = limits.max_updates_per_second
        self._frames = _Bucket(rate, max(rate, 1.0), now)
        volume = float(limits.max_bytes_per_second)
        self._bytes = _Bucket(volume, max(volume, float(limits.max_frame)), now)
        self._expiry_warned = False

    def __repr__(self) -> str:
        return f"<RelaySession {self.name or id(self)} replica={self.replica_id}>"

    # -- frames in ---------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Hello | Subscribe | Update | Unsubscribe | Awareness]:
        """Check one message from the client; return what the rooms must handle.

        Malformed frames are answered with ERROR here (or a close before HELLO)
        and return nothing; they never raise.
        """
        if self.close is not None:
            return []
        if self.replica_id is None and len(data) > self.limits.max_pre_auth_bytes:
            self.fail(
                CLOSE_TOO_BIG,
                ErrorCode.FRAME_TOO_LARGE,
                f"{len(data)} bytes before HELLO (at most {self.limits.max_pre_auth_bytes})",
            )
            return []
        try:
            frame = decode_frame(data, self.limits.max_frame)
        except ProtocolError as exc:
            if self.replica_id is None:
                self.fail(CLOSE_PROTOCOL_ERROR, ErrorCode.BAD_FRAME, str(exc))
            else:
                self.error(ErrorCode.BAD_FRAME, str(exc))
            return []
        if self.replica_id is None:
            return self._hello(frame)
        if isinstance(frame, Update | Awareness):
            if not self._within_rate(len(data)):
                return []
            if frame.doc_id not in self.subscriptions:
                seq = frame.seq if isinstance(frame, Update) else None
                self.error(
                    ErrorCode.NOT_SUBSCRIBED,
                    f"subscribe to {frame.doc_id!r} before sending to it",
                    frame.doc_id,
                    seq,
                )
                return []
            if (
                isinstance(frame, Update)
                and self.access is not None
                and not self.access.can_write(frame.doc_id)
            ):
                self.reject(
                    frame.doc_id,
                    frame.seq,
                    ErrorCode.READ_ONLY,
                    f"your token grants read-only access to {frame.doc_id!r}",
                )
                return []
            return [frame]
        if isinstance(frame, Auth):
            self._reauthenticate(frame.token)
            return []
        if isinstance(frame, Subscribe):
            if self.access is not None and not self.access.can_read(frame.doc_id):
                self.error(
                    ErrorCode.PERMISSION_DENIED,
                    f"your token grants no access to {frame.doc_id!r}",
                    frame.doc_id,
                )
                return []
            if (
                frame.doc_id not in self.subscriptions
                and len(self.subscriptions) >= self.limits.max_docs
            ):
                self.error(
                    ErrorCode.TOO_MANY_DOCUMENTS,
                    f"at most {self.limits.max_docs} documents per connection",
                    frame.doc_id,
                )
                return []
            self.subscriptions.add(frame.doc_id)
            self._refused.pop(frame.doc_id, None)
            return [frame]
        if isinstance(frame, Unsubscribe):
            if frame.doc_id not in self.subscriptions:
                return []
            self.subscriptions.discard(frame.doc_id)
            self._refused.pop(frame.doc_id, None)
            return [frame]
        if isinstance(frame, Hello):
            self.error(ErrorCode.HELLO_REQUIRED, "HELLO was already received")
            return []
        self.error(ErrorCode.BAD_FRAME, f"a client does not send {type(frame).__name__} frames")
        return []

    def _hello(self, frame: Frame) -> list[Hello | Subscribe | Update | Unsubscribe | Awareness]:
        if not isinstance(frame, Hello):
            self.fail(CLOSE_POLICY, ErrorCode.HELLO_REQUIRED, "the first frame must be HELLO")
            return []
        if frame.version != PROTOCOL_VERSION:
            self.fail(
                CLOSE_POLICY,
                ErrorCode.UNSUPPORTED_VERSION,
                f"this relay speaks protocol version {PROTOCOL_VERSION}, not {frame.version}",
            )
            return []
        if self.authenticate is not None:
            try:
                self.access = self.authenticate(frame.token)
            except AuthError as exc:
                self.fail(CLOSE_POLICY, exc.code, exc.message)
                return []
        self.replica_id = frame.replica_id
        self._send(Welcome(self.relay_id, self.limits.max_frame, self.limits.max_docs))
        return [frame]

    def _reauthenticate(self, token: str) -> None:
        """AUTH: a fresh token for the same subject extends the connection."""
        if self.authenticate is None:
            self.error(ErrorCode.BAD_FRAME, "this relay does not use tokens")
            return
        try:
            access = self.authenticate(token)
        except AuthError as exc:
            self.error(exc.code, f"new token refused: {exc.message}")
            return
        if self.access is not None and access.subject != self.access.subject:
            self.fail(
                CLOSE_POLICY,
                ErrorCode.PERMISSION_DENIED,
                "a new token must be for the same subject as the connection's",
            )
            return
        self.access = access
        self._expiry_warned = False
        logger.info("%r: token renewed (expires at %s)", self, access.expires_at)

    def _within_rate(self, size: int) -> bool:
        now = self.clock()
        limits = self.limits
        if (limits.max_updates_per_second and not self._frames.take(1, now)) or (
            limits.max_bytes_per_second and not self._bytes.take(size, now)
        ):
            self.fail(
                CLOSE_TRY_AGAIN_LATER,
                ErrorCode.RATE_LIMITED,
                f"over {limits.max_updates_per_second:g} updates or "
                f"{limits.max_bytes_per_second} bytes per second; reconnect later",
            )
            return False
        return True

    def tick(self, notice: float = 30.0) -> list[DocId]:
        """Time passes (the host calls this every second or so).

        Closes a connection that has not completed HELLO within the deadline; with
        tokens, warns ``notice`` seconds before the token expires (ERROR
        token_expired: send AUTH with a fresh one) and closes the connection when
        it has expired. Returns the documents this connection can no longer read
        (none here; see subclasses)."""
        if self.close is not None:
            return []
        if self.replica_id is None:
            if self.clock() - self.opened_at >= self.limits.auth_timeout:
                self.fail(
                    CLOSE_POLICY,
                    ErrorCode.AUTH_TIMEOUT,
                    f"no valid HELLO within {self.limits.auth_timeout:g} s",
                )
            return []
        expires = self.access.expires_at if self.access is not None else None
        if expires is None:
            return []
        now = self.wall_clock()
        if now >= expires:
            self.fail(CLOSE_POLICY, ErrorCode.TOKEN_EXPIRED, "the token expired")
        elif not self._expiry_warned and now >= expires - notice:
            self._expiry_warned = True
            self.error(
                ErrorCode.TOKEN_EXPIRED,
                f"the token expires in {expires - now:.0f} s; send AUTH with a fresh one",
            )
        return []

    # -- frames out ----------------------------------------------------------------------------

    def subscribed(self, doc_id: DocId, doc: pycrdt.Doc[Any], state_vector: bytes) -> None:
        """The room ``doc`` took this connection's SUBSCRIBE with ``state_vector``:
        answer with SYNC (see :meth:`sync`)."""
        self.sync(doc_id, doc.get_update(state_vector), doc.get_state())

    def encode_update(self, doc_id: DocId, update: bytes) -> bytes:
        """``update`` as this connection's wire frame (fan-out encodes once per kind
        of connection)."""
        return encode_update(doc_id, update)

    def encode_awareness(self, doc_id: DocId, payload: bytes) -> bytes:
        """An awareness update as this connection's wire frame."""
        return encode_frame(Awareness(doc_id, payload))

    def sync(self, doc_id: DocId, update: bytes, state_vector: bytes) -> None:
        """Answer SUBSCRIBE: what the client lacks, and the relay's state vector.

        Not counted against ``max_queued_bytes``: the client asked for it, and a
        large document cannot be split (a new replica must get it whole)."""
        if self.close is not None:
            return
        self._out.append(encode_frame(Sync(doc_id, update, state_vector)))
        if self.on_output is not None:
            self.on_output()

    def push(self, frame: bytes) -> None:
        """Queue an already encoded frame (fan-out encodes once for every subscriber)."""
        if self.close is not None:
            return
        self._out.append(frame)
        self._queued += len(frame)
        if self._queued > self.limits.max_queued_bytes:
            self._out.clear()
            self._queued = 0
            self.fail(
                CLOSE_POLICY,
                ErrorCode.SLOW_CONSUMER,
                f"more than {self.limits.max_queued_bytes} bytes queued; reconnect to resync",
            )
            return
        if self.on_output is not None:
            self.on_output()

    def ackable(self, doc_id: DocId, seq: int) -> bool:
        """True unless an update of ``doc_id`` at or below ``seq`` was refused on this
        connection (an ACK for ``seq`` would cover it)."""
        refused = self._refused.get(doc_id)
        return refused is None or seq < refused

    def stored(self, doc_id: DocId, seq: int) -> None:
        """Updates of ``doc_id`` from this connection up to ``seq`` are durably stored:
        ACK them, unless an earlier one was refused (an ACK covers every lower seq)."""
        refused = self._refused.get(doc_id)
        if refused is not None and seq >= refused:
            return
        if doc_id in self.subscriptions:
            self._send(Ack(doc_id, seq))

    def reject(self, doc_id: DocId, seq: int | None, code: str, message: str) -> None:
        """Refuse an update: ERROR to the sender, and no ACK from ``seq`` on until the
        client resubscribes (its outbox keeps the update)."""
        if seq is not None:
            self._refused[doc_id] = min(seq, self._refused.get(doc_id, seq))
        self.error(code, message, doc_id, seq)

    def error(
        self, code: str, message: str, doc_id: DocId | None = None, seq: int | None = None
    ) -> None:
        """Queue a non-fatal ERROR."""
        self.counters[code] += 1
        logger.info("%r: error %s%s: %s", self, code, f" on {doc_id!r}" if doc_id else "", message)
        self._send(ErrorFrame(code, message, doc_id, seq, False))

    def fail(self, close_code: int, code: str, message: str) -> None:
        """Queue a fatal ERROR and ask the I/O layer to close the connection."""
        if self.close is not None:
            return
        self._log_close(code, message)
        self.close = Close(close_code, f"{code}: {message}"[:120])
        # Queued directly: push() sends nothing once the connection is closing.
        self._out.append(encode_frame(ErrorFrame(code, message, None, None, True)))
        if self.on_output is not None:
            self.on_output()

    def _log_close(self, code: str, message: str) -> None:
        self.counters[code] += 1
        logger.info("%r: closing (%s): %s", self, code, message)

    def frames_to_send(self) -> list[bytes]:
        """Frames to send, in order; each call returns the new ones only."""
        out = list(self._out)
        self._out.clear()
        self._queued = 0
        return out

    @property
    def queued_bytes(self) -> int:
        """Bytes queued and not yet taken by :meth:`frames_to_send`."""
        return self._queued

    def _send(self, frame: Frame) -> None:
        self.push(encode_frame(frame))
