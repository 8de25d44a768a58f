"""The relay's side of one connection: protocol checks, limits, access, close codes.

Sans-I/O like :mod:`crdtsync.sync.session`: frames in, requests and frames out.
:class:`RelaySession` checks that a native client follows the protocol, within
its :class:`Limits` and what its token grants (:class:`Access`), and returns the
requests the rooms (:mod:`relay.rooms`) act on; the rooms answer through its
``sync``/``push``/``stored``/``reject``/``error`` methods and the I/O layer
sends :meth:`RelaySession.frames_to_send`. :class:`relay.yjs.YjsSession` is the
same for a y-websocket connection. No sockets, no asyncio; the clocks are
injected.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Protocol

import pycrdt

from crdtsync.errors import AuthError, ProtocolError
from crdtsync.ids import DocId, ReplicaId
from crdtsync.sync.protocol import (
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

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL",
    "CLOSE_INVALID_DATA",
    "CLOSE_POLICY",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_SERVICE_RESTART",
    "CLOSE_TOO_BIG",
    "CLOSE_TRY_AGAIN_LATER",
    "CLOSE_UNSUPPORTED_DATA",
    "Access",
    "Authenticate",
    "Close",
    "Limits",
    "RelaySession",
    "Request",
]

from .limits import Limits

logger = logging.getLogger("relay.session")

# Websocket close codes (RFC 6455 section 7.4.1 and the IANA registry).
CLOSE_GOING_AWAY: Final = 1001
"""The relay is shutting down."""
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_UNSUPPORTED_DATA: Final = 1003
"""A text message where the protocol is binary."""
CLOSE_INVALID_DATA: Final = 1007
"""An update pycrdt refuses (y-protocols has no error message)."""
CLOSE_POLICY: Final = 1008
CLOSE_TOO_BIG: Final = 1009
CLOSE_INTERNAL: Final = 1011
CLOSE_SERVICE_RESTART: Final = 1012
"""The relay restarts: reconnect (to another relay) at once."""
CLOSE_TRY_AGAIN_LATER: Final = 1013

Request = Hello | Subscribe | Update | Unsubscribe | Awareness
"""What a session hands the rooms."""


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


class RelaySession:
    """The relay's side of one connection.

    :meth:`receive` checks each frame against the protocol and returns the
    requests the relay's rooms must act on (HELLO, SUBSCRIBE, UPDATE,
    UNSUBSCRIBE, AWARENESS frames that passed). Everything the rooms answer goes
    out through :meth:`sync`, :meth:`push`, :meth:`stored`, :meth:`reject` and
    :meth:`error`; the I/O layer sends :meth:`frames_to_send` and closes the
    connection when :attr:`close` is set.

    ``on_output`` (optional) is called whenever frames are queued, so the I/O
    layer can write them.

    Subclasses (other wire protocols, :class:`relay.yjs.YjsSession`) override
    :attr:`wire`, :meth:`opening_requests`, :meth:`receive`, the encoders and
    :meth:`farewell`, and queue with :meth:`push` and :meth:`queue_reply`.
    """

    wire: ClassVar[str] = "native"
    """The wire protocol: fan-out encodes each update once per kind of connection."""

    def __init__(
        self,
        relay_id: str,
        limits: Limits = Limits(),  # noqa: B008 - frozen dataclass
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
        self.on_sync: Callable[[], None] | None = None
        """Called when a sync answer sent in pieces can go on: the I/O layer then
        calls ``Syncs.feed`` as the connection drains (:mod:`relay.syncs`)."""
        self.pre_auth_bytes = 0
        """Bytes the client sent before its first frame (the HTTP request, set by
        the I/O layer): they count towards ``max_pre_auth_bytes``."""
        self.backlog = 0
        """Bytes the I/O layer had not yet sent on the connection when it last
        wrote: over a piece's size, new sync answers wait for it to drain."""
        self.sink: Callable[[bytes], bool] | None = None
        """Set by the I/O layer: writes one frame to the connection at once and
        returns True, or returns False (then the frame is queued and ``on_output``
        called). Used only while nothing is queued, so frames keep their order: the
        fan-out's fast path, with no queue and no wake-up per delivery."""
        self._out: list[bytes] = []  # not a deque: 56 bytes empty, not 624
        self._queued = 0
        self.bytes_sent = 0
        """Bytes of every frame taken by :meth:`frames_to_send` (metrics)."""
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

    def opening_requests(self) -> list[Request]:
        """Requests to hand the rooms when the connection opens (none: a native
        client subscribes itself)."""
        return []

    def receive(self, data: bytes) -> list[Request]:
        """Check one message from the client; return what the rooms must handle.

        Malformed frames are answered with ERROR here (or a close before HELLO)
        and return nothing; they never raise.
        """
        if self.close is not None:
            return []
        if (
            self.replica_id is None
            and self.pre_auth_bytes + len(data) > self.limits.max_pre_auth_bytes
        ):
            self.fail(
                CLOSE_TOO_BIG,
                ErrorCode.FRAME_TOO_LARGE,
                f"{self.pre_auth_bytes + len(data)} bytes before HELLO, HTTP request "
                f"included (at most {self.limits.max_pre_auth_bytes})",
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
            if not self.within_rate(len(data)):
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

    def _hello(self, frame: Frame) -> list[Request]:
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

    def within_rate(self, size: int) -> bool:
        """Count one update or presence message of ``size`` bytes against the rate
        limits; over them, the connection is failed (close 1013) and this is False."""
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

    def tick(self, notice: float = 30.0) -> None:
        """Time passes (the host calls this every second or so).

        Closes a connection that has not completed HELLO within the deadline; with
        tokens, warns ``notice`` seconds before the token expires (ERROR
        token_expired: send AUTH with a fresh one) and closes the connection when
        it has expired."""
        if self.close is not None:
            return
        if self.replica_id is None:
            if self.clock() - self.opened_at >= self.limits.auth_timeout:
                self.fail(
                    CLOSE_POLICY,
                    ErrorCode.AUTH_TIMEOUT,
                    f"no valid HELLO within {self.limits.auth_timeout:g} s",
                )
            return
        expires = self.access.expires_at if self.access is not None else None
        if expires is None:
            return
        now = self.wall_clock()
        if now >= expires:
            self.fail(CLOSE_POLICY, ErrorCode.TOKEN_EXPIRED, "the token expired")
        elif not self._expiry_warned and now >= expires - notice:
            self._expiry_warned = True
            self.error(
                ErrorCode.TOKEN_EXPIRED,
                f"the token expires in {expires - now:.0f} s; send AUTH with a fresh one",
            )

    # -- frames out ----------------------------------------------------------------------------

    def greet(self, doc_id: DocId, doc: pycrdt.Doc[Any]) -> bool:
        """The room ``doc`` took this connection's SUBSCRIBE: True if the session
        answered it without a diff (a y-websocket join), False to have the rooms
        answer with :meth:`sync` (possibly after pieces: :mod:`relay.syncs`)."""
        return False

    def encode_update(self, doc_id: DocId, update: bytes) -> bytes:
        """``update`` as this connection's wire frame (fan-out encodes once per kind
        of connection)."""
        return encode_update(doc_id, update)

    def encode_awareness(self, doc_id: DocId, payload: bytes) -> bytes:
        """An awareness update as this connection's wire frame."""
        return encode_frame(Awareness(doc_id, payload))

    def sync(self, doc_id: DocId, update: bytes, state_vector: bytes) -> None:
        """Answer SUBSCRIBE: what the client lacks (or what is left after the pieces
        sent before: :mod:`relay.syncs`), and the relay's state vector."""
        self.queue_reply(encode_frame(Sync(doc_id, update, state_vector)))

    def queue_reply(self, frame: bytes) -> None:
        """Queue an encoded frame the client asked for (a sync answer or a piece of
        one), not counted against the slow-consumer budget: the rooms send large
        answers only as the connection drains. Nothing is queued once closing."""
        if self.close is not None:
            return
        self._out.append(frame)
        if self.on_output is not None:
            self.on_output()

    def push(self, frame: bytes) -> None:
        """Send an already encoded frame (fan-out encodes once for every subscriber):
        through :attr:`sink` when nothing is queued, else queued."""
        if self.close is not None:
            return
        sink = self.sink
        if sink is not None and not self._out and sink(frame):
            self.bytes_sent += len(frame)
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

    def notice(self, code: str, message: str, doc_id: DocId | None = None) -> None:
        """Tell the client something it may act on but that ends nothing (a non-fatal
        ERROR without a sequence number: nothing is refused)."""
        self.error(code, message, doc_id)

    def fail(self, close_code: int, code: str, message: str) -> None:
        """Queue the :meth:`farewell` and ask the I/O layer to close the connection
        with ``close_code`` and ``code: message`` as the reason."""
        if self.close is not None:
            return
        self.counters[code] += 1
        logger.info("%r: closing (%s): %s", self, code, message)
        self.close = Close(close_code, f"{code}: {message}"[:120])
        last = self.farewell(code, message)
        if last is not None:  # queued directly: push() sends nothing once closing
            self._out.append(last)
        if self.on_output is not None:
            self.on_output()

    def farewell(self, code: str, message: str) -> bytes | None:
        """The last frame before a close: a fatal ERROR (None: the protocol has none)."""
        return encode_frame(ErrorFrame(code, message, None, None, True))

    def frames_to_send(self) -> list[bytes]:
        """Frames to send, in order; each call returns the new ones only."""
        out, self._out = self._out, []
        self._queued = 0
        self.bytes_sent += sum(map(len, out))
        return out

    @property
    def queued_bytes(self) -> int:
        """Bytes queued and not yet taken by :meth:`frames_to_send`."""
        return self._queued

    def _send(self, frame: Frame) -> None:
        self.push(encode_frame(frame))
