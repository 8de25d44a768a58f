"""The native wire protocol: frames, their msgpack encoding, and validation.

Nothing here does I/O. One websocket message carries exactly one frame: a
msgpack map whose ``"type"`` names the frame. The session objects
(:mod:`crdtsync.sync.session`, ``relay.session``) decide *when* frames are
sent; this module only says what a frame is and whether a received one is well
formed.

=============  =====  ==========================================================
frame          dir.   fields
=============  =====  ==========================================================
HELLO          c→r    ``version``, ``replica`` (replica id), ``token`` (or nil)
WELCOME        r→c    ``version``, ``relay`` (relay id), ``max_frame``, ``max_docs``
SUBSCRIBE      c→r    ``doc``, ``sv`` (the client's Yjs state vector)
SYNC           r→c    ``doc``, ``update`` (what the client lacks), ``sv`` (the relay's)
UPDATE         both   ``doc``, ``update``, ``seq`` (client's outbox number; nil r→c)
ACK            r→c    ``doc``, ``seq`` (highest sequence number durably stored)
UNSUBSCRIBE    c→r    ``doc``
AWARENESS      both   ``doc``, ``payload`` (y-protocols awareness update; never stored)
ERROR          r→c    ``code``, ``message``, ``doc`` (or nil), ``seq`` (or nil), ``fatal``
AUTH           c→r    ``token``: a fresh token on an open connection
=============  =====  ==========================================================

A large SYNC is preceded by UPDATE frames (``seq`` nil) for the same document:
the relay sends what the client lacks in pieces, each an update the client
applies at once (see ``relay.syncs``), then the SYNC with the rest and the
relay's state vector. A client applies UPDATE frames whenever they come, so
the frame set (and :data:`PROTOCOL_VERSION`) is unchanged.

:func:`decode_frame` checks every field's type and size and raises
:class:`~crdtsync.errors.ProtocolError`, and only that, for anything else.
Unknown extra keys are ignored, so later versions can add optional fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from ..errors import ProtocolError
from ..ids import DocId, ReplicaId
from ..statevector import decode_state_vector

__all__ = [
    "DEFAULT_MAX_DOCS",
    "DEFAULT_MAX_FRAME",
    "PROTOCOL_VERSION",
    "Ack",
    "Auth",
    "Awareness",
    "ErrorCode",
    "ErrorFrame",
    "Frame",
    "Hello",
    "Subscribe",
    "Sync",
    "Unsubscribe",
    "Update",
    "Welcome",
    "decode_frame",
    "encode_frame",
    "encode_update",
]

PROTOCOL_VERSION: Final = 1
DEFAULT_MAX_FRAME: Final = 1 << 20
"""Default largest frame (bytes) either side accepts: 1 MiB."""
DEFAULT_MAX_DOCS: Final = 1000
"""Default largest number of documents one connection may subscribe to."""

MAX_DOC_ID_BYTES: Final = 512
MAX_ID_CHARS: Final = 256
MAX_TOKEN_CHARS: Final = 16384
MAX_CODE_CHARS: Final = 64
MAX_MESSAGE_CHARS: Final = 2048
MAX_SEQ: Final = (1 << 63) - 1


class ErrorCode:
    """The ``code`` values of ERROR frames (strings on the wire)."""

    BAD_FRAME: Final = "bad_frame"
    """The frame could not be decoded or a field is invalid."""
    UNSUPPORTED_VERSION: Final = "unsupported_version"
    """The peer speaks a protocol version this side does not (fatal)."""
    HELLO_REQUIRED: Final = "hello_required"
    """A frame other than HELLO arrived first, or HELLO arrived twice."""
    NOT_SUBSCRIBED: Final = "not_subscribed"
    """An UPDATE or AWARENESS for a document the connection has not subscribed to."""
    INVALID_UPDATE: Final = "invalid_update"
    """The update could not be decoded or integrated; it was not stored (or only the
    part the relay's document integrated was), and its ACK is withheld."""
    TOO_MANY_DOCUMENTS: Final = "too_many_documents"
    """SUBSCRIBE beyond the connection's document limit."""
    FRAME_TOO_LARGE: Final = "frame_too_large"
    """A frame larger than the limit announced in WELCOME."""
    SLOW_CONSUMER: Final = "slow_consumer"
    """The connection fell too far behind; it is closed and should resync."""
    STORAGE_FAILED: Final = "storage_failed"
    """The relay could not store the update (disk full...); it was not acknowledged."""
    STORAGE_UNAVAILABLE: Final = "storage_unavailable"
    """The relay's storage (Redis) cannot be reached for now: updates sent are kept
    and acknowledged once they are stored (not fatal; nothing to resend)."""
    BUSY: Final = "busy"
    """The document is still loading and too much was sent before its SYNC."""
    SHUTTING_DOWN: Final = "shutting_down"
    """The relay is stopping; reconnect later."""
    INTERNAL: Final = "internal"
    """An unexpected relay error, logged on the relay."""
    TOKEN_REQUIRED: Final = "token_required"
    """The relay requires a token and none was sent (fatal)."""
    TOKEN_INVALID: Final = "token_invalid"
    """The token is malformed, tampered with or wrongly signed (fatal)."""
    TOKEN_EXPIRED: Final = "token_expired"
    """The token expired: fatal at HELLO; during a session, send AUTH with a fresh
    token before the grace period ends or the connection is closed."""
    TOKEN_NOT_YET_VALID: Final = "token_not_yet_valid"
    """The token's ``nbf`` is in the future (fatal)."""
    UNKNOWN_KEY: Final = "unknown_key"
    """The token names a key id the relay does not have (fatal)."""
    WRONG_ALGORITHM: Final = "wrong_algorithm"
    """The token is signed with an algorithm the key does not allow ("none"...) (fatal)."""
    PERMISSION_DENIED: Final = "permission_denied"
    """The token grants no access to this document (for that document only)."""
    READ_ONLY: Final = "read_only"
    """The token grants read-only access to this document: the update was not
    applied, stored or sent on; the client keeps it pending."""
    AUTHORSHIP: Final = "authorship"
    """The update adds content under a client id another subject owns."""
    RATE_LIMITED: Final = "rate_limited"
    """The connection sent more updates or bytes per second than allowed (it is
    closed; reconnect later, the outbox is resent)."""
    AUTH_TIMEOUT: Final = "auth_timeout"
    """No valid HELLO within the relay's deadline."""
    DOCUMENT_TOO_LARGE: Final = "document_too_large"
    """The document would exceed the largest size the relay holds."""
    TOO_MANY_CONNECTIONS: Final = "too_many_connections"
    """Too many open connections from this address (HTTP 429 before the upgrade)."""


TOKEN_REFUSALS: Final = frozenset(
    {
        ErrorCode.TOKEN_REQUIRED,
        ErrorCode.TOKEN_INVALID,
        ErrorCode.TOKEN_EXPIRED,
        ErrorCode.TOKEN_NOT_YET_VALID,
        ErrorCode.UNKNOWN_KEY,
        ErrorCode.WRONG_ALGORITHM,
    }
)
"""The codes that refuse a token itself (HTTP 401 before an upgrade), as opposed
to what a valid token does not grant (``permission_denied``, HTTP 403)."""


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame of a connection, client to relay."""

    replica_id: ReplicaId
    token: str | None = None
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class Auth:
    """A fresh token on an open connection (client to relay), before the current
    one expires; the relay answers only if it refuses it (ERROR)."""

    token: str


@dataclass(frozen=True, slots=True)
class Welcome:
    """The relay's answer to HELLO, with the limits the client must respect."""

    relay_id: str
    max_frame: int = DEFAULT_MAX_FRAME
    max_docs: int = DEFAULT_MAX_DOCS
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Sync step 1: the client's state vector for ``doc_id``."""

    doc_id: DocId
    state_vector: bytes


@dataclass(frozen=True, slots=True)
class Sync:
    """Sync step 2: what the client lacks (always with the relay's whole delete set),
    and the relay's state vector, from which the client computes what the relay lacks."""

    doc_id: DocId
    update: bytes
    state_vector: bytes


@dataclass(frozen=True, slots=True)
class Update:
    """An encoded Yjs update. ``seq`` is the client's outbox sequence number of the
    last change it covers (client to relay), None when nothing is to be acknowledged."""

    doc_id: DocId
    update: bytes
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    """Every update of ``doc_id`` with a sequence number up to ``seq`` that this
    connection sent is durably stored by the relay."""

    doc_id: DocId
    seq: int


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """The client stops syncing ``doc_id`` on this connection."""

    doc_id: DocId


@dataclass(frozen=True, slots=True)
class Awareness:
    """Ephemeral presence for ``doc_id`` (a y-protocols awareness update); never stored."""

    doc_id: DocId
    payload: bytes


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """The relay refused something. ``doc_id`` and ``seq`` say what, when it is about
    one document or one update; ``fatal`` means the relay closes the connection."""

    code: str
    message: str
    doc_id: DocId | None = None
    seq: int | None = None
    fatal: bool = False


Frame = (
    Hello | Welcome | Subscribe | Sync | Update | Ack | Unsubscribe | Awareness | ErrorFrame | Auth
)

_packer = msgpack.Packer(use_bin_type=True)


def encode_frame(frame: Frame) -> bytes:
    """The msgpack bytes of ``frame`` (one websocket message)."""
    match frame:
        case Update(doc_id, update, seq):
            data: dict[str, Any] = {"type": "update", "doc": doc_id, "update": update, "seq": seq}
        case Ack(doc_id, seq):
            data = {"type": "ack", "doc": doc_id, "seq": seq}
        case Subscribe(doc_id, state_vector):
            data = {"type": "subscribe", "doc": doc_id, "sv": state_vector}
        case Sync(doc_id, update, state_vector):
            data = {"type": "sync", "doc": doc_id, "update": update, "sv": state_vector}
        case Awareness(doc_id, payload):
            data = {"type": "awareness", "doc": doc_id, "payload": payload}
        case Unsubscribe(doc_id):
            data = {"type": "unsubscribe", "doc": doc_id}
        case Hello(replica_id, token, version):
            data = {"type": "hello", "version": version, "replica": replica_id, "token": token}
        case Auth(token):
            data = {"type": "auth", "token": token}
        case Welcome(relay_id, max_frame, max_docs, version):
            data = {
                "type": "welcome",
                "version": version,
                "relay": relay_id,
                "max_frame": max_frame,
                "max_docs": max_docs,
            }
        case ErrorFrame(code, message, doc_id, seq, fatal):
            data = {
                "type": "error",
                "code": code,
                "message": message,
                "doc": doc_id,
                "seq": seq,
                "fatal": fatal,
            }
        case _:
            raise TypeError(f"not a frame: {frame!r}")
    packed: bytes = _packer.pack(data)
    return packed


def encode_update(doc_id: str, update: bytes, seq: int | None = None) -> bytes:
    """``encode_frame(Update(doc_id, update, seq))`` without building the dataclass
    (the relay's fan-out path)."""
    packed: bytes = _packer.pack({"type": "update", "doc": doc_id, "update": update, "seq": seq})
    return packed


# -- decoding ------------------------------------------------------------------------


def decode_frame(data: bytes, max_size: int = DEFAULT_MAX_FRAME) -> Frame:
    """Decode and validate one frame.

    Raises :class:`~crdtsync.errors.ProtocolError` (and nothing else) if ``data``
    is larger than ``max_size``, is not one msgpack map, has an unknown type, or
    any field has the wrong type or size. State vectors are decoded to check them.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(f"a frame is binary, not {type(data).__name__}")
    if len(data) > max_size:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds the limit of {max_size}")
    try:
        raw = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
        )
    except (ValueError, OverflowError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"not a msgpack frame: {exc}") from exc
    if not isinstance(raw, dict):
        raise ProtocolError(f"a frame is a msgpack map, not {type(raw).__name__}")
    kind = raw.get("type")
    decoder = _DECODERS.get(kind) if isinstance(kind, str) else None
    if decoder is None or not isinstance(kind, str):
        raise ProtocolError(f"unknown frame type {kind!r}"[:200])
    return decoder(_Fields(raw, kind))


class _Fields:
    """Typed access to the fields of one raw frame, raising ProtocolError."""

    __slots__ = ("kind", "raw")

    def __init__(self, raw: dict[str, Any], kind: str) -> None:
        self.raw = raw
        self.kind = kind

    def _fail(self, key: str, expected: str) -> ProtocolError:
        value = self.raw.get(key)
        shown = type(value).__name__ if key in self.raw else "missing"
        return ProtocolError(f"{self.kind} frame: {key!r} must be {expected} (got {shown})")

    def doc(self, key: str = "doc") -> DocId:
        value = self.raw.get(key)
        if not isinstance(value, str) or not value:
            raise self._fail(key, "a non-empty string")
        if len(value) > MAX_DOC_ID_BYTES or len(value.encode("utf-8", "surrogatepass")) > (
            MAX_DOC_ID_BYTES
        ):
            raise ProtocolError(f"{self.kind} frame: document id longer than {MAX_DOC_ID_BYTES}")
        return DocId(value)

    def text(self, key: str, limit: int, *, optional: bool = False) -> str | None:
        value = self.raw.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise self._fail(key, "a string")
        if len(value) > limit:
            raise ProtocolError(f"{self.kind} frame: {key!r} longer than {limit} characters")
        return value

    def blob(self, key: str, *, allow_empty: bool = False) -> bytes:
        value = self.raw.get(key)
        if not isinstance(value, bytes):
            raise self._fail(key, "binary")
        if not value and not allow_empty:
            raise ProtocolError(f"{self.kind} frame: {key!r} is empty")
        return value

    def state_vector(self, key: str = "sv") -> bytes:
        value = self.blob(key)
        try:
            decode_state_vector(value)
        except ValueError as exc:
            raise ProtocolError(f"{self.kind} frame: bad state vector: {exc}") from exc
        return value

    def integer(self, key: str, low: int, high: int, *, optional: bool = False) -> int | None:
        value = self.raw.get(key)
        if value is None and optional:
            return None
        if type(value) is not int:
            raise self._fail(key, "an integer")
        if not low <= value <= high:
            raise ProtocolError(f"{self.kind} frame: {key!r} = {value} outside [{low}, {high}]")
        return value

    def flag(self, key: str) -> bool:
        value = self.raw.get(key, False)
        if not isinstance(value, bool):
            raise self._fail(key, "a boolean")
        return value


def _required(value: int | None) -> int:
    if value is None:  # integer() only returns None for optional fields
        raise ProtocolError("a required integer is missing")
    return value


def _hello(f: _Fields) -> Hello:
    version = _required(f.integer("version", 0, 1 << 16))
    replica = f.text("replica", MAX_ID_CHARS)
    if not replica:
        raise ProtocolError("hello frame: 'replica' is empty")
    return Hello(ReplicaId(replica), f.text("token", MAX_TOKEN_CHARS, optional=True), version)


def _auth(f: _Fields) -> Auth:
    token = f.text("token", MAX_TOKEN_CHARS)
    if not token:
        raise ProtocolError("auth frame: 'token' is empty")
    return Auth(token)


def _welcome(f: _Fields) -> Welcome:
    return Welcome(
        relay_id=f.text("relay", MAX_ID_CHARS) or "",
        max_frame=_required(f.integer("max_frame", 1024, 1 << 31)),
        max_docs=_required(f.integer("max_docs", 1, 1 << 31)),
        version=_required(f.integer("version", 0, 1 << 16)),
    )


def _subscribe(f: _Fields) -> Subscribe:
    return Subscribe(f.doc(), f.state_vector())


def _sync(f: _Fields) -> Sync:
    return Sync(f.doc(), f.blob("update"), f.state_vector())


def _update(f: _Fields) -> Update:
    return Update(f.doc(), f.blob("update"), f.integer("seq", 1, MAX_SEQ, optional=True))


def _ack(f: _Fields) -> Ack:
    return Ack(f.doc(), _required(f.integer("seq", 1, MAX_SEQ)))


def _unsubscribe(f: _Fields) -> Unsubscribe:
    return Unsubscribe(f.doc())


def _awareness(f: _Fields) -> Awareness:
    return Awareness(f.doc(), f.blob("payload"))


def _error(f: _Fields) -> ErrorFrame:
    doc = f.doc() if f.raw.get("doc") is not None else None
    return ErrorFrame(
        code=f.text("code", MAX_CODE_CHARS) or "",
        message=f.text("message", MAX_MESSAGE_CHARS) or "",
        doc_id=doc,
        seq=f.integer("seq", 1, MAX_SEQ, optional=True),
        fatal=f.flag("fatal"),
    )


_DECODERS: Final[dict[str, Callable[[_Fields], Frame]]] = {
    "hello": _hello,
    "welcome": _welcome,
    "subscribe": _subscribe,
    "sync": _sync,
    "update": _update,
    "ack": _ack,
    "unsubscribe": _unsubscribe,
    "awareness": _awareness,
    "error": _error,
    "auth": _auth,
}
