"""The y-websocket protocol without sockets (:mod:`relay.yjs`): the message codec, and
:class:`~relay.yjs.YjsSession` inside the hub next to native sessions."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pycrdt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtsync.errors import ProtocolError
from crdtsync.ids import DocId
from crdtsync.sync.protocol import (
    Awareness,
    ErrorFrame,
    Hello,
    Subscribe,
    Update,
    decode_frame,
    encode_frame,
)
from relay.presence import AwarenessEntry, decode_awareness, encode_awareness
from relay.rooms import Hub
from relay.session import RelaySession
from relay.storage import StoredRoom, StoredUpdate
from relay.yjs import (
    MESSAGE_AWARENESS,
    MESSAGE_QUERY_AWARENESS,
    MESSAGE_SYNC,
    SYNC_STEP1,
    SYNC_STEP2,
    SYNC_UPDATE,
    YjsSession,
    decode_message,
    encode_awareness_message,
    encode_sync_step1,
    encode_sync_step2,
    encode_update_message,
)

D = DocId("doc")


def _text_update(text: str, client_id: int = 7) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    doc.get("t", type=pycrdt.Text).insert(0, text)
    return doc.get_update()


def _awareness(client_id: int, clock: int, state: object) -> bytes:
    return encode_awareness([AwarenessEntry(client_id, clock, json.dumps(state))])


@given(st.binary(max_size=200))
def test_update_messages_round_trip(payload: bytes) -> None:
    assert decode_message(encode_update_message(payload)) == (MESSAGE_SYNC, SYNC_UPDATE, payload)
    assert decode_message(encode_sync_step1(payload)) == (MESSAGE_SYNC, SYNC_STEP1, payload)
    assert decode_message(encode_sync_step2(payload)) == (MESSAGE_SYNC, SYNC_STEP2, payload)
    assert decode_message(encode_awareness_message(payload)) == (MESSAGE_AWARENESS, None, payload)


def test_query_awareness_has_no_payload() -> None:
    assert decode_message(b"\x03") == (MESSAGE_QUERY_AWARENESS, None, b"")


@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_message(data)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "truncated"),
        (b"\x00", "truncated"),
        (b"\x00\x02\x05ab", "truncated"),
        (b"\x00\x02" + b"\xff" * 12, "too long"),  # y-websocket#95: one bad varint
        (b"\x00\x07\x00", "unknown sync message step"),
        (b"\x09", "unknown y-protocols message type"),
        (b"\x02\x00", "auth messages go from the relay"),
        (b"\x00\x02\x01a!", "trailing"),
    ],
)
def test_malformed_messages(data: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        decode_message(data)


def _hub() -> tuple[Hub, list[tuple[DocId, bytes]], list[float]]:
    now = [0.0]
    stored: list[tuple[DocId, bytes]] = []
    hub = Hub("relay", clock=lambda: now[0])
    hub.on_load = lambda doc_id: hub.loaded(doc_id, StoredRoom(doc_id, None, 0, []))
    return hub, stored, now


def _commit(hub: Hub, stored: list[tuple[DocId, bytes]]) -> None:
    writes = hub.take_writes()
    start = len(stored)
    stored.extend((w.doc_id, w.update) for w in writes)
    hub.written(writes, list(range(start + 1, start + 1 + len(writes))))


def _native(hub: Hub, name: str) -> RelaySession:
    session = hub.open_session(name)
    hub.receive(session, encode_frame(Hello(name)))
    hub.receive(session, encode_frame(Subscribe(D, b"\x00")))
    session.frames_to_send()
    return session


def test_a_yjs_session_joins_syncs_and_shares_updates_with_native_sessions() -> None:
    hub, stored, _ = _hub()
    native = _native(hub, "native")
    hub.receive(native, _native_update(_text_update("from python", 1)))
    _commit(hub, stored)
    native.frames_to_send()

    yjs = hub.open_session("browser", kind=YjsSession, doc_id=D)
    (hello,) = yjs.frames_to_send()
    kind, step, _ = decode_message(hello)
    assert (kind, step) == (MESSAGE_SYNC, SYNC_STEP1)  # the relay's state vector first
    ydoc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=2)
    hub.receive(yjs, encode_sync_step1(ydoc.get_state()))
    (answer,) = yjs.frames_to_send()
    kind, step, update = decode_message(answer)
    assert step == SYNC_STEP2
    ydoc.apply_update(update)
    assert str(ydoc.get("t", type=pycrdt.Text)) == "from python"

    # The client's answer to step 1 and its later edits reach the native client, stored.
    before = ydoc.get_state()
    ydoc.get("t", type=pycrdt.Text).insert(0, "yjs + ")
    hub.receive(yjs, encode_update_message(ydoc.get_update(before)))
    (frame,) = native.frames_to_send()
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(stored[0][1])
    decoded = decode_frame(frame)
    assert isinstance(decoded, Update)
    doc.apply_update(decoded.update)
    assert str(doc.get("t", type=pycrdt.Text)) == "yjs + from python"
    _commit(hub, stored)
    assert len(stored) == 2
    assert yjs.frames_to_send() == []  # no ACK on y-protocols

    # An empty step 2 ("nothing to add") is neither stored nor sent.
    hub.receive(yjs, encode_sync_step2(b"\x00\x00"))
    assert hub.writes_waiting == 0 and native.frames_to_send() == []


def _native_update(update: bytes, seq: int = 1) -> bytes:
    return encode_frame(Update(D, update, seq))


def test_garbage_from_a_yjs_client_closes_only_that_connection() -> None:
    hub, stored, _ = _hub()
    native = _native(hub, "native")
    bad = hub.open_session("bad", kind=YjsSession, doc_id=D)
    good = hub.open_session("good", kind=YjsSession, doc_id=D)
    for session in (bad, good):
        session.frames_to_send()
    hub.receive(bad, b"\x00\x02" + b"\xff" * 11)
    assert bad.close is not None and bad.close.code == 1002
    assert "bad_frame" in bad.close.reason
    hub.close_session(bad)
    # A well-formed message whose update is garbage: closed with 1007.
    worse = hub.open_session("worse", kind=YjsSession, doc_id=D)
    hub.receive(worse, encode_update_message(b"\x01\x02\x03garbage"))
    assert worse.close is not None and worse.close.code == 1007
    hub.close_session(worse)
    assert hub.writes_waiting == 0 and stored == []
    hub.receive(good, encode_update_message(_text_update("fine")))
    assert good.close is None and native.close is None
    assert len(native.frames_to_send()) == 1


def test_presence_crosses_protocols_and_leaves_with_the_connection() -> None:
    hub, _, now = _hub()
    native = _native(hub, "native")
    yjs = hub.open_session("browser", kind=YjsSession, doc_id=D)
    yjs.frames_to_send()
    hub.receive(yjs, encode_awareness_message(_awareness(42, 1, {"user": "ana"})))
    (frame,) = native.frames_to_send()
    received = decode_frame(frame)
    assert isinstance(received, Awareness)
    assert decode_awareness(received.payload)[0].state == '{"user": "ana"}'

    # A newcomer gets the current states right after its sync.
    late = hub.open_session("late", kind=YjsSession, doc_id=D)
    _, states = late.frames_to_send()
    assert decode_message(states)[0] == MESSAGE_AWARENESS
    # query awareness: answered with every state.
    hub.receive(late, b"\x03")
    (answer,) = late.frames_to_send()
    assert decode_awareness(decode_message(answer)[2])[0].client_id == 42

    # Native presence reaches the Yjs clients; malformed presence is refused.
    hub.receive(native, encode_frame(Awareness(D, _awareness(7, 0, {"user": "py"}))))
    assert [decode_message(m)[0] for m in yjs.frames_to_send()] == [MESSAGE_AWARENESS]
    late.frames_to_send()
    hub.receive(native, encode_frame(Awareness(D, b"\x01\x07\x00\x03{x}")))
    assert yjs.frames_to_send() == [] and native.close is None
    (error,) = native.frames_to_send()
    refused = decode_frame(error)
    assert isinstance(refused, ErrorFrame) and "malformed awareness" in refused.message

    # The browser disconnects: everyone is told its client left.
    hub.close_session(yjs)
    (gone,) = native.frames_to_send()
    removal = decode_frame(gone)
    assert isinstance(removal, Awareness)
    assert decode_awareness(removal.payload) == [AwarenessEntry(42, 1, "null")]
    # The native client goes silent for 30 s: it times out.
    late.frames_to_send()
    now[0] = 31.0
    assert hub.expire_awareness(now[0]) == 1
    (timeout,) = late.frames_to_send()
    assert decode_awareness(decode_message(timeout)[2]) == [AwarenessEntry(7, 0, "null")]


def test_a_yjs_session_joining_a_loading_room_waits_for_it() -> None:
    loads: list[DocId] = []
    hub = Hub("relay", on_load=loads.append)
    yjs = hub.open_session("early", kind=YjsSession, doc_id=D)
    hub.receive(yjs, encode_update_message(_text_update("early")))
    assert yjs.frames_to_send() == [] and loads == [D]
    hub.loaded(D, StoredRoom(D, None, 0, [StoredUpdate(1, _text_update("old", 9))]))
    (step1,) = yjs.frames_to_send()
    assert decode_message(step1)[1] == SYNC_STEP1
    assert hub.writes_waiting == 1
