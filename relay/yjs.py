"""The y-websocket protocol, so browser and Node Yjs clients join the relay's rooms.

A Yjs client (``new WebsocketProvider('ws://host:port/yjs', docId, ydoc)``)
opens ``ws://host:port/yjs/<doc id>``: one document per connection. Every
binary websocket message is one y-protocols message:

==========  ===========================================================
type 0      sync: ``varuint`` step, then ``varUint8Array``: step 0 (sync
            step 1: a state vector), step 1 (sync step 2: an update),
            step 2 (an update)
type 1      awareness: ``varUint8Array`` awareness update
type 3      query awareness: no payload; answered with every state
==========  ===========================================================

:class:`YjsSession` turns these into the requests the rooms already handle for
native replicas (SUBSCRIBE, UPDATE, AWARENESS) and the rooms' answers back into
y-protocols messages, so both kinds of client share one room, one stored log
and one durability path. The relay sends its sync step 1 when the client
joins, answers the client's step 1 with step 2, and relays updates and
awareness. y-protocols has no error or acknowledgement message: a malformed
message or an update the relay refuses closes that one connection with a
reason. No I/O here.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, ClassVar, Final

import pycrdt

from crdtsync.errors import ProtocolError
from crdtsync.ids import DocId, ReplicaId
from crdtsync.statevector import decode_state_vector, encode_var_uint, read_var_uint
from crdtsync.sync.protocol import Awareness, ErrorCode, Subscribe, Update

from .session import (
    CLOSE_INTERNAL,
    CLOSE_INVALID_DATA,
    CLOSE_POLICY,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER,
    Access,
    Authenticate,
    Limits,
    RelaySession,
    Request,
)

__all__ = [
    "MESSAGE_AUTH",
    "MESSAGE_AWARENESS",
    "MESSAGE_QUERY_AWARENESS",
    "MESSAGE_SYNC",
    "SYNC_STEP1",
    "SYNC_STEP2",
    "SYNC_UPDATE",
    "YjsMessage",
    "YjsSession",
    "decode_message",
    "encode_awareness_message",
    "encode_sync_step1",
    "encode_sync_step2",
    "encode_update_message",
]

MESSAGE_SYNC: Final = 0
MESSAGE_AWARENESS: Final = 1
MESSAGE_AUTH: Final = 2
MESSAGE_QUERY_AWARENESS: Final = 3
SYNC_STEP1: Final = 0
SYNC_STEP2: Final = 1
SYNC_UPDATE: Final = 2

logger = logging.getLogger("relay.yjs")

EMPTY_STATE_VECTOR = b"\x00"

YjsMessage = tuple[int, int | None, bytes]
"""``(message type, sync step or None, payload)``."""


def decode_message(data: bytes) -> YjsMessage:
    """Decode one y-protocols message.

    Raises :class:`~crdtsync.errors.ProtocolError` (and nothing else) on a bad
    varint, a truncated message, trailing bytes or an unknown type.
    """
    data = bytes(data)
    try:
        kind, pos = read_var_uint(data, 0)
        step: int | None = None
        if kind == MESSAGE_SYNC:
            step, pos = read_var_uint(data, pos)
            if step not in (SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE):
                raise ProtocolError(f"unknown sync message step {step}")
            payload, pos = _read_bytes(data, pos)
        elif kind == MESSAGE_AWARENESS:
            payload, pos = _read_bytes(data, pos)
        elif kind == MESSAGE_QUERY_AWARENESS:
            payload = b""
        elif kind == MESSAGE_AUTH:
            raise ProtocolError("auth messages go from the relay to clients, not back")
        else:
            raise ProtocolError(f"unknown y-protocols message type {kind}")
    except ValueError as exc:
        raise ProtocolError(f"malformed y-protocols message: {exc}") from exc
    if pos != len(data):
        raise ProtocolError(f"{len(data) - pos} trailing bytes after a y-protocols message")
    return kind, step, payload


def _read_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    length, pos = read_var_uint(data, pos)
    if pos + length > len(data):
        raise ValueError(f"truncated: {length} bytes announced, {len(data) - pos} present")
    return data[pos : pos + length], pos + length


def _message(prefix: bytes, payload: bytes) -> bytes:
    return b"".join((prefix, encode_var_uint(len(payload)), payload))


def encode_sync_step1(state_vector: bytes) -> bytes:
    """Sync step 1: "here is my state vector, send me what I lack"."""
    return _message(b"\x00\x00", state_vector)


def encode_sync_step2(update: bytes) -> bytes:
    """Sync step 2: the answer to a step 1."""
    return _message(b"\x00\x01", update)


def encode_update_message(update: bytes) -> bytes:
    """An incremental document update."""
    return _message(b"\x00\x02", update)


def encode_awareness_message(payload: bytes) -> bytes:
    """An awareness update."""
    return _message(b"\x01", payload)


class YjsSession(RelaySession):
    """One y-websocket connection, bound to one document, seen by the rooms as a
    relay session (sans-I/O).

    The rooms take :meth:`opening_requests` when the connection opens (it joins
    its document's room), then :meth:`receive` for every message. The rooms' answers come
    out of :meth:`frames_to_send` as y-protocols messages; :attr:`close` is set
    when the connection must end.
    """

    wire: ClassVar[str] = "yjs"

    def __init__(
        self,
        relay_id: str,
        limits: Limits = Limits(),  # noqa: B008 - frozen dataclass
        *,
        doc_id: DocId,
        name: str = "",
        on_output: Callable[[], None] | None = None,
        access: Access | None = None,
        authenticate: Authenticate | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        counters: Counter[str] | None = None,
    ) -> None:
        """``access``: what the token grants, checked by the host before the
        websocket upgrade (y-protocols cannot carry a token, so ``authenticate`` is
        not called here)."""
        super().__init__(
            relay_id,
            limits,
            name=name,
            on_output=on_output,
            authenticate=authenticate,
            clock=clock,
            wall_clock=wall_clock,
            counters=counters,
        )
        self.doc_id = doc_id
        self.replica_id = ReplicaId(f"yjs:{name or id(self)}")
        self.access = access  # checked before the websocket upgrade
        self.read_only = access is not None and not access.can_write(doc_id)
        self.dropped = 0
        """Updates dropped because the token is read-only for the document."""
        self._joined = False

    def __repr__(self) -> str:
        return f"<YjsSession {self.name or id(self)} doc={self.doc_id!r}>"

    def opening_requests(self) -> list[Request]:
        """The requests that put this connection in its document's room."""
        self.subscriptions.add(self.doc_id)
        return [Subscribe(self.doc_id, EMPTY_STATE_VECTOR)]

    def receive(self, data: bytes) -> list[Request]:
        """Translate one y-protocols message into room requests.

        A malformed message closes the connection (:attr:`close`) and returns
        nothing; this never raises.
        """
        if self.close is not None:
            return []
        if len(data) > self.limits.max_frame:
            self.fail(CLOSE_TOO_BIG, ErrorCode.FRAME_TOO_LARGE, f"message of {len(data)} bytes")
            return []
        try:
            kind, step, payload = decode_message(data)
            if kind == MESSAGE_SYNC and step == SYNC_STEP1:
                decode_state_vector(payload)
                return [Subscribe(self.doc_id, payload)]
        except (ProtocolError, ValueError) as exc:
            self.fail(CLOSE_PROTOCOL_ERROR, ErrorCode.BAD_FRAME, str(exc))
            return []
        if kind != MESSAGE_QUERY_AWARENESS and not self.within_rate(len(data)):
            return []
        if kind == MESSAGE_SYNC:
            if self.read_only:
                # y-websocket's read-only treatment: sync step 2 and updates are dropped.
                self.dropped += 1
                if self.dropped == 1:
                    logger.info("%r: read-only token; dropping its updates", self)
                return []
            return [Update(self.doc_id, payload)]
        if kind == MESSAGE_AWARENESS:
            return [Awareness(self.doc_id, payload)]
        return [Awareness(self.doc_id, b"")]  # query awareness: an empty update asks

    def tick(self, notice: float = 30.0) -> None:
        """Close the connection when its token expires (y-protocols cannot carry a
        warning or a new token; the provider reconnects with a fresh URL)."""
        expires = self.access.expires_at if self.access is not None else None
        if self.close is None and expires is not None and self.wall_clock() >= expires:
            self.fail(CLOSE_POLICY, ErrorCode.TOKEN_EXPIRED, "the token expired")

    # -- answers from the rooms ----------------------------------------------------------------

    def greet(self, doc_id: DocId, doc: pycrdt.Doc[Any]) -> bool:
        """On joining, send the relay's sync step 1 (the client answers with what
        the relay lacks, and its own step 1); the client's step 1 is answered with
        step 2 (:meth:`sync`), in pieces when large (update messages first)."""
        if self._joined:
            return False
        self._joined = True
        if self.close is None:
            # Like SYNC for native clients, not counted against the queue budget.
            self.queue_reply(encode_sync_step1(doc.get_state()))
        return True

    def sync(self, doc_id: DocId, update: bytes, state_vector: bytes) -> None:
        """What the client lacks, as sync step 2."""
        self.queue_reply(encode_sync_step2(update))

    def encode_update(self, doc_id: DocId, update: bytes) -> bytes:
        """``update`` as this connection's wire message."""
        return encode_update_message(update)

    def encode_awareness(self, doc_id: DocId, payload: bytes) -> bytes:
        """An awareness update as this connection's wire message."""
        return encode_awareness_message(payload)

    def stored(self, doc_id: DocId, seq: int) -> None:
        """y-protocols has no acknowledgement: nothing to send."""

    def reject(self, doc_id: DocId, seq: int | None, code: str, message: str) -> None:
        """y-protocols cannot refuse one update: close the connection with the reason
        (the client resyncs on reconnect, sending what the relay lacks again)."""
        close_code = {
            ErrorCode.BUSY: CLOSE_TRY_AGAIN_LATER,
            ErrorCode.STORAGE_FAILED: CLOSE_INTERNAL,
            ErrorCode.INVALID_UPDATE: CLOSE_INVALID_DATA,
        }.get(code, CLOSE_POLICY)
        self.fail(close_code, code, message)

    def error(
        self, code: str, message: str, doc_id: DocId | None = None, seq: int | None = None
    ) -> None:
        """y-protocols has no error message: close the connection with the reason
        (1002 for a malformed message, 1008 otherwise)."""
        close_code = CLOSE_PROTOCOL_ERROR if code == ErrorCode.BAD_FRAME else CLOSE_POLICY
        self.fail(close_code, code, message)

    def notice(self, code: str, message: str, doc_id: DocId | None = None) -> None:
        """y-protocols has no message for a notice (its only error is a close): log it."""
        logger.info("%r: %s: %s", self, code, message)

    def farewell(self, code: str, message: str) -> bytes | None:
        """y-protocols has no error message: the close reason says it all."""
        return None
