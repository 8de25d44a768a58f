"""Property tests: whatever the edits, a reopened or compacted replica equals the live one.

A hypothesis state machine edits one document through a Replica (Map, Text
with formatting, Array, nested types, multi-edit transactions), mixes in
updates from a peer delivered out of order and duplicated, acknowledges parts
of the outbox, compacts, and restarts the replica. Invariants:

- reopen == live: after a restart the document has the same encoded state,
  the same pending count and the same outbox;
- compacted == uncompacted: compaction changes neither the state nor the outbox;
- nothing is lost: once every peer update is delivered, the replica holds the
  peer's whole document, and a fresh Doc fed the peer updates plus every
  outbox entry ever issued equals the replica.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pycrdt
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from crdtsync import MemoryStore, Replica
from crdtsync.statevector import StateVector, doc_state
from crdtsync.store import MemoryData

DOC = "doc"
keys = st.sampled_from(["a", "b", "c", "d"])
values = st.one_of(st.integers(-5, 5), st.text("xyz", max_size=3), st.booleans())
fractions = st.floats(0, 1)
chunks = st.text("abcdefgh", min_size=1, max_size=4)


def covers(have: StateVector, need: StateVector) -> bool:
    """True if ``have`` has seen at least everything ``need`` has, for every client."""
    return all(have.get(client, 0) >= clock for client, clock in need.items())


def content(doc: pycrdt.Doc[Any]) -> tuple[object, ...]:
    """The document's content as plain Python (formatting included)."""
    return (
        doc.get("map", type=pycrdt.Map).to_py(),
        doc.get("text", type=pycrdt.Text).diff(),
        doc.get("array", type=pycrdt.Array).to_py(),
    )


class ReplicaMachine(RuleBasedStateMachine):
    """Edits, restarts and compactions of one replica; subclasses pick the store."""

    def __init__(self) -> None:
        super().__init__()
        self.replica = self.open_replica()
        # Two peers that also sync with each other, so updates refer across clients.
        self.peers: list[pycrdt.Doc[Any]] = [pycrdt.Doc(client_id=4242), pycrdt.Doc(client_id=77)]
        self.peer_updates: list[bytes] = []
        for peer in self.peers:
            peer.observe(lambda event: self.peer_updates.append(event.update))
        self.issued: dict[int, bytes] = {}  # every outbox entry ever seen, by seq

    # -- helpers ----------------------------------------------------------------

    def open_replica(self) -> Replica:
        raise NotImplementedError

    @property
    def doc(self) -> pycrdt.Doc[Any]:
        return self.replica.open(DOC)

    def remember_outbox(self) -> None:
        for entry in self.replica.outbox(DOC):
            assert self.issued.setdefault(entry.seq, entry.data) == entry.data

    def snapshot(self) -> tuple[object, ...]:
        """What must not change across a restart or a compaction."""
        doc = self.doc
        outbox = [(e.seq, e.data) for e in self.replica.outbox(DOC)]
        return doc_state(doc), content(doc), self.replica.pending(DOC), outbox

    # -- local edits --------------------------------------------------------------

    @rule(key=keys, value=values)
    def map_set(self, key: str, value: object) -> None:
        self.doc.get("map", type=pycrdt.Map)[key] = value

    @rule(key=keys)
    def map_delete(self, key: str) -> None:
        m = self.doc.get("map", type=pycrdt.Map)
        if key in m:
            del m[key]

    @rule(key=keys, items=st.lists(values, max_size=3))
    def map_nested(self, key: str, items: list[object]) -> None:
        self.doc.get("map", type=pycrdt.Map)[key] = pycrdt.Map({"list": pycrdt.Array(items)})

    @rule(at=fractions, chunk=chunks, bold=st.booleans())
    def text_insert(self, at: float, chunk: str, bold: bool) -> None:
        text = self.doc.get("text", type=pycrdt.Text)
        position = int(at * len(text))
        text.insert(position, chunk, {"bold": True} if bold else None)

    @rule(at=fractions, length=st.integers(1, 4))
    def text_delete(self, at: float, length: int) -> None:
        text = self.doc.get("text", type=pycrdt.Text)
        if len(text):
            start = int(at * (len(text) - 1))
            del text[start : min(len(text), start + length)]

    @rule(at=fractions, length=st.integers(1, 3))
    def text_format(self, at: float, length: int) -> None:
        text = self.doc.get("text", type=pycrdt.Text)
        if len(text):
            start = int(at * (len(text) - 1))
            text.format(start, min(len(text), start + length), {"italic": True})

    @rule(at=fractions, value=values)
    def array_insert(self, at: float, value: object) -> None:
        arr = self.doc.get("array", type=pycrdt.Array)
        arr.insert(int(at * len(arr)), value)

    @rule(at=fractions)
    def array_delete(self, at: float) -> None:
        arr = self.doc.get("array", type=pycrdt.Array)
        if len(arr):
            del arr[int(at * (len(arr) - 1))]

    @rule(chunks_=st.lists(chunks, min_size=2, max_size=5))
    def transaction(self, chunks_: list[str]) -> None:
        doc = self.doc
        with doc.transaction():
            text = doc.get("text", type=pycrdt.Text)
            for chunk in chunks_:
                text.insert(len(text), chunk)
            doc.get("map", type=pycrdt.Map)["tx"] = len(chunks_)

    # -- a peer, delivered out of order and duplicated ------------------------------

    @rule(which=st.integers(0, 1), chunk=chunks, at=fractions)
    def peer_edit(self, which: int, chunk: str, at: float) -> None:
        text = self.peers[which].get("text", type=pycrdt.Text)
        text.insert(int(at * len(text)), chunk)

    @rule(which=st.integers(0, 1), at=fractions, length=st.integers(1, 3))
    def peer_delete(self, which: int, at: float, length: int) -> None:
        text = self.peers[which].get("text", type=pycrdt.Text)
        if len(text):
            start = int(at * (len(text) - 1))
            del text[start : min(len(text), start + length)]

    @rule(key=keys, value=values, which=st.integers(0, 1))
    def peer_map_set(self, key: str, value: object, which: int) -> None:
        self.peers[which].get("map", type=pycrdt.Map)[key] = value

    @rule(source=st.integers(0, 1))
    def peers_sync(self, source: int) -> None:
        """One peer sends the other what it lacks (its update is recorded like any)."""
        a, b = self.peers[source], self.peers[1 - source]
        b.apply_update(a.get_update(b.get_state()))

    @precondition(lambda self: self.peer_updates)
    @rule(index=st.integers(0, 100))
    def deliver(self, index: int) -> None:
        update = self.peer_updates[index % len(self.peer_updates)]
        self.replica.apply_remote(DOC, update)

    # -- sync bookkeeping, compaction, restarts ---------------------------------------

    @rule(share=fractions)
    def acknowledge(self, share: float) -> None:
        self.remember_outbox()
        outbox = self.replica.outbox(DOC)
        if outbox:
            self.replica.acknowledge(DOC, outbox[int(share * (len(outbox) - 1))].seq)

    @rule()
    def compact(self) -> None:
        before = self.snapshot()
        self.replica.compact(DOC)
        assert self.snapshot() == before, "compacted != uncompacted"

    @rule()
    def restart(self) -> None:
        self.remember_outbox()
        before = self.snapshot()
        self.replica.close()
        self.replica = self.open_replica()
        assert self.snapshot() == before, "reopened != live"

    @invariant()
    def pending_matches_outbox(self) -> None:
        assert self.replica.pending(DOC) == len(self.replica.outbox(DOC))

    def teardown(self) -> None:
        try:
            self.remember_outbox()
            for update in self.peer_updates:
                self.replica.apply_remote(DOC, update)
            doc = self.doc
            # Everything the peer wrote is in the replica's text, in the peer's order.
            merged: pycrdt.Doc[Any] = pycrdt.Doc()
            for update in self.peer_updates:
                merged.apply_update(update)
            for _, data in sorted(self.issued.items()):
                merged.apply_update(data)
            assert doc_state(merged) == doc_state(doc), "outbox + peer != replica"
            assert content(merged) == content(doc)
            # Everything each peer wrote and deleted reached the replica.
            replica_sv, replica_ds = doc_state(doc)
            for peer in self.peers:
                peer_sv, peer_ds = doc_state(peer)
                assert covers(replica_sv, peer_sv)
                for client, ranges in peer_ds.items():
                    for clock, length in ranges:
                        assert any(
                            start <= clock and clock + length <= start + size
                            for start, size in replica_ds.get(client, [])
                        )
            before = self.snapshot()
            self.replica.compact(DOC)
            self.replica.close()
            self.replica = self.open_replica()
            assert self.snapshot() == before
        finally:
            self.replica.close()
            self.cleanup()

    def cleanup(self) -> None:
        """Release what the subclass created."""


class MemoryReplicaMachine(ReplicaMachine):
    def open_replica(self) -> Replica:
        if not hasattr(self, "data"):
            self.data = MemoryData()
        return Replica(store=MemoryStore(self.data), compact_min_bytes=64)


class SQLiteReplicaMachine(ReplicaMachine):
    def open_replica(self) -> Replica:
        if not hasattr(self, "directory"):
            self.directory = Path(tempfile.mkdtemp(prefix="crdtsync-prop-"))
        return Replica(self.directory / "replica.db", compact_min_bytes=64)

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


TestMemoryReplica = MemoryReplicaMachine.TestCase
TestSQLiteReplica = SQLiteReplicaMachine.TestCase
