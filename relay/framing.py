"""The websocket encoding of a server's binary message, built once per fan-out.

A frame a server sends is not masked (RFC 6455 section 5.1), so without
compression one message is the same bytes on every connection. websockets'
``broadcast()`` still frames it once per connection; the relay's fan-out
(:meth:`relay.server.Relay._sink`) frames it once and writes those bytes to
every subscriber's socket. No I/O here.
"""

from __future__ import annotations

__all__ = ["BinaryFramer", "binary_frame"]

_FIN_BINARY = 0x82


def binary_frame(payload: bytes) -> bytes:
    """``payload`` as one final, unmasked, uncompressed binary websocket frame."""
    size = len(payload)
    if size < 126:
        head = bytes((_FIN_BINARY, size))
    elif size < 1 << 16:
        head = bytes((_FIN_BINARY, 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((_FIN_BINARY, 127)) + size.to_bytes(8, "big")
    return head + payload


class BinaryFramer:
    """:func:`binary_frame` remembering its last answer: the fan-out hands the very
    same payload object to every subscriber in turn, so all but the first get the
    frame already built (compared by identity: bytes never change)."""

    __slots__ = ("_frame", "_payload")

    def __init__(self) -> None:
        self._payload: bytes | None = None
        self._frame = b""

    def __call__(self, payload: bytes) -> bytes:
        if payload is not self._payload:
            self._frame = binary_frame(payload)
            self._payload = payload
        return self._frame
