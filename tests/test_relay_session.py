"""The relay's side of one connection (:mod:`relay.session`): bad frames get an ERROR
not an exception, HELLO first, versions, subscriptions and the output budget."""

from __future__ import annotations

import msgpack
import pytest

from crdtsync.ids import DocId, ReplicaId
from crdtsync.sync.protocol import (
    ErrorCode,
    ErrorFrame,
    Hello,
    Subscribe,
    Update,
    Welcome,
    decode_frame,
    encode_frame,
)
from relay.session import Limits, RelaySession

D = DocId("doc")


def hello(session: RelaySession) -> None:
    assert session.receive(encode_frame(Hello(ReplicaId("r")))) == [Hello(ReplicaId("r"))]
    assert isinstance(decode_frame(session.frames_to_send()[0]), Welcome)


def errors(session: RelaySession) -> list[ErrorFrame]:
    return [f for f in map(decode_frame, session.frames_to_send()) if isinstance(f, ErrorFrame)]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"garbage",
        msgpack.packb([1, 2, 3]),
        msgpack.packb({"type": "update"}),
        msgpack.packb({"type": "update", "doc": 5, "update": b"x"}),
        msgpack.packb({"type": "update", "doc": "d", "update": "text, not bytes"}),
        msgpack.packb({"type": "subscribe", "doc": "d", "sv": b"\xff\xff"}),
        msgpack.packb({"type": "nope"}),
        msgpack.packb({"type": "ack", "doc": "d", "seq": -1}),
        msgpack.packb({"type": "update", "doc": "x" * 600, "update": b"x"}),
        msgpack.packb({"type": "update", "doc": "d", "update": b"x", "seq": 2**64 - 1}),
    ],
)
def test_bad_frames_get_an_error_not_an_exception(data: bytes) -> None:
    session = RelaySession("relay")
    hello(session)
    assert session.receive(data) == []
    [error] = errors(session)
    assert error.code == ErrorCode.BAD_FRAME and not error.fatal
    assert session.close is None


def test_anything_but_hello_first_closes() -> None:
    session = RelaySession("relay")
    assert session.receive(encode_frame(Subscribe(D, b"\x00"))) == []
    assert session.close is not None and "hello" in session.close.reason
    [error] = errors(session)
    assert error.fatal


def test_unsupported_version_is_fatal() -> None:
    session = RelaySession("relay")
    session.receive(encode_frame(Hello(ReplicaId("r"), version=99)))
    [error] = errors(session)
    assert error.code == ErrorCode.UNSUPPORTED_VERSION and error.fatal


def test_update_for_a_document_not_subscribed() -> None:
    session = RelaySession("relay")
    hello(session)
    assert session.receive(encode_frame(Update(D, b"\x00\x00", 3))) == []
    [error] = errors(session)
    assert (error.code, error.doc_id, error.seq) == (ErrorCode.NOT_SUBSCRIBED, D, 3)


def test_too_many_documents() -> None:
    session = RelaySession("relay", Limits(max_docs=2))
    hello(session)
    for name in "abc":
        session.receive(encode_frame(Subscribe(DocId(name), b"\x00")))
    [error] = errors(session)
    assert (error.code, error.doc_id) == (ErrorCode.TOO_MANY_DOCUMENTS, "c")
    assert session.subscriptions == {"a", "b"}


def test_slow_consumer_is_closed() -> None:
    closed = []
    session = RelaySession(
        "relay", Limits(max_frame=1024, max_queued_bytes=4096), on_output=lambda: None
    )
    hello(session)
    for _ in range(100):
        session.push(b"x" * 100)
    closed.append(session.close)
    assert session.close is not None and "slow_consumer" in session.close.reason
    [error] = errors(session)
    assert error.code == ErrorCode.SLOW_CONSUMER


def test_a_sync_larger_than_the_queue_budget_is_still_sent() -> None:
    session = RelaySession("relay", Limits(max_frame=1024, max_queued_bytes=4096))
    hello(session)
    session.sync(D, b"x" * 100_000, b"\x00")
    assert session.close is None and len(session.frames_to_send()) == 1
