"""The sans-I/O sessions and the relay's hub, driven by hand (tests/sim.py)."""

from __future__ import annotations

from collections.abc import Iterator

import msgpack
import pycrdt
import pytest

from crdtsync import Replica
from crdtsync.errors import ProtocolError
from crdtsync.events import DocumentSynced, RelayErrorReceived, StatusChanged, SyncStatus
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
    Welcome,
    decode_frame,
    encode_frame,
)
from crdtsync.sync.session import ClientSession
from relay.room import MAX_HELD
from relay.rooms import Hub
from relay.session import Limits, RelaySession
from relay.storage import StoredRoom, StoredUpdate

from .sim import SimNetwork, SimStorage

D = DocId("doc")


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    made = [Replica(":memory:") for _ in range(3)]
    yield made
    for replica in made:
        replica.close()


def text(replica: Replica, doc_id: str = D) -> pycrdt.Text:
    return replica.open(doc_id).get("t", type=pycrdt.Text)


def test_two_replicas_converge_and_acks_empty_the_outbox(replicas: list[Replica]) -> None:
    a, b, _ = replicas
    text(a).insert(0, "offline A ")
    text(b).insert(0, "offline B ")
    net = SimNetwork()
    ca, cb = net.client(a), net.client(b)
    net.connect(ca)
    net.connect(cb)
    net.run()
    assert str(text(a)) == str(text(b))
    assert "offline A" in str(text(a)) and "offline B" in str(text(a))
    assert a.pending(D) == b.pending(D) == 0
    assert ca.status is SyncStatus.SYNCED and cb.status is SyncStatus.SYNCED
    # Live: a change goes out as one UPDATE and comes back as an ACK.
    text(a).insert(0, "live ")
    assert ca.status is SyncStatus.SYNCING
    net.run()
    assert str(text(b)).startswith("live ")
    assert a.pending(D) == 0 and ca.is_synced(D)


def test_late_joiner_gets_everything_from_storage(replicas: list[Replica]) -> None:
    a, b, c = replicas
    storage = SimStorage()
    net = SimNetwork(storage)
    for replica, word in ((a, "alpha "), (b, "beta ")):
        text(replica).insert(0, word)
        net.connect(net.client(replica))
    net.run()
    net.restart_relay()  # the third replica loads the room from storage
    text(c)
    net.connect(net.client(c))
    net.run()
    assert doc_state(c.open(D)) == doc_state(a.open(D))
    assert str(text(c)) == str(text(a))


def test_offline_work_is_uploaded_as_one_diff(replicas: list[Replica]) -> None:
    a, b, _ = replicas
    t = text(a)
    for i in range(500):
        t.insert(len(t), f"{i} ")
    assert a.pending(D) == 500
    history = sum(len(entry.data) for entry in a.outbox(D))
    net = SimNetwork()
    net.connect(net.client(a))
    net.run()
    assert a.pending(D) == 0
    updates = [e.update for e in net.storage.log[D]]
    assert len(updates) == 1  # one UPDATE covering the outbox, not 500
    assert len(updates[0]) == len(a.open(D).get_update())
    assert len(updates[0]) * 5 < history
    text(b)
    net.connect(net.client(b))
    net.run()
    assert str(text(b)) == str(t)


def test_deletions_cross_even_when_state_vectors_are_equal(replicas: list[Replica]) -> None:
    a, b, _ = replicas
    net = SimNetwork()
    text(a).insert(0, "keep delete")
    ca, cb = net.client(a), net.client(b)
    text(b)
    net.connect(ca)
    net.connect(cb)
    net.run()
    net.disconnect(cb)
    del text(a)[4:]  # a delete-only change: a's state vector does not move
    net.run()
    net.connect(cb)
    net.run()
    assert str(text(b)) == "keep"


def test_unacknowledged_changes_are_resent_after_a_relay_crash(replicas: list[Replica]) -> None:
    a, b, _ = replicas
    storage = SimStorage()
    net = SimNetwork(storage)
    ca = net.client(a)
    net.connect(ca)
    net.run()
    text(a).insert(0, "lost in flight")
    link = net.links[ca]
    link.up.extend(ca.frames_to_send())
    net.restart_relay()  # the frame never reached the relay
    assert a.pending(D) == 1
    net.connect(ca)
    text(b)
    net.connect(net.client(b))
    net.run()
    assert a.pending(D) == 0
    assert str(text(b)) == "lost in flight"


def test_status_and_synced_events(replicas: list[Replica]) -> None:
    a = replicas[0]
    text(a).insert(0, "x")
    net = SimNetwork()
    ca = net.client(a)
    assert ca.status is SyncStatus.OFFLINE
    net.connect(ca)
    assert ca.status is SyncStatus.CONNECTING
    net.run()
    events = ca.events()
    statuses = [e.status for e in events if isinstance(e, StatusChanged)]
    assert statuses == [SyncStatus.CONNECTING, SyncStatus.SYNCING, SyncStatus.SYNCED]
    assert DocumentSynced(D, True) in events
    net.disconnect(ca)
    assert ca.status is SyncStatus.OFFLINE and not ca.is_synced(D)


# -- the relay session refuses bad input --------------------------------------------------


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


# -- the hub: validation before storage and fan-out ---------------------------------------


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


def test_client_session_rejects_a_relay_that_breaks_the_protocol(replicas: list[Replica]) -> None:
    a = replicas[0]
    session = ClientSession(a, a.replica_id)
    session.connected()
    with pytest.raises(ProtocolError, match="before WELCOME"):
        session.receive(encode_frame(Sync(D, b"\x00\x00", b"\x00")))
    with pytest.raises(ProtocolError):
        session.receive(b"\xc1")
    with pytest.raises(ProtocolError, match="does not send"):
        session.receive(encode_frame(Subscribe(D, b"\x00")))


def test_relay_error_is_reported_and_keeps_the_outbox(replicas: list[Replica]) -> None:
    a = replicas[0]
    text(a).insert(0, "x")
    net = SimNetwork()
    ca = net.client(a)
    net.connect(ca)
    net.run()
    ca.events()
    ca.receive_frame(ErrorFrame(ErrorCode.INVALID_UPDATE, "no", D, 1))
    assert isinstance(ca.events()[0], RelayErrorReceived)
    assert ca.is_blocked(D)


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


# -- regressions found in review ------------------------------------------------------------


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


def test_a_sync_larger_than_the_queue_budget_is_still_sent() -> None:
    session = RelaySession("relay", Limits(max_frame=1024, max_queued_bytes=4096))
    hello(session)
    session.sync(D, b"x" * 100_000, b"\x00")
    assert session.close is None and len(session.frames_to_send()) == 1


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
