"""The asyncio connector: backoff, error classification, pings, refusals; and relay
behaviour seen from a client (storage failure, compaction, idle rooms)."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Sequence
from pathlib import Path

import pycrdt
import pytest
import websockets
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosedError, InvalidURI

from crdtsync import MemoryStore, Replica
from crdtsync.errors import (
    ProtocolError,
    RelayRefusedError,
    StoreWriteError,
    SyncError,
    TooManyDocumentsError,
)
from crdtsync.events import DocumentOverLimit, RelayErrorReceived, ReplicaEvent, SyncStatus
from crdtsync.ids import DocId
from crdtsync.store import NewEntry
from crdtsync.sync.client import Connector, backoff, is_retryable
from crdtsync.sync.protocol import ErrorCode, ErrorFrame, encode_frame
from relay.room import replay
from relay.server import Relay
from relay.storage import MemoryData, MemoryStorage

from .relay_helpers import eventually

D = DocId("doc")


@given(st.lists(st.floats(0, 0.999), min_size=30, max_size=30))
def test_backoff_grows_is_capped_and_jittered(randoms: list[float]) -> None:
    source = iter(randoms)
    delays = list(itertools.islice(backoff(0.5, 8.0, 2.0, rng=lambda: next(source)), 30))
    ceilings = [min(8.0, 0.5 * 2**n) for n in range(30)]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 8.0


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        next(backoff(0))
    with pytest.raises(ValueError):
        next(backoff(2.0, 1.0))


def test_which_errors_are_retried() -> None:
    assert is_retryable(OSError("connection refused"))
    assert is_retryable(TimeoutError())
    assert is_retryable(ProtocolError("bad frame from relay"))
    assert is_retryable(ConnectionClosedError(None, None))
    assert not is_retryable(RelayRefusedError("unsupported_version", "v9"))
    assert not is_retryable(InvalidURI("http://x", "not a websocket URI"))
    assert not is_retryable(ValueError("a bug"))


async def test_a_fatal_refusal_stops_retrying(replica: Replica) -> None:
    async def refuse(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(
            encode_frame(ErrorFrame(ErrorCode.UNSUPPORTED_VERSION, "v9 only", fatal=True))
        )
        await ws.close(1008, "unsupported_version")

    async with websockets.serve(refuse, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        replica.open(D)
        # connect() waits for the first attempt, so the refusal is raised right there.
        with pytest.raises(RelayRefusedError, match="v9 only"):
            await replica.connect(f"ws://127.0.0.1:{port}")
        assert replica.connector is None
        assert replica.status is SyncStatus.OFFLINE


async def test_a_half_open_connection_is_detected_by_pings(replica: Replica) -> None:
    async with Relay("memory://", port=0) as relay:
        replica.open(D)
        await replica.connect(relay.url, ping_interval=0.2, ping_timeout=0.2)
        await replica.wait_synced(D, timeout=20)
        connector = replica.connector
        assert connector is not None
        [server_side] = relay.connections
        server_side.transport.pause_reading()  # the relay stops answering, socket stays open
        await connector.wait_status(SyncStatus.OFFLINE, timeout=20)
        # The client noticed and reconnects on its own; edits made meanwhile arrive.
        replica.open(D).get("m", type=pycrdt.Map)["after"] = True
        await replica.wait_synced(D, timeout=30)
        server_side.transport.abort()


async def test_storage_failure_is_reported_and_nothing_is_lost(replica: Replica) -> None:
    data = MemoryData()
    errors: list[str] = []
    refused = asyncio.Event()

    def record(event: ReplicaEvent) -> None:
        if isinstance(event, RelayErrorReceived):
            errors.append(event.error.code)
            refused.set()

    replica.observe(record)
    async with Relay(MemoryStorage(data), port=0) as relay:
        items = replica.open(D).get("m", type=pycrdt.Map)
        await replica.connect(relay.url)
        await replica.wait_synced(D, timeout=20)
        data.disk_full = True
        items["during"] = "disk full"
        await asyncio.wait_for(refused.wait(), 20)
        assert ErrorCode.STORAGE_FAILED in errors
        assert replica.pending(D) == 1  # not acknowledged, kept
        data.disk_full = False  # the operator frees space; the client's retry succeeds
        await replica.wait_synced(D, timeout=30)
        assert replica.pending(D) == 0
        stored = await relay.storage.load(D)
        replayed = replay(stored)
        doc, _ = replayed.doc, replayed.held
        assert doc.get("m", type=pycrdt.Map).to_py() == {"during": "disk full"}


async def test_the_relay_compacts_rooms_and_unloads_idle_ones(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/relay.db"
    async with Relay(store, port=0, compact_min_bytes=4096, idle_timeout=0.1) as relay:
        hub = relay.hub
        compacted, unloaded = asyncio.Event(), asyncio.Event()
        on_compacted, on_unload = hub.compacted, hub.unload_idle

        def compacted_hook(doc_id: DocId, snapshot_bytes: int, upto: int) -> None:
            on_compacted(doc_id, snapshot_bytes, upto)
            compacted.set()

        def unload_hook(now: float, idle_for: float) -> list[DocId]:
            done = on_unload(now, idle_for)
            if D in done:
                unloaded.set()
            return done

        hub.compacted = compacted_hook  # type: ignore[method-assign]
        hub.unload_idle = unload_hook  # type: ignore[method-assign]
        with Replica(":memory:") as writer:
            text = writer.open(D).get("t", type=pycrdt.Text)
            await writer.connect(relay.url)
            await writer.wait_synced(D, timeout=20)
            for i in range(400):
                text.insert(len(text), f"line {i}\n")
                if i % 50 == 0:
                    await writer.wait_synced(D, timeout=20)
            await writer.wait_synced(D, timeout=20)
            expected = str(text)
            await asyncio.wait_for(compacted.wait(), 20)
            await writer.disconnect()
        stored = await relay.storage.load(D)
        assert stored.snapshot is not None and stored.snapshot_upto > 0
        assert len(stored.updates) < 400
        replayed = replay(stored)
        doc, held = replayed.doc, replayed.held
        assert held == [] and str(doc.get("t", type=pycrdt.Text)) == expected
        await asyncio.wait_for(unloaded.wait(), 20)  # unloaded once idle
        assert D not in hub.rooms
        with Replica(":memory:") as reader:  # and loaded again on demand
            await reader.connect(relay.url)
            await reader.wait_synced(D, timeout=20)
            assert str(reader.open(D).get("t", type=pycrdt.Text)) == expected
            await reader.disconnect()


async def test_connect_twice_is_an_error(replica: Replica) -> None:
    async with Relay("memory://", port=0) as relay:
        await replica.connect(relay.url)
        with pytest.raises(RuntimeError, match="already connected"):
            await replica.connect(relay.url)


async def test_a_relay_that_is_down_leaves_the_replica_offline_and_working(
    replica: Replica,
) -> None:
    items = replica.open(D).get("m", type=pycrdt.Map)
    await replica.connect("ws://127.0.0.1:9")  # nothing listens there
    items["offline"] = True
    assert replica.pending(D) == 1
    with pytest.raises(TimeoutError):
        await replica.wait_synced(D, timeout=0.3)
    assert replica.status in (SyncStatus.OFFLINE, SyncStatus.CONNECTING)
    assert items["offline"] is True and replica.pending(D) == 1


class FlakyStore(MemoryStore):
    """A memory store whose writes fail while ``fail`` is set (a full disk)."""

    fail = False

    def append(self, doc_id: DocId, entries: Sequence[NewEntry]) -> list[int]:
        if self.fail:
            raise StoreWriteError("disk full (simulated)")
        return super().append(doc_id, entries)


async def test_a_local_store_failure_while_syncing_is_retried_not_fatal(tmp_path: Path) -> None:
    async with Relay("memory://", port=0) as relay:
        flaky = FlakyStore()
        with Replica(store=flaky) as a, Replica(tmp_path / "b.db") as b:
            a.open(D)
            items = b.open(D).get("m", type=pycrdt.Map)
            await a.connect(relay.url)
            await b.connect(relay.url)
            await a.wait_synced(D, timeout=20)
            await b.wait_synced(D, timeout=20)
            flaky.fail = True
            items["x"] = 1  # reaches a, which cannot store it: a's connection drops
            await b.wait_synced(D, timeout=20)
            flaky.fail = False  # space freed: a reconnects by itself and catches up
            items["y"] = 2
            await b.wait_synced(D, timeout=20)
            await a.wait_synced(D, timeout=30)
            m = a.open(D).get("m", type=pycrdt.Map)
            await eventually(a.open(D), lambda: m.to_py() == {"x": 1, "y": 2})
            assert a.connector is not None and a.connector.running
            await a.disconnect()
            await b.disconnect()


async def test_a_change_whose_write_failed_is_stored_before_it_is_sent() -> None:
    """DESIGN.md guarantee 4, also for a change a failed write left in memory."""
    async with Relay("memory://", port=0) as relay:
        flaky = FlakyStore()
        with Replica(store=flaky) as a:
            items = a.open(D).get("m", type=pycrdt.Map)
            flaky.fail = True
            with pytest.raises(ExceptionGroup):
                items["unstored"] = "x"
            await a.connect(relay.url)
            with pytest.raises(TimeoutError):  # cannot be stored: not sent
                await a.wait_synced(D, timeout=0.5)
            replayed = replay(await relay.storage.load(D))
            doc, _ = replayed.doc, replayed.held
            assert doc.get("m", type=pycrdt.Map).to_py() == {}
            flaky.fail = False  # now it is stored, then sent
            await a.wait_synced(D, timeout=30)
            assert [e.seq for e in a.store.outbox(D)] == []
            replayed = replay(await relay.storage.load(D))
            doc, _ = replayed.doc, replayed.held
            assert doc.get("m", type=pycrdt.Map).to_py() == {"unstored": "x"}
            await a.disconnect()


async def test_wait_synced_raises_once_disconnected(replica: Replica) -> None:
    replica.open(D).get("m", type=pycrdt.Map)["pending"] = True
    await replica.connect("ws://127.0.0.1:9")
    connector = replica.connector
    assert connector is not None
    waiter = asyncio.get_running_loop().create_task(connector.wait_synced(D, timeout=30))
    await asyncio.sleep(0)  # let it start waiting
    await replica.disconnect()
    with pytest.raises(SyncError, match="disconnected"):
        await waiter


# -- several relays: failover ------------------------------------------------------------------


async def test_a_list_of_urls_is_tried_in_order_wrapping(replica: Replica) -> None:
    """After each failure the next attempt goes to the next URL, wrapping around."""
    attempts: list[int] = []
    enough = asyncio.Event()

    def failing(index: int) -> object:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            attempts.append(index)
            if len(attempts) >= 7:
                enough.set()
            writer.close()  # no websocket handshake: the attempt fails

        return accept

    servers = [await asyncio.start_server(failing(i), "127.0.0.1", 0) for i in range(3)]
    urls = [f"ws://127.0.0.1:{s.sockets[0].getsockname()[1]}" for s in servers]
    replica.open(D)
    connector = Connector(replica, urls, delays=lambda: itertools.repeat(0.0))
    assert (connector.urls, connector.url) == (urls, urls[0])
    connector.start()
    try:
        await asyncio.wait_for(enough.wait(), 30)
    finally:
        await connector.stop()
        for server in servers:
            server.close()
            await server.wait_closed()
    assert attempts[:7] == [0, 1, 2, 0, 1, 2, 0]


async def test_connect_to_a_list_skips_a_relay_that_is_down(replica: Replica) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{closed.getsockname()[1]}"  # bound, not listening: refused
        async with Relay("memory://", port=0) as relay:
            replica.open(D).get("m", type=pycrdt.Map)["k"] = 1
            await replica.connect([dead, relay.url])
            await replica.wait_synced(D, timeout=30)
            assert replica.connector is not None
            assert replica.connector.url == relay.url
            assert replica.connector.urls == [dead, relay.url]
            assert (await relay.storage.load(D)).updates


async def test_connect_needs_at_least_one_url(replica: Replica) -> None:
    replica.open(D)
    with pytest.raises(ValueError, match="non-empty list"):
        await replica.connect([])
    with pytest.raises(ValueError, match="non-empty list"):
        await replica.connect(["ws://127.0.0.1:1", ""])


async def test_a_restarting_relay_sends_its_clients_to_the_next_at_once(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two relays on one Redis store; the one in use stops (1012): the replica moves
    to the other without a backoff, and its later edits reach a replica there."""
    async with Relay(redis_url, port=0) as a, Relay(redis_url, port=0) as b:
        writer, reader = Replica(tmp_path / "w.db"), Replica(tmp_path / "r.db")
        try:
            form = writer.open(D).get("m", type=pycrdt.Map)
            form["before"] = 1
            await writer.connect([a.url, b.url])
            await writer.wait_synced(D, timeout=30)
            await reader.connect(b.url)
            await eventually(
                reader.open(D), lambda: "before" in reader.open(D).get("m", type=pycrdt.Map)
            )
            caplog.set_level("INFO", logger="crdtsync.sync.client")
            await a.stop()
            form["after"] = 2
            await writer.wait_synced(D, timeout=30)
            assert writer.connector is not None and writer.connector.url == b.url
            await eventually(
                reader.open(D), lambda: "after" in reader.open(D).get("m", type=pycrdt.Map)
            )
            assert any("at once" in record.getMessage() for record in caplog.records)
        finally:
            for replica in (writer, reader):
                await replica.disconnect()
                replica.close()


async def test_2000_documents_over_a_limit_of_1000_the_app_is_told_which_and_how_to_fix_it(
    tmp_path: Path, replica: Replica
) -> None:
    seen: list[DocumentOverLimit] = []
    replica.observe(lambda e: seen.append(e) if isinstance(e, DocumentOverLimit) else None)
    docs = [f"form-{i:04d}" for i in range(2000)]
    for doc_id in docs:  # opened before connecting
        replica.open(doc_id)
    async with Relay(f"sqlite:///{tmp_path}/relay.db", port=0) as relay:
        assert relay.limits.max_docs == 1000
        await replica.connect(relay.url)
        connector = replica.connector
        assert connector is not None
        await connector.wait_status(SyncStatus.SYNCED, timeout=120)
        assert sorted(e.doc_id for e in seen) == docs[1000:]
        assert all(e.limit == 1000 for e in seen)
        await replica.wait_synced(docs[0], timeout=10)
        with pytest.raises(TooManyDocumentsError) as refused:
            await replica.wait_synced(docs[1500], timeout=10)
        message = str(refused.value)
        assert "syncs at most 1000 documents per connection" in message
        assert "--max-docs 2000" in message and "form-1500" in message
        assert refused.value.limit == 1000 and isinstance(refused.value, SyncError)
        await replica.disconnect()
