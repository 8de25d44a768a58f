"""Records on three replicas synced through the relay hub on the simulated network
(``tests/convergence.py``: real sessions, real stores, a hub whose storage and
network hypothesis controls).

A hypothesis ``RuleBasedStateMachine`` makes random record writes on any replica
(adds, puts of a few shared ids, so that replicas create the same record
offline, field updates, deletes, restores and resolves of reported conflicts),
interleaved with partial syncs: every rule is followed by a few drawn network
events (a frame read by the relay or a replica, possibly twice, a reconnect, a
load or a commit), and faults (lost connections, partitions, replica and relay
crashes; a crashed replica restarts from its store) are rules of their own.
Replicas also take snapshots: a cursor and ``all()`` at that moment.

The machine keeps a causal model of every write: the head it added (its id is
its Yjs id ``client.clock``) and the state vector the replica had just before,
so "write X had seen write Y" is known exactly. Invariants:

- after every step, on every replica: no conflict lists two writes one of which
  had seen the other; a conflict's value is the record's value; and for every
  snapshot, applying ``changes(since=cursor)`` to the snapshot (upsert
  ``upserted``, drop ``deleted``) gives ``all()`` now, also across restarts;
- at the end, once everything is delivered: every replica has the same
  ``all()``, the same conflicts (candidates, values, writers) and the same
  tombstones, and the conflicts are exactly the model's: the fields of live
  records with two or more writes that no other write of that field had seen
  (so a resolve clears the conflict it saw everywhere, and sequential writes
  never conflict); then the network's own convergence checks run (stores,
  relay storage, restarts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pycrdt
import pytest
from hypothesis import event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from crdtsync.records import Records
from crdtsync.statevector import StateVector, decode_state_vector

from .convergence import D, Network

# The thorough profile runs for minutes (1,000 + 250 examples of 100 steps; about
# 8 minutes on 2 busy cores); the ci profile takes seconds.
pytestmark = pytest.mark.timeout(1800)

SIZE = 3
FIELDS = ("a", "b")
POOL = ("r0", "r1")
replicas = st.integers(0, SIZE - 1)
fields = st.sets(st.sampled_from(FIELDS), min_size=1, max_size=2)
events = st.lists(st.tuples(st.integers(0, 255), st.booleans()), max_size=4)


@dataclass(frozen=True)
class Write:
    """One head a replica added: ``field`` None is the deleted register."""

    record_id: str
    field: str | None
    value: Any
    dot: str
    seen: StateVector  # the replica's state vector just before the write

    def saw(self, other: Write) -> bool:
        client, _, clock = other.dot.partition(".")
        return int(clock) < self.seen.get(int(client), 0)


@dataclass
class Snapshot:
    cursor: str
    records: dict[str, dict[str, Any]]


@dataclass
class Model:
    writes: list[Write] = field(default_factory=list)
    by_value: dict[str, Write] = field(default_factory=dict)  # field writes: unique values
    ids: list[str] = field(default_factory=lambda: list(POOL))
    counter: int = 0

    def token(self) -> str:
        self.counter += 1
        return f"v{self.counter}"

    def heads(self, record_id: str, name: str | None) -> list[Write]:
        """The writes of that field no other write of it had seen."""
        group = [w for w in self.writes if w.record_id == record_id and w.field == name]
        return [w for w in group if not any(o is not w and o.saw(w) for o in group)]

    def expected_conflicts(self) -> dict[tuple[str, str], set[Any]]:
        expected: dict[tuple[str, str], set[Any]] = {}
        for record_id in sorted({w.record_id for w in self.writes}):
            if any(w.value is True for w in self.heads(record_id, None)):
                continue  # deleted records report no conflicts
            for name in FIELDS:
                heads = self.heads(record_id, name)
                if len(heads) > 1:
                    expected[(record_id, name)] = {w.value for w in heads}
        return expected


class RecordsMachine(RuleBasedStateMachine):
    backend = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.net: Network | None = None
        self.model = Model()
        self.snapshots: dict[int, list[Snapshot]] = {i: [] for i in range(SIZE)}
        self.resolves = 0
        self.checked: dict[tuple[str, int], tuple[int, bytes]] = {}

    def unchanged(self, check: str, i: int) -> bool:
        """True if replica ``i`` (the same object, the same state) passed ``check`` already:
        both invariants depend on nothing else (a new snapshot forgets the memo)."""
        replica = self.n.nodes[i].replica
        key = (id(replica), replica.state_vector(D) + replica.diff(D, replica.state_vector(D)))
        if self.checked.get((check, i)) == key:
            return True
        self.checked[(check, i)] = key
        return False

    @initialize(seed=st.integers(0, 255))
    def start(self, seed: int) -> None:
        self.net = Network(SIZE, self.backend, replica_compact_bytes=2048, seed=seed)
        for i in range(SIZE):
            self.net.connect(i)

    @property
    def n(self) -> Network:
        assert self.net is not None
        return self.net

    def coll(self, i: int) -> Records:
        return self.n.nodes[i].replica.records(D)

    def then(self, steps: list[tuple[int, bool]]) -> None:
        for choice, duplicate in steps:
            self.n.step(choice, duplicate, None)

    def teardown(self) -> None:
        if self.net is None:
            return
        try:
            self.check_converged()
            self.net.converge_and_check()
        except AssertionError:
            note("\n".join(self.net.log))
            raise
        finally:
            self.net.close()

    # -- writes, with what the model learns from them ----------------------------------------

    def record_json(self, i: int, record_id: str) -> dict[str, Any]:
        doc = self.n.nodes[i].replica.open(D)
        loaded: dict[str, Any] = json.loads(str(doc.get(f"rec:{record_id}", type=pycrdt.Map)))
        return loaded

    def write(self, i: int, record_id: str | None, action: Any) -> None:
        """Run ``action`` on replica ``i`` and add the heads it wrote to the model."""
        replica = self.n.nodes[i].replica
        seen = decode_state_vector(replica.state_vector(D))
        before = set(self.record_json(i, record_id)) if record_id is not None else set()
        made = action()
        record_id = record_id if record_id is not None else made
        assert isinstance(record_id, str)
        if record_id not in self.model.ids:
            self.model.ids.append(record_id)
        for dot, head in self.record_json(i, record_id).items():
            if dot in before:
                continue
            name = head.get("f")
            value = head["v"] if name is not None else head["d"]
            written = Write(record_id, name, value, dot, seen)
            self.model.writes.append(written)
            if name is not None:
                self.model.by_value[value] = written
        self.n.log.append(f"r{i} writes {record_id}")
        self.n.pump(i)

    def values(self, names: set[str]) -> dict[str, str]:
        return {name: self.model.token() for name in sorted(names)}

    @rule(i=replicas, names=fields, then=events)
    def add(self, i: int, names: set[str], then: list[tuple[int, bool]]) -> None:
        values = self.values(names)
        self.write(i, None, lambda: self.coll(i).add(values))
        self.then(then)

    @rule(i=replicas, k=st.integers(0, 255), names=fields, then=events)
    def put(self, i: int, k: int, names: set[str], then: list[tuple[int, bool]]) -> None:
        record_id = self.model.ids[k % len(self.model.ids)]
        values = self.values(names)
        self.write(i, record_id, lambda: self.coll(i).put(record_id, values))
        self.then(then)

    @rule(
        writes=st.lists(st.tuples(replicas, st.integers(0, 255), fields), min_size=2, max_size=3),
        resolver=st.none() | replicas,
        then=events,
    )
    def concurrent_updates(
        self,
        writes: list[tuple[int, int, set[str]]],
        resolver: int | None,
        then: list[tuple[int, bool]],
    ) -> None:
        """Several replicas write with nothing delivered in between (concurrent writes,
        unless one already had the other's); then maybe everything is delivered and
        ``resolver`` resolves what it sees."""
        for i, k, names in writes:
            self.update_one(i, k, names)
        if resolver is not None:
            self.resolve_one(resolver, 0, sync_first=True)
        self.then(then)

    @rule(i=replicas, k=st.integers(0, 255), names=fields, then=events)
    def update(self, i: int, k: int, names: set[str], then: list[tuple[int, bool]]) -> None:
        self.update_one(i, k, names)
        self.then(then)

    def update_one(self, i: int, k: int, names: set[str]) -> None:
        record_id = self.model.ids[k % len(self.model.ids)]
        coll = self.coll(i)
        values = self.values(names)
        if record_id in coll:
            self.write(i, record_id, lambda: coll.update(record_id, **values))
        else:
            try:
                coll.update(record_id, **values)
            except KeyError:
                pass
            else:
                raise AssertionError(f"update of {record_id}, not live on r{i}, did not raise")

    @rule(i=replicas, k=st.integers(0, 255), delete=st.booleans(), then=events)
    def delete_or_restore(self, i: int, k: int, delete: bool, then: list[tuple[int, bool]]) -> None:
        record_id = self.model.ids[k % len(self.model.ids)]
        coll = self.coll(i)
        exists = record_id in coll or coll.tombstone(record_id) is not None
        call = coll.delete if delete else coll.restore
        if exists:
            self.write(i, record_id, lambda: call(record_id))
            assert (record_id in coll) is not delete
        else:
            try:
                call(record_id)
            except KeyError:
                pass
            else:
                raise AssertionError(f"{call.__name__} of unknown {record_id} did not raise")
        self.then(then)

    @rule(i=replicas, k=st.integers(0, 255), sync_first=st.booleans(), then=events)
    def resolve(self, i: int, k: int, sync_first: bool, then: list[tuple[int, bool]]) -> None:
        """Resolve a conflict replica ``i`` reports (after everything is delivered, if
        ``sync_first``: conflicts show once both writes meet)."""
        self.resolve_one(i, k, sync_first)
        self.then(then)

    def resolve_one(self, i: int, k: int, sync_first: bool) -> None:
        if sync_first:
            self.n.quiesce()
        conflicts = self.coll(i).conflicts()
        if conflicts:
            self.resolves += 1
            conflict = conflicts[k % len(conflicts)]
            value = self.model.token()
            self.write(
                i,
                conflict.record_id,
                lambda: self.coll(i).resolve(conflict.record_id, conflict.field, value),
            )
            assert not [
                c
                for c in self.coll(i).conflicts()
                if (c.record_id, c.field) == (conflict.record_id, conflict.field)
            ], "a resolve left its conflict on the replica that made it"

    @rule(i=replicas, slot=st.integers(0, 2))
    def snapshot(self, i: int, slot: int) -> None:
        coll = self.coll(i)
        taken = Snapshot(coll.cursor(), coll.all())
        kept = self.snapshots[i]
        self.checked.pop(("changes", i), None)
        if slot < len(kept):
            kept[slot] = taken
        else:
            kept.append(taken)

    # -- the network ---------------------------------------------------------------------------

    @rule(then=st.lists(st.tuples(st.integers(0, 255), st.booleans()), min_size=1, max_size=12))
    def deliver(self, then: list[tuple[int, bool]]) -> None:
        self.then(then)

    @rule()
    def flush(self) -> None:
        self.n.quiesce()

    @rule(i=replicas, keep=st.integers(0, 3), then=events)
    def drop(self, i: int, keep: int, then: list[tuple[int, bool]]) -> None:
        self.n.drop(i, keep)
        self.then(then)

    @rule(members=st.sets(replicas, min_size=1, max_size=SIZE - 1), then=events)
    def partition(self, members: set[int], then: list[tuple[int, bool]]) -> None:
        self.n.partition(members)
        self.then(then)

    @rule(i=replicas, then=events)
    def crash_replica(self, i: int, then: list[tuple[int, bool]]) -> None:
        self.n.crash_replica(i)
        self.then(then)

    @rule(then=events)
    def crash_relay(self, then: list[tuple[int, bool]]) -> None:
        self.n.crash_relay()
        self.then(then)

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def conflicts_are_between_writes_that_never_saw_each_other(self) -> None:
        if self.net is None:
            return
        for i in range(SIZE):
            if self.unchanged("conflicts", i):
                continue
            coll = self.coll(i)
            for conflict in coll.conflicts():
                writes = [self.model.by_value[c.value] for c in conflict.candidates]
                for x in writes:
                    assert x.record_id == conflict.record_id and x.field == conflict.field
                    for y in writes:
                        assert x is y or not x.saw(y), (
                            f"r{i} reports a conflict between {x.value} and {y.value}, "
                            f"which had seen it: {conflict}"
                        )
                record = coll.get(conflict.record_id)
                assert record is not None and record[conflict.field] == conflict.value

    @invariant()
    def changes_since_a_snapshot_lead_to_now(self) -> None:
        if self.net is None:
            return
        for i, kept in self.snapshots.items():
            if not kept or self.unchanged("changes", i):
                continue
            coll = self.coll(i)
            now = coll.all()
            for snap in kept:
                changes = coll.changes(since=snap.cursor)
                rebuilt = dict(snap.records)
                rebuilt.update(changes.upserted)
                for record_id in changes.deleted:
                    rebuilt.pop(record_id, None)
                assert rebuilt == now, f"r{i}: changes since a snapshot do not lead to now"
                assert len(coll) == len(now) and list(coll) == list(now)
                if changes.upserted and changes.deleted:
                    event("changes since a snapshot had upserts and deletes")
                assert not set(changes.upserted) & set(changes.deleted)

    # -- the end ------------------------------------------------------------------------------

    def check_converged(self) -> None:
        self.n.heal()
        while self.n.late(0):
            pass
        self.n.quiesce()
        colls = [self.coll(i) for i in range(SIZE)]
        first = colls[0]
        for other in colls[1:]:
            assert other.all() == first.all()
            assert other.conflicts() == first.conflicts()
            assert other.tombstones() == first.tombstones()
            assert len(other) == len(first)
        actual = {
            (c.record_id, c.field): {x.value for x in c.candidates} for c in first.conflicts()
        }
        event(f"conflicts at the end: {min(len(actual), 3)}")
        event(f"resolves: {min(self.resolves, 3)}")
        event(f"tombstones at the end: {min(len(first.tombstones()), 3)}")
        assert actual == self.model.expected_conflicts()
        for record_id in self.model.ids:
            deleted = any(w.value is True for w in self.model.heads(record_id, None))
            exists = any(w.record_id == record_id for w in self.model.writes)
            assert (record_id in first) == (exists and not deleted), record_id
            assert (first.tombstone(record_id) is not None) == deleted, record_id


class SQLiteRecordsMachine(RecordsMachine):
    backend = "sqlite"


TestRecordsMemory = RecordsMachine.TestCase
TestRecordsSQLite = SQLiteRecordsMachine.TestCase
_profile = settings()
TestRecordsSQLite.settings = settings(_profile, max_examples=max(10, _profile.max_examples // 4))
