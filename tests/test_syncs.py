"""Large sync answers in pieces (:mod:`relay.syncs`), driven by hand: the hub, real
client sessions over real replicas, and frames moved only when the test says
the connection drained."""

from __future__ import annotations

from typing import Any

import pycrdt

from crdtsync import Replica
from crdtsync.events import SyncStatus
from crdtsync.ids import DocId, ReplicaId
from crdtsync.statevector import doc_state
from crdtsync.sync.protocol import Hello, Subscribe, Sync, Update, decode_frame, encode_frame
from crdtsync.sync.session import ClientSession
from relay.limits import Limits
from relay.rooms import Hub
from relay.session import RelaySession
from relay.storage import StoredRoom
from relay.yjs import SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE, YjsSession, decode_message

D = DocId("doc")
PIECE = 16 << 10
LIMITS = Limits(sync_piece_bytes=PIECE, max_concurrent_syncs=2)
TEXT = "".join(f"line {i:06d} of a long document\n" for i in range(10_000))  # ~300 KB


def _document(text: str = TEXT) -> pycrdt.Doc[Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=3)
    doc.get("t", type=pycrdt.Text).insert(0, text)
    return doc


def _hub(doc: pycrdt.Doc[Any], limits: Limits = LIMITS) -> Hub:
    """A hub whose room ``D`` loads ``doc`` as its stored snapshot."""
    loads: list[DocId] = []
    hub = Hub("relay", limits, on_load=loads.append)
    probe = hub.open_session("probe")  # loads the room
    hub.receive(probe, encode_frame(Hello(ReplicaId("probe"))))
    hub.receive(probe, encode_frame(Subscribe(D, b"\x00")))
    hub.loaded(D, StoredRoom(D, doc.get_update(), 0, []))
    hub.close_session(probe)
    return hub


class Joiner:
    """A replica, its client session and its connection to ``hub``."""

    def __init__(self, hub: Hub, replica: Replica, backlog: int = 0) -> None:
        self.hub = hub
        self.replica = replica
        self.client = ClientSession(replica, replica.replica_id)
        replica.open(D)
        self.client.add_document(D)
        self.received: list[Any] = []
        self.wakes = 0
        self.relay = self.connect(backlog)

    def connect(self, backlog: int = 0) -> RelaySession:
        """A new connection; ``backlog``: bytes its I/O layer has not sent yet."""
        self.relay = self.hub.open_session(self.replica.replica_id)
        self.relay.on_sync = self._wake
        self.relay.backlog = backlog
        self.client.connecting()
        self.client.connected()
        self.pump()
        return self.relay

    def _wake(self) -> None:
        self.wakes += 1

    def pump(self) -> None:
        """Move frames both ways until quiet, without feeding the syncs."""
        while True:
            up = self.client.frames_to_send()
            for frame in up:
                self.hub.receive(self.relay, frame)
            down = self.relay.frames_to_send()
            for frame in down:
                self.received.append(decode_frame(frame, 1 << 30))
                self.client.receive(frame)
            if not up and not down:
                return

    def drain(self, pieces: int | None = None) -> int:
        """The connection drained ``pieces`` times (None: until the sync is done)."""
        fed = 0
        while (pieces is None or fed < pieces) and self.hub.syncs.pending(self.relay):
            self.hub.syncs.feed(self.relay)
            fed += 1
            self.pump()
        return fed

    def disconnect(self) -> None:
        self.hub.close_session(self.relay)
        self.client.connection_lost()

    def text(self) -> str:
        return str(self.replica.open(D).get("t", type=pycrdt.Text))


def _pieces(frames: list[Any]) -> list[Update]:
    return [f for f in frames if isinstance(f, Update)]


def test_a_large_document_goes_out_in_pieces_only_as_the_connection_drains(
    replicas: list[Replica],
) -> None:
    doc = _document()
    hub = _hub(doc)
    joiner = Joiner(hub, replicas[0])
    assert not _pieces(joiner.received), "nothing before the connection asks"
    assert joiner.client.status is SyncStatus.SYNCING
    assert joiner.relay not in hub.rooms[D].subscribers  # no fan-out before its SYNC
    joiner.drain(3)
    pieces = _pieces(joiner.received)
    assert 1 <= len(pieces) <= 3 and all(len(p.update) <= PIECE for p in pieces)
    assert 0 < len(joiner.text()) < len(TEXT) and TEXT.startswith(joiner.text())
    assert joiner.client.status is SyncStatus.SYNCING
    joiner.drain()
    assert len(_pieces(joiner.received)) >= len(TEXT) // PIECE
    assert isinstance(joiner.received[-1], Sync)
    assert joiner.text() == TEXT
    assert doc_state(replicas[0].open(D)) == doc_state(doc)
    assert joiner.client.status is SyncStatus.SYNCED
    assert joiner.relay in hub.rooms[D].subscribers
    assert not hub.rooms[D].diffs and hub.syncs.active == 0 and hub.rooms[D].syncing == 0


def test_a_joiner_that_reconnects_midway_gets_only_the_rest(replicas: list[Replica]) -> None:
    hub = _hub(_document())
    joiner = Joiner(hub, replicas[0])
    joiner.drain(8)
    first = sum(len(p.update) for p in _pieces(joiner.received))
    have = len(joiner.text())
    joiner.disconnect()  # what arrived is stored and integrated
    assert len(joiner.text()) == have > 0
    joiner.received.clear()
    joiner.connect()
    joiner.drain()
    second = sum(len(p.update) for p in _pieces(joiner.received))
    assert second < len(TEXT) - first + PIECE, "started over"
    assert joiner.text() == TEXT


def test_concurrent_large_syncs_wait_for_a_slot_and_share_one_encoding(
    replicas: list[Replica],
) -> None:
    hub = _hub(_document())
    extra = [Replica(":memory:") for _ in range(2)]
    try:
        joiners = [Joiner(hub, replica) for replica in [*replicas, *extra]]
        assert hub.syncs.active == 2 and len(hub.syncs.waiting) == 3
        pending = [hub.syncs.pending(j.relay) for j in joiners]
        assert pending == [True, True, False, False, False]
        for joiner in joiners[:2]:
            joiner.drain(1)  # both encode: the same state vector, one encoding
        [shared] = hub.rooms[D].diffs.values()
        assert shared.users == 2
        joiners[0].drain()  # done: its slot goes to the next one
        assert joiners[2].wakes == 1 and hub.syncs.pending(joiners[2].relay)
        assert joiners[3].client.status is SyncStatus.SYNCING
        for joiner in joiners:
            joiner.drain()
            assert joiner.text() == TEXT
            assert joiner.client.status is SyncStatus.SYNCED
        assert hub.syncs.active == 0 and not hub.syncs.waiting and not hub.rooms[D].diffs
    finally:
        for replica in extra:
            replica.close()


def test_what_the_room_gains_during_a_sync_arrives_with_its_sync(replicas: list[Replica]) -> None:
    doc = _document()
    hub = _hub(doc)
    joiner = Joiner(hub, replicas[0])
    joiner.drain(2)
    writer = hub.open_session("writer")
    hub.receive(writer, encode_frame(Hello(ReplicaId("writer"))))
    hub.receive(writer, encode_frame(Subscribe(D, doc.get_state())))
    before = doc.get_state()
    doc.get("t", type=pycrdt.Text).insert(0, "NEW ")
    hub.receive(writer, encode_frame(Update(D, doc.get_update(before), 1)))
    assert not any(isinstance(f, Update) and b"NEW" in f.update for f in joiner.received)
    joiner.drain()
    assert joiner.text() == "NEW " + TEXT
    doc.get("t", type=pycrdt.Text).insert(0, "LIVE ")  # now it is in the fan-out
    hub.receive(writer, encode_frame(Update(D, doc.get_update(), 2)))
    joiner.pump()
    assert joiner.text() == "LIVE NEW " + TEXT


def test_leaving_midway_frees_the_slot_the_encoding_and_the_room(replicas: list[Replica]) -> None:
    hub = _hub(_document())
    first, second, third = (Joiner(hub, r) for r in replicas)
    first.drain(2)
    second.drain(1)
    assert hub.syncs.waiting and hub.rooms[D].diffs
    assert not hub.rooms[D].subscribers and hub.unload_idle(100.0, 1.0) == []  # in use
    first.disconnect()
    second.client.remove_document(D)  # UNSUBSCRIBE midway
    second.pump()
    assert hub.syncs.active == 1 and not hub.syncs.waiting  # the third has a slot
    third.disconnect()
    assert hub.syncs.active == 0 and not hub.rooms[D].diffs and hub.rooms[D].syncing == 0
    assert hub.unload_idle(200.0, 1.0) == [D]


def test_a_small_answer_waits_too_while_the_connection_has_a_backlog(
    replicas: list[Replica],
) -> None:
    hub = _hub(_document("short"))
    quick = Joiner(hub, replicas[0])
    assert isinstance(quick.received[-1], Sync)  # small: answered at once
    busy = Joiner(hub, replicas[1], backlog=10 * PIECE)  # the I/O layer has that unsent
    assert not any(isinstance(f, Sync) for f in busy.received)
    assert hub.syncs.pending(busy.relay) and hub.syncs.active == 0  # no slot needed
    busy.drain()
    assert isinstance(busy.received[-1], Sync) and busy.text() == "short"


def test_an_answer_larger_than_the_room_size_suggests_still_goes_in_pieces(
    replicas: list[Replica],
) -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=3)
    items = doc.get("a", type=pycrdt.Array)
    for i in range(5000):
        items.append(i)  # 5,000 clock ticks of a few bytes each
    replicas[0].apply_remote(D, doc.get_update())  # the joiner has those already
    other: pycrdt.Doc[Any] = pycrdt.Doc(client_id=4)
    other.apply_update(doc.get_update())
    other.get("t", type=pycrdt.Text).insert(0, "x" * 100_000)  # 1 item, 100,000 ticks
    other.get("t", type=pycrdt.Text).insert(0, "y")
    hub = _hub(other)
    joiner = Joiner(hub, replicas[0])
    joiner.drain()
    assert len(_pieces(joiner.received)) >= 100_000 // PIECE
    assert doc_state(replicas[0].open(D)) == doc_state(other)


def test_a_yjs_client_gets_a_large_document_as_update_messages_then_step_2() -> None:
    doc = _document()
    hub = _hub(doc)
    session = hub.open_session("yjs", kind=YjsSession, doc_id=D)
    [step1] = session.frames_to_send()
    assert decode_message(step1)[1] == SYNC_STEP1
    assert session in hub.rooms[D].subscribers  # y-websocket joins at once
    hub.receive(session, b"\x00\x00\x01\x00")  # its sync step 1: an empty state vector
    assert not session.frames_to_send()
    client: pycrdt.Doc[Any] = pycrdt.Doc()
    steps = []
    while hub.syncs.pending(session):
        hub.syncs.feed(session)
        for message in session.frames_to_send():
            _, step, payload = decode_message(message)
            steps.append(step)
            client.apply_update(payload)
    assert steps[-1] == SYNC_STEP2 and set(steps[:-1]) == {SYNC_UPDATE} and len(steps) > 10
    assert str(client.get("t", type=pycrdt.Text)) == TEXT


def test_a_sync_from_nothing_can_send_the_stored_snapshot_instead_of_encoding(
    replicas: list[Replica],
) -> None:
    doc = _document()
    hub = _hub(doc)
    requested: list[DocId] = []
    hub.syncs.request_snapshot = requested.append  # a host that reads storage
    first, second = Joiner(hub, replicas[0]), Joiner(hub, replicas[1])
    first.drain(1)
    second.drain(1)
    assert requested == [D]  # the host reads it, once for both
    assert not hub.syncs.pending(first.relay) and not hub.syncs.pending(second.relay)
    before = doc.get_state()
    doc.get("t", type=pycrdt.Text).insert(0, "later ")  # the room moves on meanwhile
    writer = hub.open_session("writer")
    hub.receive(writer, encode_frame(Hello(ReplicaId("writer"))))
    hub.receive(writer, encode_frame(Subscribe(D, before)))
    hub.receive(writer, encode_frame(Update(D, doc.get_update(before), 1)))
    stored = _document().get_update()  # what storage held: the room before "later "
    hub.syncs.snapshot_loaded(hub.rooms[D], stored)
    assert first.wakes and second.wakes
    for joiner in (first, second):
        joiner.drain()
        assert joiner.text() == "later " + TEXT  # the final SYNC carried the rest
    assert not hub.rooms[D].diffs


def test_without_a_stored_snapshot_the_room_is_encoded_after_all(
    replicas: list[Replica],
) -> None:
    hub = _hub(_document())
    hub.syncs.request_snapshot = lambda doc_id: None
    joiner = Joiner(hub, replicas[0])
    joiner.drain(1)
    hub.syncs.snapshot_loaded(hub.rooms[D], None)
    joiner.drain()
    assert joiner.text() == TEXT
