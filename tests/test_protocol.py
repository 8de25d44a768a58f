"""The frame codec: round trips, validation, and nothing but ProtocolError on bad bytes."""

from __future__ import annotations

import contextlib

import msgpack
import pycrdt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtsync.errors import ProtocolError
from crdtsync.ids import DocId, ReplicaId
from crdtsync.protocol import (
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
from crdtsync.statevector import encode_state_vector

doc_ids = st.text(min_size=1, max_size=40).map(DocId)
blobs = st.binary(min_size=1, max_size=200)
seqs = st.integers(min_value=1, max_value=(1 << 63) - 1)
state_vectors = st.dictionaries(st.integers(0, 2**32 - 1), st.integers(0, 2**40), max_size=5).map(
    encode_state_vector
)

frames: st.SearchStrategy[Frame] = st.one_of(
    st.builds(Hello, st.text(min_size=1, max_size=40).map(ReplicaId), st.none() | st.text()),
    st.builds(Welcome, st.text(max_size=40), st.integers(1024, 1 << 31), st.integers(1, 10**6)),
    st.builds(Subscribe, doc_ids, state_vectors),
    st.builds(Sync, doc_ids, blobs, state_vectors),
    st.builds(Update, doc_ids, blobs, st.none() | seqs),
    st.builds(Ack, doc_ids, seqs),
    st.builds(Unsubscribe, doc_ids),
    st.builds(Awareness, doc_ids, blobs),
    st.builds(Auth, st.text(min_size=1, max_size=200)),
    st.builds(
        ErrorFrame,
        st.text(max_size=30),
        st.text(max_size=200),
        st.none() | doc_ids,
        st.none() | seqs,
        st.booleans(),
    ),
)


@given(frames)
def test_every_frame_round_trips(frame: Frame) -> None:
    assert decode_frame(encode_frame(frame)) == frame


@given(doc_ids, blobs, st.none() | seqs)
def test_the_fan_out_encoder_matches(doc_id: DocId, update: bytes, seq: int | None) -> None:
    assert encode_update(doc_id, update, seq) == encode_frame(Update(doc_id, update, seq))


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_frame(data)


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
