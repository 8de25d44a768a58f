"""The relay's event loop while a replica joins a 30 MB document (issue 18:
encoding a large document does not hold the event loop for more than a few ms
at a time), on SQLite and on Redis, with the room not loaded yet and loaded.

The joiner runs in a process of its own (its own work would otherwise count);
a probe task in the relay's loop measures the longest stretch of the loop
thread's CPU time between two of its turns (CPU time, so that other processes
on a busy machine do not count). Figures are printed; the bounds asserted are
generous: large syncs read the stored snapshot on either store (the room's
own encoding held the loop ~3 ms per MB), and loading a room is one pycrdt
call (~1 ms per MB, reported)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from crdtsync.ids import DocId
from relay.server import Relay
from relay.storage import open_storage

D = DocId("big")
MB = 1_000_000
JOINER = """
import asyncio, sys
from crdtsync import Replica

async def main():
    replica = Replica(":memory:")
    replica.open("big")
    await replica.connect(sys.argv[1])
    await replica.wait_synced("big", timeout=120)
    print(len(replica.open("big").get("t", type=__import__("pycrdt").Text)), flush=True)
    sys.stdin.read()  # stays subscribed until the test closes its input
    await replica.disconnect()
    replica.close()

asyncio.run(main())
"""


class LoopProbe:
    """The longest CPU time the loop thread spent between two turns of this task."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            before = time.thread_time()
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, time.thread_time() - before)

    @contextlib.asynccontextmanager
    async def measuring(self) -> AsyncIterator[LoopProbe]:
        self.worst = 0.0
        self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def _seed(url: str, size: int) -> int:
    """A store holding one document of ``size`` bytes of text, compacted."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=77)
    doc.get("t", type=pycrdt.Text).insert(0, "".join(f"{i:015d}\n" for i in range(size // 16)))
    update = doc.get_update()
    async with open_storage(url) as storage:
        [entry] = await storage.append([(D, update)])
        await storage.compact(D, update, entry)
    return len(doc.get("t", type=pycrdt.Text))


async def _join(url: str) -> tuple[asyncio.subprocess.Process, int]:
    """A replica in another process that joins and stays; the length it got."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", JOINER, url, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=120)
    return proc, int(line or b"-1")


async def _leave(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), timeout=30)
    except TimeoutError:
        proc.kill()
        await proc.wait()


@pytest.mark.parametrize("store", ["sqlite", "redis"])
async def test_a_30_mb_join_holds_the_event_loop_briefly(
    tmp_path: Path, request: pytest.FixtureRequest, store: str
) -> None:
    url = (
        f"sqlite:///{tmp_path}/relay.db"
        if store == "sqlite"
        else request.getfixturevalue("redis_url")
    )
    length = await _seed(url, 30 * MB)
    probe = LoopProbe()
    async with Relay(url, port=0) as relay:
        async with probe.measuring():
            first, got = await _join(relay.url)  # the room loads for it
        not_loaded = probe.worst
        try:
            assert got == length
            async with probe.measuring():
                second, got = await _join(relay.url)  # the room is loaded: first stays
            loaded = probe.worst
            await _leave(second)
            assert got == length
        finally:
            await _leave(first)
    print(
        f"{store}: longest event-loop stretch (CPU) during a 30 MB join: room not loaded "
        f"{not_loaded * 1000:.1f} ms, loaded {loaded * 1000:.1f} ms"
    )
    assert loaded < 0.030  # the stored snapshot, in pieces (the room's encoding: ~90 ms)
    assert not_loaded < 0.250  # loading the room: one pycrdt call, ~1 ms per MB
