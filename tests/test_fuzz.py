"""Fuzzing the relay's inputs with hypothesis: arbitrary bytes, and valid frames
(native and y-websocket) whose bytes or update payloads are mutated.

Properties: the frame decoders raise only ``ProtocolError``; the hub never
raises whatever one connection sends; no other connection is closed or
starved; and storage only ever changes through valid updates (everything
stored replays, in order, into exactly the room's document).

The ``thorough`` profile (``CRDTSYNC_HYPOTHESIS_PROFILE=thorough``) runs many
more examples; see the README for how long it ran and what it found.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pycrdt
from hypothesis import given
from hypothesis import strategies as st

from crdtsync.errors import ProtocolError
from crdtsync.ids import DocId, ReplicaId
from crdtsync.statevector import doc_state
from crdtsync.sync.protocol import (
    Auth,
    Awareness,
    Hello,
    Subscribe,
    Unsubscribe,
    Update,
    decode_frame,
    encode_frame,
)
from relay.presence import AwarenessEntry, encode_awareness
from relay.room import replay
from relay.rooms import Hub
from relay.session import Limits
from relay.storage import StoredRoom, StoredUpdate
from relay.yjs import YjsSession, decode_message, encode_awareness_message, encode_update_message

D = DocId("doc")
LIMITS = Limits(max_updates_per_second=0, max_bytes_per_second=0)


def _updates() -> list[bytes]:
    """A few real, chained updates (text, map, array, nested) to mutate."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=1234)
    out = []
    for step in range(4):
        before = doc.get_state()
        with doc.transaction():
            doc.get("t", type=pycrdt.Text).insert(0, f"s{step}")
            doc.get("m", type=pycrdt.Map)[f"k{step}"] = step
            if step == 2:
                doc.get("a", type=pycrdt.Array).append(pycrdt.Map({"nested": "x"}))
            if step == 3:
                del doc.get("t", type=pycrdt.Text)[0:2]
        out.append(doc.get_update(before))
    return out


UPDATES = _updates()


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few byte flips, a truncation, an insertion or a deletion."""
    buffer = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        if kind == "flip" and buffer:
            at = draw(st.integers(0, len(buffer) - 1))
            buffer[at] = draw(st.integers(0, 255))
        elif kind == "truncate" and buffer:
            del buffer[draw(st.integers(0, len(buffer) - 1)) :]
        elif kind == "insert":
            at = draw(st.integers(0, len(buffer)))
            buffer[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif buffer:
            at = draw(st.integers(0, len(buffer) - 1))
            del buffer[at : at + draw(st.integers(1, 4))]
    return bytes(buffer)


def _update_payloads() -> st.SearchStrategy[bytes]:
    real = st.sampled_from(UPDATES)
    return st.one_of(real, real.flatmap(mutated), st.binary(max_size=64))


def native_frames() -> st.SearchStrategy[bytes]:
    """Attacker frames: valid frames with garbage inside, mutated encodings, noise."""
    awareness = encode_awareness([AwarenessEntry(99, 1, '{"user":"x"}')])
    valid = st.one_of(
        st.builds(
            lambda u, seq: encode_frame(Update(D, u, seq)),
            _update_payloads(),
            st.one_of(st.none(), st.integers(1, 5)),
        ),
        st.just(encode_frame(Subscribe(D, b"\x00"))),
        st.just(encode_frame(Unsubscribe(D))),
        st.just(encode_frame(Awareness(D, awareness))),
        st.sampled_from([awareness, b"\x01"])
        .flatmap(mutated)
        .map(lambda p: encode_frame(Awareness(D, p))),
        st.just(encode_frame(Hello(ReplicaId("again")))),
        st.just(encode_frame(Auth("token"))),
    )
    return st.one_of(valid, valid.flatmap(mutated), st.binary(max_size=64))


def yjs_messages() -> st.SearchStrategy[bytes]:
    awareness = encode_awareness([AwarenessEntry(77, 1, '{"c":1}')])
    valid = st.one_of(
        _update_payloads().map(encode_update_message),
        st.just(b"\x00\x00\x01\x00"),
        st.just(encode_awareness_message(awareness)),
        st.just(b"\x03"),
    )
    return st.one_of(valid, valid.flatmap(mutated), st.binary(max_size=64))


@given(native_frames())
def test_native_decoder_raises_only_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_frame(data)


@given(yjs_messages())
def test_yjs_decoder_raises_only_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_message(data)


class World:
    """A hub with one honest native client, one honest Yjs client and storage."""

    def __init__(self) -> None:
        self.stored: list[StoredUpdate] = []
        self.hub = Hub("fuzz", LIMITS)
        self.hub.on_load = lambda doc_id: self.hub.loaded(doc_id, StoredRoom(doc_id, None, 0, []))
        self.honest = self.hub.open_session("honest")
        self.hub.receive(self.honest, encode_frame(Hello(ReplicaId("honest"))))
        self.hub.receive(self.honest, encode_frame(Subscribe(D, b"\x00")))
        self.browser = self.hub.open_session("browser", kind=YjsSession, doc_id=D)
        self.commit()

    def commit(self) -> None:
        writes = self.hub.take_writes()
        ids = list(range(len(self.stored) + 1, len(self.stored) + 1 + len(writes)))
        self.stored.extend(StoredUpdate(i, w.update) for i, w in zip(ids, writes, strict=True))
        self.hub.written(writes, ids)

    def check(self) -> None:
        self.commit()
        for session in (self.honest, self.browser):
            assert session.close is None, session.close
            session.frames_to_send()
        # The honest client still gets through.
        doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=4242)
        doc.get("m", type=pycrdt.Map)["honest"] = len(self.stored)
        self.hub.receive(self.honest, encode_frame(Update(D, doc.get_update(), None)))
        self.commit()
        assert self.browser.frames_to_send()  # fanned out to the other honest client
        room = self.hub.rooms[D]
        assert room.doc.get("m", type=pycrdt.Map)["honest"] == len(self.stored) - 1
        # Storage changed only through valid updates: it replays to the room.
        replayed = replay(StoredRoom(D, None, 0, list(self.stored)))
        rebuilt, held = replayed.doc, replayed.held
        assert doc_state(rebuilt) == doc_state(room.doc)
        assert len(held) == len(room.live.held)


@given(st.lists(native_frames(), min_size=1, max_size=12))
def test_a_native_attacker_cannot_hurt_the_others_or_storage(frames: list[bytes]) -> None:
    world = World()
    attacker = world.hub.open_session("attacker")
    world.hub.receive(attacker, encode_frame(Hello(ReplicaId("attacker"))))
    world.hub.receive(attacker, encode_frame(Subscribe(D, b"\x00")))
    for data in frames:
        world.hub.receive(attacker, data)  # never raises
        world.commit()
    world.check()


@given(st.lists(yjs_messages(), min_size=1, max_size=12))
def test_a_yjs_attacker_cannot_hurt_the_others_or_storage(messages: list[bytes]) -> None:
    world = World()
    attacker = world.hub.open_session("attacker", kind=YjsSession, doc_id=D)
    for data in messages:
        world.hub.receive(attacker, data)
        world.commit()
    world.check()
