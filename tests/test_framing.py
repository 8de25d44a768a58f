"""The fan-out's shared websocket frames (:mod:`relay.framing`) are exactly what
websockets writes for a server's binary message."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from relay.framing import BinaryFramer, binary_frame


def _websockets_frame(payload: bytes) -> bytes:
    return Frame(Opcode.BINARY, payload).serialize(mask=False)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_every_length_encoding_matches_websockets(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert binary_frame(payload) == _websockets_frame(payload)


@given(st.binary(max_size=3000))
def test_any_payload_matches_websockets(payload: bytes) -> None:
    assert binary_frame(payload) == _websockets_frame(payload)


def test_the_framer_builds_each_payload_once() -> None:
    framer = BinaryFramer()
    first = b"update for everyone"
    built = framer(first)
    assert framer(first) is built  # the next subscribers get the same bytes
    other = b"update for everyone"[:]  # equal but another object: built anew, equal
    assert framer(bytes(bytearray(other))) == built
    assert framer(b"next") == binary_frame(b"next")
