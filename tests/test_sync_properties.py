"""Convergence through the relay under a network that hypothesis controls.

Replicas (real ``Replica`` objects on memory stores) and the relay's hub are
wired by :class:`tests.sim.SimNetwork`. Hypothesis chooses who edits, which
queued frame moves next (links are ordered, as TCP is, but interleave freely),
when connections drop (losing whatever was in flight) and when the relay
crashes (losing rooms and unstored writes). At the end the network heals:
everyone reconnects and every replica and the relay hold the same state.
"""

from __future__ import annotations

import pycrdt
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from crdtsync import Replica
from crdtsync.ids import DocId
from crdtsync.statevector import doc_state
from crdtsync.sync.session import ClientSession
from relay.room import replay

from .sim import SimNetwork

D = DocId("doc")
N = 3


class SyncMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.net = SimNetwork()
        self.replicas = [Replica(":memory:") for _ in range(N)]
        self.clients: list[ClientSession] = []
        for replica in self.replicas:
            replica.open(D)
            self.clients.append(self.net.client(replica))
        self.acked_keys: set[str] = set()
        self.counter = 0

    def teardown(self) -> None:
        try:
            for client in self.clients:
                if client not in self.net.links:
                    self.net.connect(client)
            self.net.run()
            states = [doc_state(r.open(D)) for r in self.replicas]
            assert all(state == states[0] for state in states[1:])
            contents = [r.open(D).get("m", type=pycrdt.Map).to_py() for r in self.replicas]
            assert all(c == contents[0] for c in contents[1:])
            texts = {str(r.open(D).get("t", type=pycrdt.Text)) for r in self.replicas}
            assert len(texts) == 1
            assert all(r.pending(D) == 0 for r in self.replicas)
            # The relay's storage, replayed from scratch, is the same document.
            replayed = replay(self.net.storage.load(D))
            stored, held = replayed.doc, replayed.held
            assert held == []
            assert doc_state(stored) == states[0]
        finally:
            for replica in self.replicas:
                replica.close()

    @rule(i=st.integers(0, N - 1), value=st.integers(0, 9))
    def set_key(self, i: int, value: int) -> None:
        self.counter += 1
        self.replicas[i].open(D).get("m", type=pycrdt.Map)[f"k{i}-{self.counter % 4}"] = value

    @rule(i=st.integers(0, N - 1), data=st.data())
    def edit_text(self, i: int, data: st.DataObject) -> None:
        text = self.replicas[i].open(D).get("t", type=pycrdt.Text)
        length = len(str(text))
        if length and data.draw(st.booleans(), label="delete"):
            start = data.draw(st.integers(0, length - 1), label="start")
            del text[start : start + 1]
        else:
            text.insert(data.draw(st.integers(0, length), label="at"), chr(97 + i))

    @rule(i=st.integers(0, N - 1))
    def connect(self, i: int) -> None:
        if self.clients[i] not in self.net.links:
            self.net.connect(self.clients[i])

    @rule(i=st.integers(0, N - 1))
    def disconnect(self, i: int) -> None:
        self.net.disconnect(self.clients[i])  # frames in flight are lost

    @rule(i=st.integers(0, N - 1), count=st.integers(1, 3))
    def deliver_up(self, i: int, count: int) -> None:
        link = self.net.links.get(self.clients[i])
        if link is None:
            return
        link.up.extend(link.client.frames_to_send())
        for _ in range(min(count, len(link.up))):
            self.net.hub.receive(link.relay, link.up.popleft())

    @rule(i=st.integers(0, N - 1), count=st.integers(1, 3))
    def deliver_down(self, i: int, count: int) -> None:
        client = self.clients[i]
        link = self.net.links.get(client)
        if link is None:
            return
        link.down.extend(link.relay.frames_to_send())
        for _ in range(min(count, len(link.down))):
            client.receive(link.down.popleft())
        if link.relay.close is not None:
            self.net.disconnect(client)

    @rule()
    def storage(self) -> None:
        """The relay's storage answers: loads complete, one group commit happens."""
        loads = list(self.net._loads)
        self.net._loads.clear()
        for doc_id in loads:
            self.net.hub.loaded(doc_id, self.net.storage.load(doc_id))
        writes = self.net.hub.take_writes()
        if writes:
            self.net.hub.written(writes, self.net.storage.append(writes))

    @precondition(lambda self: self.counter > 0)
    @rule()
    def crash_relay(self) -> None:
        self.net.restart_relay()

    @invariant()
    def acknowledged_changes_are_stored(self) -> None:
        """Whatever a replica no longer has pending is in the relay's storage."""
        replayed = replay(self.net.storage.load(D))
        stored, _ = replayed.doc, replayed.held
        stored_keys = set(stored.get("m", type=pycrdt.Map).keys())
        for replica in self.replicas:
            if replica.pending(D) == 0:
                local = replica.open(D).get("m", type=pycrdt.Map)
                # Keys this replica wrote itself and had acknowledged must be stored.
                own = {k for k in local if k.startswith(f"k{self.replicas.index(replica)}-")}
                assert own <= stored_keys, own - stored_keys


TestSyncMachine = SyncMachine.TestCase
