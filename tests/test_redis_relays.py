"""Several relay processes on one Redis: what README's "Running several relays on
Redis" promises, through real processes, real websockets, real Node Yjs clients
and a real, private redis-server.

- two and three relays, native and Yjs clients spread over them, converge; late
  joiners on either relay get everything;
- SIGKILL of a relay mid-stream: its clients fail over, every ACKed update is in
  Redis and reaches everyone, the rest is resent from the outboxes;
- SIGKILL and restart of redis-server (AOF, appendfsync always): every ACKed
  update survives, relays and clients recover by themselves, ``/readyz`` goes
  503 and back to 200;
- two relays compacting the same document while writes arrive: storage always
  replays to the rooms' document;
- a relay receives nothing for rooms loaded only elsewhere (work per update does
  not grow with rooms loaded on other relays).

Nothing sleeps to wait: tests await pycrdt change events, the Node driver's
replies (which wait on Yjs events), or the relays' own log lines.
"""

from __future__ import annotations

import asyncio
import http.client
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from crdtsync import Replica
from crdtsync.ids import DocId
from relay.room import replay
from relay.server import Relay
from relay.storage.redis import RedisStorage

from .redis_server import RedisServer
from .relay_helpers import RelayProcess, eventually
from .test_yjs_interop import YjsClient, node  # noqa: F401 - the fixture (see yjs_cluster)

D = DocId("site-12/form-3")
MAP = "form"

pytestmark = pytest.mark.timeout(300)


def form(replica: Replica) -> pycrdt.Map[Any]:
    return replica.open(D).get(MAP, type=pycrdt.Map)


async def until_form(replica: Replica, expected: dict[str, Any], timeout: float = 60) -> None:
    await eventually(replica.open(D), lambda: form(replica).to_py() == expected, timeout)


def readyz(port: int) -> int:
    """The status of ``GET /readyz`` (blocking: run it in a thread)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/readyz")
        return connection.getresponse().status
    finally:
        connection.close()


async def stored_form(url: str, doc_id: DocId = D) -> dict[str, Any]:
    """The document as a relay would load it from Redis now."""
    async with RedisStorage(url) as storage:
        doc = replay(await storage.load(doc_id)).doc
    return doc.get(MAP, type=pycrdt.Map).to_py() or {}


class Cluster:
    """Relay processes on one store, and the clients the test starts (all stopped at
    the end)."""

    def __init__(self, store: str, tmp_path: Path, node_path: str | None = None) -> None:
        self.store = store
        self.dir = tmp_path
        self.node = node_path
        self.relays: list[RelayProcess] = []
        self.replicas: list[Replica] = []
        self.yjs: list[YjsClient] = []

    async def relay(self, *args: str) -> RelayProcess:
        index = len(self.relays)
        process = RelayProcess(
            self.store, self.dir / f"relay-{index}.log", args=["--relay-id", f"r{index}", *args]
        )
        self.relays.append(process)
        await process.start()
        return process

    async def replica(self, *urls: str) -> Replica:
        replica = Replica(self.dir / f"replica-{len(self.replicas)}.db")
        self.replicas.append(replica)
        replica.open(D)
        await replica.connect(list(urls))
        await replica.wait_synced(D, timeout=60)
        return replica

    async def yjs_client(self, relay: RelayProcess) -> YjsClient:
        assert self.node is not None
        client = await YjsClient.start(self.node, self.dir / f"node-{len(self.yjs)}.log")
        self.yjs.append(client)
        await client.call("connect", url=f"{relay.url}/yjs", room=D)
        await client.call("wait_synced", timeout=60)
        return client

    async def close(self) -> None:
        for replica in self.replicas:
            await replica.disconnect()
            replica.close()
        for client in self.yjs:
            await client.kill()
        for relay in self.relays:
            await relay.ensure_stopped()


@pytest.fixture
async def cluster(redis_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    made = Cluster(redis_url, tmp_path)
    yield made
    await made.close()


@pytest.fixture
def yjs_cluster(cluster: Cluster, request: pytest.FixtureRequest) -> Cluster:
    """``cluster`` that can start Node Yjs clients (the interop tests' ``node`` fixture:
    skipped without Node, failed in CI)."""
    cluster.node = request.getfixturevalue("node")
    return cluster


# -- convergence ---------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [2, 3])
async def test_native_and_yjs_clients_spread_over_relays_converge(
    yjs_cluster: Cluster, count: int
) -> None:
    cluster = yjs_cluster
    relays = [await cluster.relay() for _ in range(count)]
    natives = [await cluster.replica(relay.url) for relay in relays]
    browsers = [await cluster.yjs_client(relay) for relay in relays]
    for i in range(count):
        form(natives[i])[f"py{i}"] = f"from python on r{i}"
        await browsers[i].call("set", map=MAP, key=f"js{i}", value=f"from yjs on r{i}")
    expected = {f"py{i}": f"from python on r{i}" for i in range(count)} | {
        f"js{i}": f"from yjs on r{i}" for i in range(count)
    }
    for i in range(count):
        await until_form(natives[i], expected)
        await browsers[i].call("wait_content", maps={MAP: expected}, timeout=60)
    for replica in natives:
        await replica.wait_synced(D, timeout=60)
    # Late joiners, on the first relay and on the last, get everything.
    late = await cluster.replica(relays[0].url)
    await until_form(late, expected)
    late_js = await cluster.yjs_client(relays[-1])
    await late_js.call("wait_content", maps={MAP: expected}, timeout=60)
    assert await stored_form(cluster.store) == expected


# -- a relay dies ----------------------------------------------------------------------------------


async def test_a_relay_killed_mid_stream(yjs_cluster: Cluster) -> None:
    """The writer's relay is SIGKILLed while it writes: what it had ACKed is in Redis at
    that instant; the writer fails over to the other relay, resends the rest from
    its outbox, and every client (native and Yjs) ends with all of it."""
    cluster = yjs_cluster
    a, b = await cluster.relay(), await cluster.relay()
    writer = await cluster.replica(a.url, b.url)
    reader = await cluster.replica(b.url)
    browser = await cluster.yjs_client(b)
    edits, kill_at = 200, 80
    acked = 0
    for n in range(edits):
        form(writer)[f"k{n}"] = n
        if n == kill_at:
            acked = (n + 1) - writer.pending(D)  # ACKs cover a prefix of the outbox
            await a.kill()
            stored = await stored_form(cluster.store)
            assert all(stored.get(f"k{m}") == m for m in range(acked)), "an ACKed edit is lost"
        await asyncio.sleep(0)  # let the connector send as the app keeps editing
    expected = {f"k{n}": n for n in range(edits)}
    await writer.wait_synced(D, timeout=120)
    assert writer.connector is not None and writer.connector.url == b.url
    await until_form(reader, expected)
    await browser.call(
        "wait_content", maps={MAP: {k: float(v) for k, v in expected.items()}}, timeout=60
    )
    assert await stored_form(cluster.store) == expected
    print(f"\n{acked} of {kill_at + 1} edits were ACKed when the relay was killed")


# -- Redis dies ------------------------------------------------------------------------------------


async def test_redis_killed_and_restarted(tmp_path: Path) -> None:
    """redis-server SIGKILLed and restarted from its AOF under two relays and their
    writers: both relays report not ready (503) and ready again (200) without a
    restart; the writers' edits made meanwhile are acknowledged once Redis is back
    and reach the other relay's writer; nothing acknowledged is lost."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    cluster = Cluster(server.url, tmp_path)
    try:
        relays = [await cluster.relay(), await cluster.relay()]
        writers = [await cluster.replica(relay.url) for relay in relays]
        for i, writer in enumerate(writers):
            for n in range(20):
                form(writer)[f"w{i}-{n}"] = n
        for writer in writers:
            await writer.wait_synced(D, timeout=60)
        before = await stored_form(server.url)
        assert len(before) == 40

        marks = [len(relay.lines) for relay in relays]
        killed = time.monotonic()
        server.kill()
        for relay, mark in zip(relays, marks, strict=True):
            await relay.logged("not ready: storage unreachable", after=mark)
        unready = time.monotonic() - killed
        assert [await asyncio.to_thread(readyz, r.port) for r in relays] == [503, 503]
        for i, writer in enumerate(writers):
            form(writer)[f"during-{i}"] = i
        marks = [len(relay.lines) for relay in relays]
        restarted = time.monotonic()
        server.start()
        for relay, mark in zip(relays, marks, strict=True):
            await relay.logged(f"relay {relay.args[1]} ready", after=mark)
        ready = time.monotonic() - restarted
        assert [await asyncio.to_thread(readyz, r.port) for r in relays] == [200, 200]
        for writer in writers:
            await writer.wait_synced(D, timeout=60)
        acked = time.monotonic() - restarted
        expected = before | {"during-0": 0, "during-1": 1}
        for writer in writers:
            await until_form(writer, expected)
        assert await stored_form(server.url) == expected
        assert all(relay.proc is not None and relay.proc.returncode is None for relay in relays)
        print(
            f"\n/readyz 503 {unready:.2f} s after Redis was killed; 200 {ready:.2f} s and "
            f"every edit acknowledged {acked:.2f} s after it restarted"
        )
    finally:
        await cluster.close()
        server.kill()


# -- compaction by several relays ------------------------------------------------------------------


async def test_two_relays_compacting_while_writes_arrive(redis_url: str, tmp_path: Path) -> None:
    """Both relays compact the same document often (a tiny threshold) while writers on
    each relay keep writing: after every round the stored state replays to the
    rooms' document, and the replicas hold the same."""
    async with (
        Relay(redis_url, port=0, compact_min_bytes=256) as a,
        Relay(redis_url, port=0, compact_min_bytes=256) as b,
    ):
        writers = [Replica(tmp_path / "wa.db"), Replica(tmp_path / "wb.db")]
        try:
            for writer, relay in zip(writers, (a, b), strict=True):
                writer.open(D)
                await writer.connect(relay.url)
                await writer.wait_synced(D, timeout=30)
            for round_ in range(6):
                for n in range(40):
                    for i, writer in enumerate(writers):
                        form(writer)[f"{i}-{round_}-{n % 7}"] = "x" * (n + 10)
                    await asyncio.sleep(0)  # writes of both relays interleave
                for writer in writers:
                    await writer.wait_synced(D, timeout=60)
                # Each writer's own keys are stored (ACKed); the other's may still be on
                # their way to it through the other relay.
                expected = {
                    key: value
                    for i, writer in enumerate(writers)
                    for key, value in form(writer).to_py().items()
                    if key.startswith(f"{i}-")
                }
                for writer in writers:
                    await until_form(writer, expected)
                assert await stored_form(redis_url) == expected
                for relay in (a, b):
                    room = relay.hub.document_state(D)
                    assert room is not None
                    doc: pycrdt.Doc[Any] = pycrdt.Doc()
                    doc.apply_update(room)
                    assert doc.get(MAP, type=pycrdt.Map).to_py() == expected
            async with RedisStorage(redis_url) as storage:
                stored = await storage.load(D)
            assert stored.snapshot is not None and stored.snapshot_upto > 0  # compacted
        finally:
            for writer in writers:
                await writer.disconnect()
                writer.close()


# -- work does not grow with rooms loaded elsewhere --------------------------------------------


async def test_a_relay_hears_nothing_of_rooms_loaded_only_elsewhere(
    redis_url: str, tmp_path: Path
) -> None:
    """1,000 rooms over two relays (500 each): writes to one relay's rooms cost the other
    relay nothing, not even a pub/sub message; a room loaded on both gets exactly
    its own updates across."""
    storages = [RedisStorage(redis_url), RedisStorage(redis_url)]
    async with Relay(storages[0], port=0) as a, Relay(storages[1], port=0) as b:
        replicas = [Replica(tmp_path / "ra.db"), Replica(tmp_path / "rb.db")]
        try:
            for side, (replica, relay) in enumerate(zip(replicas, (a, b), strict=True)):
                for n in range(500):
                    replica.open(f"{'ab'[side]}-{n:03}")
                replica.open(D)
                await replica.connect(relay.url)
                for n in range(500):
                    await replica.wait_synced(f"{'ab'[side]}-{n:03}", timeout=120)
            assert len(a.hub.rooms) == len(b.hub.rooms) == 501
            assert storages[0].following == storages[1].following == 501
            for n in range(0, 500, 5):
                replicas[0].open(f"a-{n:03}").get(MAP, type=pycrdt.Map)["k"] = n
            form(replicas[0])["shared"] = "both"
            for n in range(0, 500, 5):
                await replicas[0].wait_synced(f"a-{n:03}", timeout=60)
            await until_form(replicas[1], {"shared": "both"})
            # b received one message: the shared room's update, and nothing for a's rooms.
            assert storages[1]._feed.messages == 1
            assert storages[1]._feed.delivered == 1
            assert b.hub.remote_updates == 1
        finally:
            for replica in replicas:
                await replica.disconnect()
                replica.close()
