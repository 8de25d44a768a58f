"""relay.readiness and the probes: /healthz while the process runs, /readyz only while
the relay takes work; with Redis killed and restarted, the relay goes not ready and
back by itself, keeps what its clients sent, and acknowledges it once stored."""

from __future__ import annotations

import asyncio
import http.client
import time
from pathlib import Path

import pycrdt

from crdtsync import Replica
from crdtsync.events import RelayErrorReceived, ReplicaEvent, StatusChanged, SyncStatus
from crdtsync.ids import DocId
from crdtsync.sync.protocol import ErrorCode
from relay.server import Relay
from relay.storage.redis import RedisStorage

from .redis_server import RedisServer

D = DocId("doc")


def get(relay: Relay, path: str) -> tuple[int, str]:
    """GET ``path`` (blocking: run it in a thread, the relay is in this loop)."""
    connection = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


async def test_probes_while_running_and_stopping() -> None:
    relay = Relay("memory://", port=0)
    assert relay.readiness.reason() == "not started"
    await relay.start()
    try:
        assert await asyncio.to_thread(get, relay, "/healthz") == (200, "ok\n")
        assert await asyncio.to_thread(get, relay, "/readyz") == (200, "ready\n")
        assert relay.readiness.ready
    finally:
        stopping = asyncio.ensure_future(relay.stop())
        await relay.readiness.wait(False)
        assert relay.readiness.reason() == "shutting down"
        await stopping


async def test_redis_lost_and_back(tmp_path: Path) -> None:
    """Redis SIGKILLed under a serving relay: /readyz turns 503, the client's edit gets
    ERROR storage_unavailable and stays pending on the same connection; Redis
    restarted from its AOF: /readyz 200 and the edit is acknowledged, with no
    restart of the relay or reconnect of the client; nothing acknowledged is lost."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    replica = Replica(tmp_path / "replica.db")
    events: list[ReplicaEvent] = []
    told = asyncio.Event()

    def record(event: ReplicaEvent) -> None:
        events.append(event)
        if isinstance(event, RelayErrorReceived):
            told.set()

    try:
        storage = RedisStorage(server.url, interval=0.2)
        async with Relay(storage, port=0) as relay:
            form = replica.open(D).get("m", type=pycrdt.Map)
            form["before"] = 1
            await replica.connect(relay.url)
            await replica.wait_synced(D, timeout=30)
            replica.observe(record)

            killed = time.monotonic()
            server.kill()
            await relay.readiness.wait(False)
            unready_after = time.monotonic() - killed
            status, body = await asyncio.to_thread(get, relay, "/readyz")
            assert status == 503 and "storage unreachable" in body
            form["during"] = 2
            await asyncio.wait_for(told.wait(), 30)
            errors = [e.error.code for e in events if isinstance(e, RelayErrorReceived)]
            assert errors == [ErrorCode.STORAGE_UNAVAILABLE]
            assert replica.pending(D) == 1

            restarted = time.monotonic()
            server.start()
            await relay.readiness.wait(True)
            ready_after = time.monotonic() - restarted
            assert await asyncio.to_thread(get, relay, "/readyz") == (200, "ready\n")
            await replica.wait_synced(D, timeout=30)
            acked_after = time.monotonic() - restarted
            assert replica.pending(D) == 0
            # The same connection all along: the replica never went offline.
            statuses = {e.status for e in events if isinstance(e, StatusChanged)}
            assert statuses <= {SyncStatus.SYNCING, SyncStatus.SYNCED}
            assert replica.status is SyncStatus.SYNCED
            stored = await storage.load(D)
            assert len(stored.updates) == 2
            print(
                f"\nnot ready {unready_after:.2f} s after the kill; ready {ready_after:.2f} s "
                f"and acknowledged {acked_after:.2f} s after the restart"
            )
    finally:
        await replica.disconnect()
        replica.close()
        server.kill()
