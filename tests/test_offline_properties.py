"""Property: an offline app never loses a change.

Random sequences of offline edits, restarts (clean, and crashes that skip the
clean close), evictions under a moving fake clock, removals, prefetches and
reconnects (through a real relay on loopback), drawn by Hypothesis. At the end
the app reconnects until nothing is pending, and every edit ever made must be
on the relay: a fresh replica prefetches everything and finds each one.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

import pycrdt
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from crdtsync import Replica, SyncStateChanged
from crdtsync.store.sqlitefile import OpenFiles
from relay.server import Relay

DOCS = ["site/a", "site/b", "site/c"]


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class OfflineApp(RuleBasedStateMachine):
    """One app replica (an SQLite file) and one relay; the model is every edit made."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="offline-prop-"))
        self.loop = asyncio.new_event_loop()
        self.relay = Relay("memory://", port=0)
        self.loop.run_until_complete(self.relay.start())
        self.clock = Clock()
        self.replica = self._open()
        self.edits: dict[str, set[int]] = {doc: set() for doc in DOCS}
        self.counter = 0

    def _open(self) -> Replica:
        return Replica(self.dir / "app.db", clock=self.clock)

    def run(self, coro: object) -> None:
        self.loop.run_until_complete(coro)  # type: ignore[arg-type]

    @rule(doc=st.sampled_from(DOCS), count=st.integers(1, 3))
    def edit_offline(self, doc: str, count: int) -> None:
        entries = self.replica.open(doc).get("edits", type=pycrdt.Map)
        for _ in range(count):
            self.counter += 1
            entries[str(self.counter)] = self.counter
            self.edits[doc].add(self.counter)

    @rule()
    def restart(self) -> None:
        self.replica.close()
        self.replica = self._open()

    @rule()
    def crash(self) -> None:
        """The process dies: the store is never closed (no clean-close marker)."""
        store = self.replica.store
        conn, store._conn = store._conn, None  # type: ignore[attr-defined]
        conn.close()
        OpenFiles.release(store._key)  # type: ignore[attr-defined]
        self.replica._closed = True
        self.replica = self._open()

    @rule(days=st.integers(0, 10))
    def time_passes(self, days: int) -> None:
        self.clock.now += days * 86400

    @rule(days=st.integers(0, 8), budget=st.none() | st.integers(0, 2000))
    def evict(self, days: int, budget: int | None) -> None:
        self.replica.evict(unused_for=timedelta(days=days), max_bytes=budget)

    @rule(doc=st.sampled_from(DOCS))
    def remove_if_nothing_pending(self, doc: str) -> None:
        with contextlib.suppress(ValueError):  # pending work: refused, as it must be
            self.replica.remove(doc)

    @rule(pattern=st.sampled_from(["site/*", "site/a", "*"]))
    def prefetch(self, pattern: str) -> None:
        self.run(self.replica.prefetch([pattern], url=self.relay.url))

    @rule(wait=st.booleans())
    def reconnect(self, wait: bool) -> None:
        self.run(self._sync(wait))

    async def _sync(self, wait: bool) -> None:
        replica = self.replica
        done = asyncio.Event()
        stop = replica.observe(
            lambda e: (
                done.set()
                if isinstance(e, SyncStateChanged) and not e.state.pending_updates
                else None
            )
        )
        try:
            await replica.connect(self.relay.url)
            if wait:
                if not replica.sync_state.pending_updates:
                    done.set()
                async with asyncio.timeout(30):
                    await done.wait()
        finally:
            stop()
            await replica.disconnect()

    def teardown(self) -> None:
        try:
            self.run(self._sync(wait=True))
            with Replica(":memory:") as check:
                self.run(check.prefetch(["*"], url=self.relay.url))
                for doc, numbers in self.edits.items():
                    if not numbers:
                        continue
                    entries = check.open(doc).get("edits", type=pycrdt.Map)
                    missing = {n for n in numbers if str(n) not in entries}
                    assert not missing, f"{doc}: edits {sorted(missing)} never reached the relay"
        finally:
            self.replica.close()
            self.run(self.relay.stop())
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)


TestOfflineApp = OfflineApp.TestCase
TestOfflineApp.settings = settings(
    settings.default,
    max_examples=max(10, settings.default.max_examples // 2),
    stateful_step_count=max(10, settings.default.stateful_step_count // 2),
)
