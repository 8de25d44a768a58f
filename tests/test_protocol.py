"""The frame codec: round trips, validation, and nothing but ProtocolError on bad bytes."""

from __future__ import annotations

import contextlib
from typing import get_args

import msgpack
import pycrdt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtsync.errors import ProtocolError
from crdtsync.ids import DocId, ReplicaId
from crdtsync.statevector import encode_state_vector
from crdtsync.sync.protocol import (
    Ack,
    Auth,
    Awareness,
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


def _mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` with one byte changed, cut short, or with bytes inserted."""
    at = st.integers(0, len(data))
    return st.one_of(
        st.tuples(at, st.integers(0, 255)).map(
            lambda p: data[: p[0]] + bytes([p[1]]) + data[p[0] + 1 :]
        ),
        at.map(lambda n: data[:n]),
        st.tuples(at, st.binary(min_size=1, max_size=9)).map(
            lambda p: data[: p[0]] + p[1] + data[p[0] :]
        ),
    )


doc_ids = st.text(min_size=1, max_size=40).map(DocId)
blobs = st.binary(min_size=1, max_size=200)
seqs = st.integers(min_value=1, max_value=(1 << 63) - 1)
state_vectors = st.dictionaries(st.integers(0, 2**32 - 1), st.integers(0, 2**40), max_size=5).map(
    encode_state_vector
)

versions = st.integers(0, 1 << 16)

FRAMES: dict[type, st.SearchStrategy[Frame]] = {
    Hello: st.builds(
        Hello, st.text(min_size=1, max_size=40).map(ReplicaId), st.none() | st.text(), versions
    ),
    Welcome: st.builds(
        Welcome, st.text(max_size=40), st.integers(1024, 1 << 31), st.integers(1, 10**6), versions
    ),
    Subscribe: st.builds(Subscribe, doc_ids, state_vectors),
    Sync: st.builds(Sync, doc_ids, blobs, state_vectors),
    Update: st.builds(Update, doc_ids, blobs, st.none() | seqs),
    Ack: st.builds(Ack, doc_ids, seqs),
    Unsubscribe: st.builds(Unsubscribe, doc_ids),
    Awareness: st.builds(Awareness, doc_ids, blobs),
    Auth: st.builds(Auth, st.text(min_size=1, max_size=200)),
    ErrorFrame: st.builds(
        ErrorFrame,
        st.text(max_size=30),
        st.text(max_size=200),
        st.none() | doc_ids,
        st.none() | seqs,
        st.booleans(),
    ),
}
frames: st.SearchStrategy[Frame] = st.one_of(*FRAMES.values())


def test_the_round_trip_covers_every_frame_type() -> None:
    assert set(FRAMES) == set(get_args(Frame))


@given(frames)
def test_every_frame_round_trips(frame: Frame) -> None:
    assert decode_frame(encode_frame(frame)) == frame


@given(doc_ids, blobs, st.none() | seqs)
def test_the_fan_out_encoder_matches(doc_id: DocId, update: bytes, seq: int | None) -> None:
    assert encode_update(doc_id, update, seq) == encode_frame(Update(doc_id, update, seq))


@pytest.mark.timeout(60)  # and never hangs
@given(st.binary(max_size=300) | frames.map(encode_frame).flatmap(_mutations))
def test_arbitrary_bytes_raise_only_protocol_error(data: bytes) -> None:
    """Random bytes, and valid frames with bytes changed, cut or added: decoding
    returns a frame or raises ProtocolError, nothing else."""
    with contextlib.suppress(ProtocolError):
        decode_frame(data, max_size=1 << 30)


raw_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.floats(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(
    st.sampled_from(
        [
            "hello",
            "welcome",
            "subscribe",
            "sync",
            "update",
            "ack",
            "unsubscribe",
            "awareness",
            "error",
            "auth",
            "other",
        ]
    ),
    st.dictionaries(
        st.sampled_from(
            [
                "doc",
                "update",
                "sv",
                "seq",
                "version",
                "replica",
                "token",
                "relay",
                "max_frame",
                "max_docs",
                "payload",
                "code",
                "message",
                "fatal",
            ]
        ),
        raw_values,
        max_size=6,
    ),
)
def test_wrong_field_types_raise_only_protocol_error(kind: str, fields: dict[str, object]) -> None:
    data = msgpack.packb({"type": kind, **fields})
    with contextlib.suppress(ProtocolError):
        decode_frame(data)


def test_size_limit_and_types() -> None:
    frame = encode_frame(Update(DocId("d"), b"x" * 2000, 1))
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decode_frame(frame, max_size=1024)
    with pytest.raises(ProtocolError, match="binary"):
        decode_frame("text")  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="state vector"):
        decode_frame(msgpack.packb({"type": "subscribe", "doc": "d", "sv": b"\x05\x01"}))
    with pytest.raises(ProtocolError, match="empty"):
        decode_frame(msgpack.packb({"type": "update", "doc": "d", "update": b""}))
    with pytest.raises(ProtocolError, match="integer"):
        decode_frame(msgpack.packb({"type": "ack", "doc": "d", "seq": True}))


def test_real_state_vectors_are_accepted() -> None:
    doc: pycrdt.Doc = pycrdt.Doc()
    doc.get("t", type=pycrdt.Text).insert(0, "hello")
    frame = Subscribe(DocId("d"), doc.get_state())
    assert decode_frame(encode_frame(frame)) == frame
