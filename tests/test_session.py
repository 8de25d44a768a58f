"""The client's sans-I/O session (:mod:`crdtsync.sync.session`) against the relay's
hub on the simulated network (tests/sim.py): convergence, one-diff uploads, resends,
status, and what the client does with a relay that errs."""

from __future__ import annotations

import pytest

from crdtsync import Replica
from crdtsync.errors import ProtocolError
from crdtsync.events import (
    DocumentOverLimit,
    DocumentSynced,
    RelayErrorReceived,
    StatusChanged,
    SyncStatus,
)
from crdtsync.ids import DocId
from crdtsync.statevector import doc_state
from crdtsync.sync.protocol import (
    ErrorCode,
    ErrorFrame,
    Subscribe,
    Sync,
    Welcome,
    encode_frame,
)
from crdtsync.sync.session import ClientSession
from relay.limits import Limits

from .sim import SimNetwork, SimStorage, text

D = DocId("doc")


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


def _over_limit(events: list[object]) -> list[DocumentOverLimit]:
    return [e for e in events if isinstance(e, DocumentOverLimit)]


def test_documents_beyond_the_relays_limit_are_reported_and_do_not_hold_the_status(
    replicas: list[Replica],
) -> None:
    a = replicas[0]
    seen: list[object] = []
    a.observe(seen.append)
    for i in range(5):
        text(a, f"doc-{i}").insert(0, f"text {i}")  # opened before connecting
    net = SimNetwork(limits=Limits(max_docs=3))
    client = net.client(a)
    net.connect(client)
    net.run()
    beyond = _over_limit(client.events())
    assert [e.doc_id for e in beyond] == ["doc-3", "doc-4"]
    assert all(e.limit == 3 and "--max-docs 5" in e.message for e in beyond)
    assert client.status is SyncStatus.SYNCED  # the three that can sync did
    assert [client.is_synced(f"doc-{i}") for i in range(5)] == [True] * 3 + [False] * 2
    over = client.over_limit("doc-4")
    assert over is not None and "syncs at most 3 documents per connection" in over.message
    assert a.pending("doc-4") == 1  # kept, pending
    # A document opened later is beyond the limit too.
    text(a, "doc-5").insert(0, "later")
    net.run()
    assert [e.doc_id for e in _over_limit(client.events())] == ["doc-5"]
    # Closing a synced document makes room for the first one waiting.
    client.remove_document("doc-0")
    net.run()
    assert client.over_limit("doc-3") is None and client.is_synced("doc-3")
    assert a.pending("doc-3") == 0
    assert client.status is SyncStatus.SYNCED


def test_a_relay_refusing_a_document_for_the_limit_is_reported_the_same_way(
    replicas: list[Replica],
) -> None:
    a = replicas[0]
    client = ClientSession(a, a.replica_id)
    client.add_document("x")
    client.connecting()
    client.connected()
    client.receive(encode_frame(Welcome("relay", max_docs=5)))
    client.events()
    client.receive(encode_frame(ErrorFrame(ErrorCode.TOO_MANY_DOCUMENTS, "at most 5", DocId("x"))))
    [event] = _over_limit(client.events())
    assert event.doc_id == "x" and event.limit == 5
    assert client.status is SyncStatus.SYNCED  # nothing else to wait for
    client.connection_lost()  # the next connection may have room
    assert client.over_limit("x") is None
