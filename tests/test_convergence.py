"""Convergence under a hostile network, on the real sync sessions and stores.

A hypothesis ``RuleBasedStateMachine`` drives :class:`tests.convergence.Network`
(four replicas and the relay, see its docstring for the model): who edits what
(Map set/delete, Text insert/delete/format, Array insert/delete/move, nested
types, multi-edit transactions), which queued frame moves next, duplicated
UPDATEs, cut connections, partitions, storage commits, and crashes of a replica
or of the relay. After every step:

1. every update the relay acknowledged is in its storage (which is what a
   restarted relay loads);
2. every change a replica's call returned from is in its store (the store,
   rebuilt from scratch, equals the live document), so it survives a restart;
3. no replica holds content that no replica wrote, or anything twice.

At the end the network heals, everyone reconnects and everything is
delivered: all replicas, the relay's room and its storage replayed from
scratch have equal state vectors, delete sets and content (to_py of every
root, text with formatting), and every replica's store rebuilds the same.

The same machine runs on memory stores and on SQLite files (replica stores and
the relay's SQLite storage). A seeded Yjs-style soak runs thousands of steps.
Profiles: see ``tests/conftest.py`` and the README.
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from .convergence import Network

N = 4
KINDS = [
    "text_insert",
    "text_delete",
    "text_format",
    "array_insert",
    "array_delete",
    "array_move",
    "map_set",
    "map_delete",
    "nested",
    "nested_edit",
    "transaction",
]
replicas = st.integers(0, N - 1)


class ConvergenceMachine(RuleBasedStateMachine):
    backend = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.net = Network(N, self.backend)

    def teardown(self) -> None:
        try:
            self.net.converge_and_check()
        finally:
            self.net.close()

    @rule(i=replicas, kind=st.sampled_from(KINDS), a=st.integers(0, 50), b=st.integers(0, 50))
    def edit(self, i: int, kind: str, a: int, b: int) -> None:
        self.net.edit(i, kind, a, b)

    @rule(i=replicas)
    def connect(self, i: int) -> None:
        self.net.connect(i)

    @rule(i=replicas, duplicate=st.booleans())
    def deliver_up(self, i: int, duplicate: bool) -> None:
        self.net.deliver_up(i, duplicate)

    @rule(i=replicas, duplicate=st.booleans())
    def deliver_down(self, i: int, duplicate: bool) -> None:
        self.net.deliver_down(i, duplicate)

    @rule()
    def commit(self) -> None:
        self.net.commit()

    @rule(i=replicas)
    def cut(self, i: int) -> None:
        self.net.cut(i)

    @rule(members=st.sets(replicas, min_size=2, max_size=N - 1))
    def partition(self, members: set[int]) -> None:
        self.net.partition(members)

    @precondition(lambda self: bool(self.net.partitioned))
    @rule()
    def heal(self) -> None:
        self.net.heal()

    @rule(i=replicas)
    def crash_replica(self, i: int) -> None:
        self.net.crash_replica(i)

    @rule()
    def crash_relay(self) -> None:
        self.net.crash_relay()

    @invariant()
    def acknowledged_updates_are_stored(self) -> None:
        self.net.check_acked_are_stored()

    @invariant()
    def replica_changes_are_stored(self) -> None:
        self.net.check_replicas_stored()

    @invariant()
    def no_content_appears_from_nowhere(self) -> None:
        self.net.check_no_foreign_content()


class SQLiteConvergenceMachine(ConvergenceMachine):
    backend = "sqlite"


TestConvergenceMemory = ConvergenceMachine.TestCase

TestConvergenceSQLite = SQLiteConvergenceMachine.TestCase
# Files make each example slower: a quarter of the profile's examples.
TestConvergenceSQLite.settings = settings(
    settings.default, max_examples=max(10, settings.default.max_examples // 4)
)


# -- a Yjs-style randomized soak ---------------------------------------------------------------

SOAK_STEPS = int(os.environ.get("CRDTSYNC_SOAK_STEPS", "0")) or (
    10_000 if os.environ.get("CRDTSYNC_HYPOTHESIS_PROFILE") == "thorough" else 2_000
)


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_yjs_style_soak(backend: str) -> None:
    """Thousands of rounds, as Yjs' own randomized tests: each round one random
    edit, then 50% deliver one frame, 2% cut/reconnect a replica, 1% flush
    everything, 1% commit storage (plus rarer crashes). Seeded: set
    ``CRDTSYNC_SOAK_SEED`` to replay a failure, ``CRDTSYNC_SOAK_STEPS`` for more."""
    seed = int(os.environ.get("CRDTSYNC_SOAK_SEED", random.randrange(1 << 32)))
    steps = SOAK_STEPS if backend == "memory" else SOAK_STEPS // 4
    rng = random.Random(seed)
    net = Network(N, backend)
    try:
        for step in range(steps):
            i = rng.randrange(N)
            net.edit(i, rng.choice(KINDS), rng.randrange(50), rng.randrange(50))
            roll = rng.random()
            if roll < 0.5:
                j = rng.randrange(N)
                if rng.random() < 0.5:
                    net.deliver_up(j, duplicate=rng.random() < 0.05)
                else:
                    net.deliver_down(j, duplicate=rng.random() < 0.05)
            elif roll < 0.52:
                j = rng.randrange(N)
                net.cut(j) if net.nodes[j].link is not None else net.connect(j)
            elif roll < 0.53:
                net.quiesce()
            elif roll < 0.54:
                net.commit()
            elif roll < 0.542:
                net.crash_replica(rng.randrange(N))
            elif roll < 0.543:
                net.crash_relay()
            if step % 500 == 0:
                net.check_acked_are_stored()
                net.check_no_foreign_content()
        net.check_replicas_stored()
        net.converge_and_check()
    except AssertionError as exc:
        raise AssertionError(f"soak failed with CRDTSYNC_SOAK_SEED={seed}: {exc}") from exc
    finally:
        net.close()
