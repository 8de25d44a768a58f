"""A Yjs-style randomized soak over the same simulated network as the state
machine (:mod:`tests.convergence`): seeded, thousands of rounds, no shrinking.

As in Yjs' own randomized tests, each round one replica makes one random edit,
then: 50% the network delivers one ready event (a frame either way, possibly an
UPDATE twice, a late frame of an abandoned connection, a room load, a commit,
a compaction, a reconnect), 2% a replica disconnects (or reconnects), 1%
everything is flushed; rarer rounds crash a replica or the relay, let the relay
drop a connection first, partition or heal, or unload idle rooms. Invariants
are checked every 250 rounds, and the run ends in convergence (everything
compared, then restarted from the stores and compared again).

The seed is random unless ``CRDTSYNC_SOAK_SEED`` is set, and is printed (pytest
shows it with a failure, and the assertion repeats it); ``CRDTSYNC_SOAK_STEPS``
sets the rounds (default 2,000 in the ``ci`` profile, 20,000 in ``thorough``;
SQLite runs a quarter of them).
"""

from __future__ import annotations

import os
import random

import pytest

from .convergence import BACKENDS, Network
from .edits import KINDS

THOROUGH = os.environ.get("CRDTSYNC_HYPOTHESIS_PROFILE") == "thorough"
STEPS = int(os.environ.get("CRDTSYNC_SOAK_STEPS", "0")) or (20_000 if THOROUGH else 2_000)


def soak(seed: int, steps: int, backend: str) -> None:
    """Run the soak; raise AssertionError (naming the seed) if a property fails."""
    rng = random.Random(seed)
    size = rng.randint(3, 5)
    net = Network(
        size,
        backend,
        replica_compact_bytes=rng.choice([1 << 18, 1024]),
        relay_compact_bytes=rng.choice([1 << 18, 1024]),
        max_frame=rng.choice([1 << 20, 2048]),
        seed=seed,
    )
    try:
        for i in range(size):
            net.connect(i)
        for step in range(steps):
            net.edit(rng.randrange(size), rng.choice(KINDS), rng.randrange(51), rng.randrange(51))
            roll = rng.random()
            j = rng.randrange(size)
            if roll < 0.50:
                net.step(rng.randrange(256), duplicate=rng.random() < 0.05, edit=None)
            elif roll < 0.52:
                if net.nodes[j].link is None:
                    net.connect(j)
                else:
                    net.drop(j, keep=rng.randrange(3))
            elif roll < 0.53:
                net.quiesce()
            elif roll < 0.535:
                net.relay_drop(j, keep=rng.randrange(3))
            elif roll < 0.538:
                net.crash_replica(j)
            elif roll < 0.539:
                net.crash_relay()
            elif roll < 0.541:
                net.heal() if net.partitioned else net.partition({j, (j + 1) % size})
            elif roll < 0.542:
                net.janitor()
            if step % 250 == 249:
                net.check_all()
        net.converge_and_check()
    except AssertionError as exc:
        tail = "\n".join(net.log[-40:])
        raise AssertionError(
            f"soak failed with CRDTSYNC_SOAK_SEED={seed} ({backend}): {exc}\nlast events:\n{tail}"
        ) from exc
    finally:
        net.close()


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("backend", BACKENDS)
def test_yjs_style_soak(backend: str) -> None:
    seed = int(os.environ.get("CRDTSYNC_SOAK_SEED", random.randrange(1 << 32)))
    print(f"CRDTSYNC_SOAK_SEED={seed}")  # shown by pytest when the test fails
    soak(seed, STEPS if backend == "memory" else STEPS // 4, backend)
