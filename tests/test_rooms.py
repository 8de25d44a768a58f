"""The relay's rooms (:mod:`relay.rooms`, :mod:`relay.room`) driven by hand: validation
before storage and fan-out, holding, loads, storage failures and their bookkeeping."""

from __future__ import annotations

import pycrdt

from crdtsync import Replica
from crdtsync.ids import DocId, ReplicaId
from crdtsync.statevector import doc_state
from crdtsync.sync.protocol import (
    Ack,
    ErrorCode,
    ErrorFrame,
    Hello,
    Subscribe,
    Sync,
    Update,
    decode_frame,
    encode_frame,
)
from relay.room import MAX_HELD
from relay.rooms import Hub
from relay.session import RelaySession
from relay.storage import StoredRoom, StoredUpdate

from .sim import SimNetwork, text

D = DocId("doc")


def test_garbage_update_is_refused_and_nothing_stored(replicas: list[Replica]) -> None:
    a, b, _ = replicas
    net = SimNetwork()
    ca, cb = net.client(a), net.client(b)
    text(a).insert(0, "before")
    text(b)
    net.connect(ca)
    net.connect(cb)
    net.run()
    stored = list(net.storage.log[D])
    evil = net.hub.open_session("evil")
    net.hub.receive(evil, encode_frame(Hello(ReplicaId("evil"))))
    net.hub.receive(evil, encode_frame(Subscribe(D, b"\x00")))
    net.hub.receive(evil, encode_frame(Update(D, b"\x01\x02\x03garbage", 1)))
    frames = [decode_frame(f) for f in evil.frames_to_send()]
    [error] = [f for f in frames if isinstance(f, ErrorFrame)]
    assert (error.code, error.seq) == (ErrorCode.INVALID_UPDATE, 1)
    assert net.hub.take_writes() == []
    assert net.storage.log[D] == stored
    # The others keep syncing.
    text(a).insert(0, "after ")
    net.run()
    assert str(text(b)) == "after before"


def test_a_refused_update_is_never_acknowledged_later(replicas: list[Replica]) -> None:
    hub = Hub("relay")
    session = hub.open_session()
    hub.receive(session, encode_frame(Hello(ReplicaId("r"))))
    hub.receive(session, encode_frame(Subscribe(D, b"\x00")))
    doc: pycrdt.Doc = pycrdt.Doc()
    doc.get("t", type=pycrdt.Text).insert(0, "ok")
    hub.loaded(D, StoredRoom(D, None, 0, []))
    hub.receive(session, encode_frame(Update(D, b"garbage", 1)))
    hub.receive(session, encode_frame(Update(D, doc.get_update(), 2)))
    writes = hub.take_writes()
    hub.written(writes, list(range(1, len(writes) + 1)))
    frames = [decode_frame(f) for f in session.frames_to_send()]
    assert not [f for f in frames if isinstance(f, Ack)]  # ACK 2 would cover the refused 1
    assert any(isinstance(f, ErrorFrame) and f.seq == 1 for f in frames)


def test_the_relay_holds_updates_whose_dependencies_are_missing() -> None:
    source: pycrdt.Doc = pycrdt.Doc(client_id=7)
    t = source.get("t", type=pycrdt.Text)
    updates: list[bytes] = []
    source.observe(lambda event: updates.append(event.update))
    t.insert(0, "a")
    t.insert(1, "b")
    hub = Hub("relay")
    writer, reader = hub.open_session(), hub.open_session()
    for session in (writer, reader):
        hub.receive(session, encode_frame(Hello(ReplicaId("r"))))
        hub.receive(session, encode_frame(Subscribe(D, b"\x00")))
    hub.loaded(D, StoredRoom(D, None, 0, []))
    reader.frames_to_send()
    hub.receive(writer, encode_frame(Update(D, updates[1], None)))  # "b" before "a"
    assert reader.frames_to_send() == []  # held, not fanned out
    assert len(hub.take_writes()) == 1  # but stored
    hub.receive(writer, encode_frame(Update(D, updates[0], None)))
    delivered = [decode_frame(f) for f in reader.frames_to_send()]
    assert [f.update for f in delivered if isinstance(f, Update)] == updates
    assert str(hub.rooms[D].doc.get("t", type=pycrdt.Text)) == "ab"


def test_after_a_failed_write_the_room_is_reloaded_so_the_resend_is_stored(
    replicas: list[Replica],
) -> None:
    """Regression: the room had integrated the update whose write failed, so the
    client's resend (a diff against the room's state vector) carried nothing and
    was acknowledged without the content ever reaching storage."""
    a, b, _ = replicas
    net = SimNetwork()
    ca = net.client(a)
    text(a)
    net.connect(ca)
    net.run()
    text(a).insert(0, "must be stored")
    net.links[ca].up.extend(ca.frames_to_send())
    link = net.links[ca]
    while link.up:
        net.hub.receive(link.relay, link.up.popleft())
    net.hub.write_failed(net.hub.take_writes(), OSError("disk full"))
    assert D not in net.hub.rooms  # dropped: it holds what storage lacks
    net.run()  # the relay closed the connection
    assert ca not in net.links and a.pending(D) == 1
    net.connect(ca)
    net.run()
    assert a.pending(D) == 0
    net.restart_relay()  # only what storage has survives
    text(b)
    net.connect(net.client(b))
    net.run()
    assert str(text(b)) == "must be stored"


def test_subscribers_wait_while_the_room_loads_and_never_see_it_empty() -> None:
    source: pycrdt.Doc = pycrdt.Doc(client_id=3)
    source.get("t", type=pycrdt.Text).insert(0, "stored before")
    stored_update = source.get_update()
    loads: list[DocId] = []
    hub = Hub("relay", on_load=loads.append)
    first, second = hub.open_session(), hub.open_session()
    for session in (first, second):
        hub.receive(session, encode_frame(Hello(ReplicaId("r"))))
        session.frames_to_send()
        hub.receive(session, encode_frame(Subscribe(D, b"\x00")))
    source.get("t", type=pycrdt.Text).insert(0, "new: ")
    hub.receive(
        first, encode_frame(Update(D, source.get_update(pycrdt.get_state(stored_update)), 1))
    )
    assert loads == [D]  # loaded once, for both
    assert first.frames_to_send() == second.frames_to_send() == []  # nothing before the load
    hub.loaded(D, StoredRoom(D, None, 0, [StoredUpdate(1, stored_update)]))
    sync, update = (decode_frame(f) for f in second.frames_to_send())
    assert isinstance(sync, Sync) and isinstance(update, Update)  # in the order received
    doc: pycrdt.Doc = pycrdt.Doc()
    doc.apply_update(sync.update)
    assert str(doc.get("t", type=pycrdt.Text)) == "stored before"
    doc.apply_update(update.update)
    assert str(doc.get("t", type=pycrdt.Text)) == "new: stored before"
    assert str(hub.rooms[D].doc.get("t", type=pycrdt.Text)) == "new: stored before"


def _ready_hub(*names: str) -> tuple[Hub, list[RelaySession]]:
    hub = Hub("relay")
    sessions = []
    for name in names:
        session = hub.open_session(name)
        hub.receive(session, encode_frame(Hello(ReplicaId(name))))
        hub.receive(session, encode_frame(Subscribe(D, b"\x00")))
        sessions.append(session)
    hub.loaded(D, StoredRoom(D, None, 0, []))
    for session in sessions:
        session.frames_to_send()
    return hub, sessions


def _lp(text: str) -> bytes:
    data = text.encode()
    return bytes([len(data)]) + data


# Client 2 from clock 5 (a gap): "ab" into root text "t", then "c" whose parent is the
# string item <2#0>: pycrdt integrates "ab", then raises. Crafted by the reviewer.
CRAFTED_GAPPED = (
    bytes([1, 2, 2, 5, 0x04, 1]) + _lp("t") + _lp("ab") + bytes([0x04, 0, 2, 0]) + _lp("c") + b"\0"
)


def test_a_held_update_refused_on_release_still_sends_what_the_room_integrated() -> None:
    hub, (writer, reader) = _ready_hub("writer", "reader")
    hub.receive(writer, encode_frame(Update(D, CRAFTED_GAPPED, 1)))
    dep: pycrdt.Doc = pycrdt.Doc(client_id=2)
    dep.get("x", type=pycrdt.Text).insert(0, "12345")
    hub.receive(writer, encode_frame(Update(D, dep.get_update(), 2)))
    got: pycrdt.Doc = pycrdt.Doc()
    for frame in map(decode_frame, reader.frames_to_send()):
        if isinstance(frame, Update):
            got.apply_update(frame.update)
    assert doc_state(got) == doc_state(hub.rooms[D].doc)  # the reader did not diverge


def test_held_updates_are_bounded_per_room() -> None:
    hub, (writer,) = _ready_hub("writer")
    for client in range(MAX_HELD + 5):  # each waits for clock 0 of its own client
        gapped = bytes([1, 1]) + _varuint(1000 + client) + bytes([1, 0x04, 1]) + _lp("t")
        hub.receive(writer, encode_frame(Update(D, gapped + _lp("y") + b"\0", client + 1)))
    assert len(hub.rooms[D].live.held) == MAX_HELD
    errors = [f for f in map(decode_frame, writer.frames_to_send()) if isinstance(f, ErrorFrame)]
    assert len(errors) == 5 and all(e.code == ErrorCode.INVALID_UPDATE for e in errors)


def _varuint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def test_a_stored_snapshot_pycrdt_refuses_fails_the_load_instead_of_hanging() -> None:
    loads: list[DocId] = []
    hub = Hub("relay", on_load=loads.append)
    session = hub.open_session()
    hub.receive(session, encode_frame(Hello(ReplicaId("r"))))
    hub.receive(session, encode_frame(Subscribe(D, b"\x00")))
    hub.loaded(D, StoredRoom(D, b"\x01\x01\xff", 0, []))
    assert D not in hub.rooms
    assert session.close is not None  # the client reconnects after a backoff and retries


def test_a_remote_update_arriving_while_the_room_loads_is_not_stored_again() -> None:
    loads: list[DocId] = []
    hub = Hub("relay", on_load=loads.append)
    session = hub.open_session()
    hub.receive(session, encode_frame(Hello(ReplicaId("r"))))
    hub.receive(session, encode_frame(Subscribe(D, b"\x00")))
    source: pycrdt.Doc = pycrdt.Doc()
    source.get("t", type=pycrdt.Text).insert(0, "from another relay process")
    hub.remote_update(D, source.get_update())
    hub.loaded(D, StoredRoom(D, None, 0, []))
    assert hub.take_writes() == []
    assert str(hub.rooms[D].doc.get("t", type=pycrdt.Text)) == "from another relay process"


def test_bookkeeping_of_writes_survives_a_room_reload() -> None:
    hub, (writer,) = _ready_hub("writer")
    source: pycrdt.Doc = pycrdt.Doc()
    text = source.get("t", type=pycrdt.Text)
    text.insert(0, "a")
    hub.receive(writer, encode_frame(Update(D, source.get_update(), 1)))
    in_flight = hub.take_writes()  # a commit is running with this one
    text.insert(1, "b")
    hub.receive(writer, encode_frame(Update(D, source.get_update(), 2)))
    hub.write_failed(hub.take_writes(), OSError("disk full"))  # drops the room
    other = hub.open_session()
    hub.receive(other, encode_frame(Hello(ReplicaId("o"))))
    hub.receive(other, encode_frame(Subscribe(D, b"\x00")))
    hub.loaded(D, StoredRoom(D, None, 0, []))
    hub.written(in_flight, [1])  # the old room's commit completes
    assert hub.rooms[D].writes_in_flight == 0
    hub.close_session(other)
    hub.unload_idle(0.0, 10.0)
    assert hub.unload_idle(100.0, 10.0) == [D]


def test_an_update_pycrdt_refuses_part_way_stores_and_sends_only_what_it_integrated() -> None:
    # Client 2 from clock 0: "ab" into root text "t", then "c" whose parent is the
    # string item <2#0>: pycrdt integrates "ab" and then raises.
    crafted = (
        bytes([1, 2, 2, 0, 0x04, 1]) + _lp("t") + _lp("ab") + bytes([0x04, 0, 2, 0]) + _lp("c")
    ) + b"\0"
    hub, (writer, reader) = _ready_hub("writer", "reader")
    hub.receive(writer, encode_frame(Update(D, crafted, 1)))
    writes = hub.take_writes()
    assert [w.seq for w in writes] == [None]  # stored, but its ACK is withheld
    hub.written(writes, [1])
    frames = [decode_frame(f) for f in writer.frames_to_send()]
    assert not [f for f in frames if isinstance(f, Ack)]
    [error] = [f for f in frames if isinstance(f, ErrorFrame)]
    assert (error.code, error.seq) == (ErrorCode.INVALID_UPDATE, 1)
    got: pycrdt.Doc = pycrdt.Doc()
    for frame in map(decode_frame, reader.frames_to_send()):
        if isinstance(frame, Update):
            got.apply_update(frame.update)
    room = hub.rooms[D].doc
    assert doc_state(got) == doc_state(room)  # the reader has exactly what the room has
    stored: pycrdt.Doc = pycrdt.Doc()
    stored.apply_update(writes[0].update)
    assert doc_state(stored) == doc_state(room)  # and so does storage
