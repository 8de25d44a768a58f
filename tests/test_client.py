"""The asyncio connector: backoff, error classification, pings, refusals; and relay
behaviour seen from a client (storage failure, compaction, idle rooms)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pycrdt
import pytest
import websockets
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosedError, InvalidURI

from crdtsync import Replica
from crdtsync.client import backoff, is_retryable
from crdtsync.errors import ProtocolError, RelayRefusedError
from crdtsync.events import RelayErrorReceived, ReplicaEvent, SyncStatus
from crdtsync.ids import DocId
from crdtsync.protocol import ErrorCode, ErrorFrame, encode_frame
from relay.rooms import replay
from relay.server import Relay
from relay.storage import MemoryData, MemoryStorage

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


@pytest.fixture
async def replica(tmp_path: Path) -> AsyncIterator[Replica]:
    made = Replica(tmp_path / "replica.db")
    yield made
    await made.disconnect()
    made.close()


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
        await replica.connect(f"ws://127.0.0.1:{port}")
        with pytest.raises(RelayRefusedError, match="v9 only"):
            await replica.wait_synced(D, timeout=20)
        assert replica.connector is not None and not replica.connector.running
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
        doc, _ = replay(stored)
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
        doc, held = replay(stored)
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
