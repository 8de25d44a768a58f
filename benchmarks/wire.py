"""Client side of the three wire protocols the benchmark speaks, sans I/O.

- **native**: crdtsync's msgpack frames (imported through :mod:`benchmarks.internals`):
  HELLO, SUBSCRIBE with a state vector, SYNC, UPDATE with a sequence number, ACK. One
  connection may carry many documents: :func:`native_hello`, :func:`native_subscribe`,
  :func:`native_update` and :func:`decode_native` (events name their document).
- **yjs**: the y-websocket protocol (y-protocols), one document per connection:
  every message is ``varUint(type)`` then, for type 0 (sync), ``varUint(step)``
  (0: sync step 1, a state vector; 1: sync step 2, an update; 2: an update) and
  ``varUint8Array(payload)``; type 1 is awareness, 3 query awareness. Spoken by
  crdtsync's ``/yjs/<doc>`` path, ``@y/websocket-server`` and pycrdt-websocket.
- **hocuspocus**: Hocuspocus' framing of y-protocols: every message starts with
  ``varString(document name)``, then ``varUint(type)`` (0 sync, 1 awareness,
  2 auth, 3 query awareness, 4 sync reply, 5 stateless, 8 sync status) and the
  y-protocols payload. A document is usable after the client's auth message
  (``2, varUint(0 = token), varString(token)``) is answered with
  ``2, varUint(2 = authenticated), varString(scope)``; messages sent before are
  queued by the server (``@hocuspocus/server`` 3.x, ``ClientConnection.ts``).
  The server answers every applied update with ``8, varUint(1)`` (sync status).
- **raw**: y-websocket update messages sent to the bare forwarder, which has no
  handshake and no state.

:func:`codec` gives the object that encodes what a client sends and decodes
what it receives into :class:`Event` tuples. :func:`update_client_id` reads the
writer of an update from its header (how a client tells an echo of its own update).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal, NamedTuple

from . import internals

__all__ = [
    "EMPTY_UPDATE",
    "MAX_FRAME_IN",
    "Codec",
    "Event",
    "EventKind",
    "Protocol",
    "codec",
    "decode_native",
    "native_hello",
    "native_subscribe",
    "native_update",
    "read_var_string",
    "read_var_uint",
    "update_client_id",
    "var_string",
    "var_uint",
]

Protocol = Literal["native", "yjs", "hocuspocus", "raw"]

MAX_FRAME_IN = 256 << 20
"""Largest message a benchmark client accepts (a sync carries a whole document)."""
EMPTY_UPDATE = b"\x00\x00"
"""The update of an empty transaction (servers may relay one)."""

YJS_SYNC: Final = 0
YJS_AWARENESS: Final = 1
YJS_AUTH: Final = 2
YJS_QUERY_AWARENESS: Final = 3
HP_SYNC_REPLY: Final = 4
HP_STATELESS: Final = 5
HP_CLOSE: Final = 7
HP_SYNC_STATUS: Final = 8
STEP1: Final = 0
STEP2: Final = 1
UPDATE: Final = 2
AUTH_TOKEN: Final = 0
AUTH_DENIED: Final = 1
AUTH_OK: Final = 2

EventKind = Literal["update", "step1", "step2", "ack", "welcome", "error", "other"]


class Event(NamedTuple):
    """One thing a received message says.

    ``update``: an incremental update (``payload``); ``step1``: the server's state
    vector, to be answered with what it lacks; ``step2``: the diff answering our
    state vector (the client is in sync after applying it); ``ack``: ``seq`` stored
    (native: durably; Hocuspocus: applied in memory); ``welcome``: handshake done
    (native WELCOME, Hocuspocus authenticated); ``error``: ``text``; ``other``:
    awareness and the like, nothing to do. ``doc``: the document of a native
    ``update``, ``step2`` (SYNC) or ``ack``.
    """

    kind: EventKind
    payload: bytes = b""
    seq: int = 0
    text: str = ""
    doc: str = ""


def update_client_id(update: bytes) -> int | None:
    """The client id of a one-struct-group v1 update (the header of every update a
    benchmark client makes), or None for any other shape."""
    if len(update) < 3 or update[0] != 1:
        return None
    value = shift = 0
    for index in range(2, min(len(update), 12)):
        byte = update[index]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value
        shift += 7
    return None


def var_uint(value: int) -> bytes:
    """lib0 ``writeVarUint``."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_var_uint(data: bytes, pos: int) -> tuple[int, int]:
    """lib0 ``readVarUint``: (value, next position); ValueError if truncated."""
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated var uint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def var_bytes(payload: bytes) -> bytes:
    """lib0 ``writeVarUint8Array``."""
    return var_uint(len(payload)) + payload


def read_var_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    """lib0 ``readVarUint8Array``."""
    length, pos = read_var_uint(data, pos)
    if pos + length > len(data):
        raise ValueError("truncated byte array")
    return data[pos : pos + length], pos + length


def var_string(text: str) -> bytes:
    """lib0 ``writeVarString`` (UTF-8, length-prefixed)."""
    return var_bytes(text.encode())


def read_var_string(data: bytes, pos: int) -> tuple[str, int]:
    """lib0 ``readVarString``."""
    raw, pos = read_var_bytes(data, pos)
    return raw.decode(), pos


class Codec:
    """What one client of one protocol sends and how it reads what it receives.

    A client calls :meth:`opening` once connected (messages to send before
    anything else), :meth:`update` for every local change, :meth:`decode` for
    every received message, and :meth:`step2` to answer an ``step1`` event.
    """

    protocol: Protocol = "raw"

    def __init__(self, doc_id: str, replica: str = "bench") -> None:
        self.doc_id = doc_id
        self.replica = replica

    def path(self, base_url: str) -> str:
        """The URL this client connects to (``base_url`` is the server's root)."""
        return f"{base_url.rstrip('/')}/{self.doc_id}"

    def opening(self, state_vector: bytes) -> list[bytes]:
        """Messages sent right after connecting (sync step 1 or its equivalent)."""
        return []

    @property
    def handshake(self) -> bool:
        """True when the client waits for a ``step2`` event before it is in sync."""
        return False

    def update(self, update: bytes, seq: int) -> bytes:
        """One local update as a message."""
        return _yjs(YJS_SYNC, UPDATE, update)

    def step2(self, update: bytes) -> bytes:
        """The answer to the server's sync step 1."""
        return _yjs(YJS_SYNC, STEP2, update)

    def decode(self, message: bytes) -> Sequence[Event]:
        """What a received message says (ValueError if it is malformed)."""
        return _decode_yjs(message, 0)


def _yjs(kind: int, step: int, payload: bytes) -> bytes:
    return bytes((kind, step)) + var_bytes(payload)


def _decode_yjs(message: bytes, pos: int) -> list[Event]:
    kind, pos = read_var_uint(message, pos)
    if kind == YJS_SYNC:
        step, pos = read_var_uint(message, pos)
        payload, _ = read_var_bytes(message, pos)
        if step == UPDATE:
            return [Event("update", payload)]
        if step == STEP2:
            return [Event("step2", payload)]
        if step == STEP1:
            return [Event("step1", payload)]
        raise ValueError(f"unknown sync step {step}")
    if kind in (YJS_AWARENESS, YJS_QUERY_AWARENESS):
        return [Event("other")]
    raise ValueError(f"unexpected y-protocols message type {kind}")


class YjsCodec(Codec):
    """y-websocket: one document per connection; sync step 1 on connect."""

    protocol: Protocol = "yjs"

    def __init__(self, doc_id: str, replica: str = "bench", prefix: str = "") -> None:
        super().__init__(doc_id, replica)
        self.prefix = prefix

    def path(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}{self.prefix}/{self.doc_id}"

    def opening(self, state_vector: bytes) -> list[bytes]:
        return [_yjs(YJS_SYNC, STEP1, state_vector)]

    @property
    def handshake(self) -> bool:
        return True


class HocuspocusCodec(Codec):
    """Hocuspocus: document name before every message; auth, then sync step 1."""

    protocol: Protocol = "hocuspocus"

    def __init__(self, doc_id: str, replica: str = "bench") -> None:
        super().__init__(doc_id, replica)
        self.head = var_string(doc_id)

    def path(self, base_url: str) -> str:
        return base_url.rstrip("/") + "/"

    def opening(self, state_vector: bytes) -> list[bytes]:
        auth = self.head + bytes((YJS_AUTH, AUTH_TOKEN)) + var_string("benchmark")
        return [auth, self.head + _yjs(YJS_SYNC, STEP1, state_vector)]

    @property
    def handshake(self) -> bool:
        return True

    def update(self, update: bytes, seq: int) -> bytes:
        return self.head + _yjs(YJS_SYNC, UPDATE, update)

    def step2(self, update: bytes) -> bytes:
        return self.head + _yjs(YJS_SYNC, STEP2, update)

    def decode(self, message: bytes) -> Sequence[Event]:
        name, pos = read_var_string(message, 0)
        if name != self.doc_id:
            raise ValueError(f"message for document {name!r}, expected {self.doc_id!r}")
        kind, after = read_var_uint(message, pos)
        if kind == HP_SYNC_REPLY:  # a sync message that asks for no sync step 1 back
            return _decode_yjs(bytes((YJS_SYNC,)) + message[after:], 0)
        if kind == HP_SYNC_STATUS:
            saved, _ = read_var_uint(message, after)
            return [Event("ack", seq=1)] if saved else [Event("error", text="update not saved")]
        if kind == YJS_AUTH:
            auth, after = read_var_uint(message, after)
            if auth == AUTH_OK:
                return [Event("welcome")]
            reason = read_var_string(message, after)[0] if auth == AUTH_DENIED else str(auth)
            return [Event("error", text=f"authentication refused: {reason}")]
        if kind in (HP_STATELESS, HP_CLOSE):
            return [Event("error", text=f"unexpected Hocuspocus message type {kind}")]
        return _decode_yjs(message, pos)


def native_hello(replica: str) -> bytes:
    """The native HELLO frame of replica ``replica``."""
    return internals.encode_frame(internals.Hello(internals.ReplicaId(replica)))


def native_subscribe(doc_id: str, state_vector: bytes) -> bytes:
    """The native SUBSCRIBE frame of ``doc_id`` with the client's state vector."""
    return internals.encode_frame(internals.Subscribe(internals.DocId(doc_id), state_vector))


def native_update(doc_id: str, update: bytes, seq: int) -> bytes:
    """The native UPDATE frame of one update of ``doc_id``, numbered ``seq``."""
    return internals.encode_update(doc_id, update, seq)


def decode_native(message: bytes) -> Event:
    """What a native frame says (ValueError if it is malformed); SYNC is ``step2``."""
    frame = internals.decode_frame(message, MAX_FRAME_IN)
    if type(frame) is internals.Update:
        return Event("update", frame.update, doc=frame.doc_id)
    if type(frame) is internals.Ack:
        return Event("ack", seq=frame.seq, doc=frame.doc_id)
    if type(frame) is internals.Sync:
        return Event("step2", frame.update, doc=frame.doc_id)
    if type(frame) is internals.Welcome:
        return Event("welcome")
    if type(frame) is internals.ErrorFrame:
        return Event("error", text=f"relay ERROR {frame.code}: {frame.message}")
    return Event("error", text=f"unexpected {type(frame).__name__}")


class NativeCodec(Codec):
    """crdtsync's own protocol: HELLO + SUBSCRIBE; SYNC; UPDATE with seq; ACK."""

    protocol: Protocol = "native"

    def path(self, base_url: str) -> str:
        return base_url

    def opening(self, state_vector: bytes) -> list[bytes]:
        return [native_hello(self.replica), native_subscribe(self.doc_id, state_vector)]

    @property
    def handshake(self) -> bool:
        return True

    def update(self, update: bytes, seq: int) -> bytes:
        return native_update(self.doc_id, update, seq)

    def step2(self, update: bytes) -> bytes:  # pragma: no cover - never asked
        raise NotImplementedError("the relay never sends a sync step 1 to a native client")

    def decode(self, message: bytes) -> Sequence[Event]:
        return [decode_native(message)]


def codec(protocol: Protocol, doc_id: str, replica: str = "bench", prefix: str = "") -> Codec:
    """The codec of ``protocol`` for one document (``prefix``: a y-websocket path
    prefix, ``/yjs`` for crdtsync's relay)."""
    if protocol == "native":
        return NativeCodec(doc_id, replica)
    if protocol == "yjs":
        return YjsCodec(doc_id, replica, prefix)
    if protocol == "hocuspocus":
        return HocuspocusCodec(doc_id, replica)
    return Codec(doc_id, replica)
