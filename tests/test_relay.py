"""Replicas and the relay over real websockets on 127.0.0.1, with real SQLite files."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pycrdt
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from crdtsync import Replica
from crdtsync.events import ReplicaEvent, StatusChanged, SyncStatus
from crdtsync.ids import DocId, ReplicaId
from crdtsync.statevector import doc_state
from crdtsync.sync.protocol import (
    ErrorCode,
    ErrorFrame,
    Hello,
    Subscribe,
    Sync,
    Update,
    Welcome,
    decode_frame,
    encode_frame,
)
from relay.room import replay
from relay.server import Relay
from relay.session import Limits, RelaySession
from relay.storage import SQLiteStorage

from .relay_helpers import ROOT, RelayProcess, eventually

D = DocId("inspection-42")


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[list[Replica]]:
    made = [Replica(tmp_path / f"replica-{i}.db") for i in range(3)]
    yield made
    for replica in made:
        await replica.disconnect()
        replica.close()


def form(replica: Replica, doc_id: str = D) -> pycrdt.Map:
    return replica.open(doc_id).get("form", type=pycrdt.Map)


def notes(replica: Replica, doc_id: str = D) -> pycrdt.Text:
    return replica.open(doc_id).get("notes", type=pycrdt.Text)


async def test_offline_replicas_converge_and_a_late_joiner_gets_everything(
    tmp_path: Path, replicas: list[Replica]
) -> None:
    a, b, c = replicas
    for replica, name in ((a, "a"), (b, "b")):  # both edit with no relay running
        for doc_id in ("inspection-42", "schedule"):
            form(replica, doc_id)[f"by-{name}"] = name
            notes(replica, doc_id).insert(0, f"{name} was offline. ")
    async with Relay(f"sqlite:///{tmp_path}/relay.db", port=0) as relay:
        await a.connect(relay.url)
        await b.connect(relay.url)
        for replica in (a, b):
            for doc_id in ("inspection-42", "schedule"):
                await replica.wait_synced(doc_id, timeout=20)
        for doc_id in ("inspection-42", "schedule"):
            doc_b = b.open(doc_id)
            await eventually(doc_b, lambda d=doc_id: doc_state(a.open(d)) == doc_state(b.open(d)))
            assert form(a, doc_id).to_py() == form(b, doc_id).to_py() == {"by-a": "a", "by-b": "b"}
            assert str(notes(a, doc_id)) == str(notes(b, doc_id))
        assert a.status is SyncStatus.SYNCED and a.pending(D) == 0
        # A third replica joins later and gets everything.
        await c.connect(relay.url)
        for doc_id in ("inspection-42", "schedule"):
            await c.wait_synced(doc_id, timeout=20)
            assert doc_state(c.open(doc_id)) == doc_state(a.open(doc_id))
            assert str(notes(c, doc_id)) == str(notes(a, doc_id))


async def test_live_edits_reach_the_other_replica_and_its_observers(
    relay: Relay, replicas: list[Replica]
) -> None:
    a, b, _ = replicas
    seen: list[str] = []  # deltas the app observer saw
    text_b = notes(b)  # pycrdt drops a subscription with the object that made it
    subscription = text_b.observe(lambda event: seen.append(repr(event.delta)))
    await a.connect(relay.url)
    await b.connect(relay.url)
    await a.wait_synced(D, timeout=20)
    await b.wait_synced(D, timeout=20)
    notes(a).insert(0, "typed on A")
    await eventually(b.open(D), lambda: str(notes(b)) == "typed on A")
    assert seen and "typed on A" in seen[-1], seen
    text_b.unobserve(subscription)
    # Stored locally as they arrive: a reopened B has it with no relay.
    await b.disconnect()
    path = b.store.path  # type: ignore[attr-defined]
    b.close()
    with Replica(path) as reopened:
        assert str(notes(reopened)) == "typed on A"


async def test_ten_thousand_offline_edits_upload_as_a_merged_diff(
    relay: Relay, replicas: list[Replica]
) -> None:
    a = replicas[0]
    text = notes(a)
    for i in range(10_000):
        text.insert(len(text), f"{i % 10}")
    history = sum(len(entry.data) for entry in a.outbox(D))
    diff = len(a.open(D).get_update())
    await a.connect(relay.url)
    await a.wait_synced(D, timeout=60)
    uploaded = relay.hub.bytes_received
    assert a.pending(D) == 0
    # HELLO and SUBSCRIBE are a few dozen bytes; the rest is the diff, once.
    assert uploaded <= diff + 512, (uploaded, diff, history)
    assert uploaded * 10 < history


async def test_status_transitions_and_wait_synced_across_a_relay_restart(
    tmp_path: Path, replicas: list[Replica]
) -> None:
    a = replicas[0]
    statuses: list[SyncStatus] = []

    def record(event: ReplicaEvent) -> None:
        if isinstance(event, StatusChanged):
            statuses.append(event.status)

    a.observe(record)
    assert a.status is SyncStatus.OFFLINE
    store = f"sqlite:///{tmp_path}/relay.db"
    relay = Relay(store, port=0)
    await relay.start()
    port = relay.port
    form(a)["step"] = 1
    await a.connect(relay.url)
    await a.wait_synced(D, timeout=20)
    assert statuses == [SyncStatus.CONNECTING, SyncStatus.SYNCING, SyncStatus.SYNCED]
    assert a.status is SyncStatus.SYNCED

    await relay.stop()
    connector = a.connector
    assert connector is not None
    await connector.wait_status(SyncStatus.OFFLINE, timeout=20)
    form(a)["step"] = 2  # accepted offline, pending
    assert a.pending(D) == 1
    with pytest.raises(TimeoutError):
        await a.wait_synced(D, timeout=0.2)

    relay = Relay(store, port=port)
    await relay.start()
    try:
        await a.wait_synced(D, timeout=30)
        assert a.pending(D) == 0 and a.status is SyncStatus.SYNCED
        stored = await relay.storage.load(D)
        replayed = replay(stored)
        doc, _ = replayed.doc, replayed.held
        assert doc.get("form", type=pycrdt.Map).to_py() == {"step": 2}
    finally:
        await a.disconnect()
        await relay.stop()
    assert statuses[-1] is SyncStatus.OFFLINE
    assert SyncStatus.SYNCED in statuses[3:]


async def test_wait_synced_without_connect_raises(replicas: list[Replica]) -> None:
    with pytest.raises(RuntimeError, match="not connected"):
        await replicas[0].wait_synced(D, timeout=1)


# -- bad input over a real socket ----------------------------------------------------------


async def raw_client(relay: Relay, subscribe: bool = True) -> websockets.ClientConnection:
    ws = await websockets.connect(relay.url, max_size=None)
    await ws.send(encode_frame(Hello(ReplicaId("raw"))))
    assert isinstance(decode_frame(await ws.recv()), Welcome)  # type: ignore[arg-type]
    if subscribe:
        await ws.send(encode_frame(Subscribe(D, b"\x00")))
        assert isinstance(decode_frame(await ws.recv()), Sync)  # type: ignore[arg-type]
    return ws


async def next_error(ws: websockets.ClientConnection) -> ErrorFrame:
    while True:
        frame = decode_frame(await ws.recv())  # type: ignore[arg-type]
        if isinstance(frame, ErrorFrame):
            return frame


async def test_garbage_gets_errors_and_disturbs_nobody(
    relay: Relay, replicas: list[Replica]
) -> None:
    a, b, _ = replicas
    form(a)["state"] = "before"
    await a.connect(relay.url)
    await b.connect(relay.url)
    await a.wait_synced(D, timeout=20)
    await b.wait_synced(D, timeout=20)
    await eventually(b.open(D), lambda: form(b).get("state") == "before")
    before = await relay.storage.load(D)

    ws = await raw_client(relay)
    bad_frames = {
        b"\x00\x01garbage": ErrorCode.BAD_FRAME,
        msgpack.packb({"type": "update", "doc": D})[:-3]: ErrorCode.BAD_FRAME,  # truncated
        msgpack.packb({"type": "update", "doc": 42, "update": b"x"}): ErrorCode.BAD_FRAME,
        msgpack.packb({"type": "warp", "doc": D}): ErrorCode.BAD_FRAME,
        encode_frame(Update(D, b"\x05\x99not an update", 1)): ErrorCode.INVALID_UPDATE,
        encode_frame(Update(DocId("never-subscribed"), b"\x00\x00", 1)): ErrorCode.NOT_SUBSCRIBED,
    }
    for data, code in bad_frames.items():
        await ws.send(data)
        error = await next_error(ws)
        assert error.code == code, (data, error)
        assert not error.fatal
    # The room's stored state is unchanged and the others keep syncing.
    assert await relay.storage.load(D) == before
    form(a)["state"] = "after"
    await eventually(b.open(D), lambda: form(b).get("state") == "after")
    await ws.close()

    # A text message closes that connection only (1003), with a reason.
    ws = await raw_client(relay, subscribe=False)
    await ws.send("not binary")
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003

    # An oversized frame is refused with 1009 before it is buffered whole.
    ws = await raw_client(relay)
    await ws.send(b"\x00" * (relay.limits.max_frame + 1))
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

    form(a)["state"] = "still fine"
    await eventually(b.open(D), lambda: form(b).get("state") == "still fine")
    await a.wait_synced(D, timeout=20)


async def test_a_slow_consumer_is_disconnected_and_the_others_are_not(
    tmp_path: Path, replicas: list[Replica]
) -> None:
    a, b, _ = replicas
    gone: asyncio.Future[RelaySession] = asyncio.get_running_loop().create_future()

    def on_disconnect(session: RelaySession) -> None:
        if session.replica_id == "raw" and not gone.done():
            gone.set_result(session)

    limits = Limits(max_frame=64 * 1024, max_queued_bytes=256 * 1024)
    async with Relay(
        f"sqlite:///{tmp_path}/relay.db", port=0, limits=limits, on_disconnect=on_disconnect
    ) as relay:
        await a.connect(relay.url)
        await b.connect(relay.url)
        await a.wait_synced(D, timeout=20)
        await b.wait_synced(D, timeout=20)
        slow = await raw_client(relay)
        sock = slow.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.transport.pause_reading()  # stops reading: its socket buffers fill up
        blob = form(a)
        count = 0
        while not gone.done():  # 50 KB updates that replace each other: the doc stays small
            for _ in range(10):
                count += 1
                blob["blob"] = f"{count:08d}" + "x" * 50_000
            await asyncio.wait({gone}, timeout=0.001)  # let the relay run
        session = gone.result()
        assert session.close is not None and "slow_consumer" in session.close.reason
        await a.wait_synced(D, timeout=30)
        await eventually(b.open(D), lambda: form(b).get("blob") == blob["blob"], timeout=60)
        slow.transport.abort()
        await asyncio.gather(slow.wait_closed(), return_exceptions=True)


async def test_health_endpoint(relay: Relay) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    response = await reader.read(4096)
    writer.close()
    await writer.wait_closed()
    assert response.startswith(b"HTTP/1.1 200") and b'"status": "ok"' in response


# -- crashes -----------------------------------------------------------------------------


async def test_relay_killed_mid_stream_keeps_every_acked_update(
    tmp_path: Path, replicas: list[Replica]
) -> None:
    a, b, _ = replicas
    db = tmp_path / "relay.db"
    relay = RelayProcess(f"sqlite:///{db}", tmp_path / "relay.log")
    try:
        await relay.start()
        await a.connect(relay.url)
        await a.wait_synced(D, timeout=20)
        items = form(a)
        count = 0
        # Stream edits until a good share is acknowledged, then kill -9 the relay.
        while a.last_seq(D) - a.pending(D) < 300:
            count += 1
            items[f"k{count}"] = count
            if count % 20 == 0:
                await asyncio.sleep(0)  # let the connector send and read ACKs
        acked = a.last_seq(D) - a.pending(D)
        await relay.kill()
        for i in range(count + 1, count + 50):  # more edits while the relay is dead
            items[f"k{i}"] = i
        total = count + 49

        # Every ACKed update is in the relay's file (read with the relay stopped).
        storage = SQLiteStorage(db)
        await storage.open()
        try:
            replayed = replay(await storage.load(D))
            doc, held = replayed.doc, replayed.held
        finally:
            await storage.close()
        assert held == []
        stored = doc.get("form", type=pycrdt.Map).to_py()
        assert all(f"k{i}" in stored for i in range(1, acked + 1)), (acked, len(stored))

        # Restarted on the same port: the client resends the rest, everyone converges.
        await relay.start()
        await a.wait_synced(D, timeout=60)
        await b.connect(relay.url)
        await b.wait_synced(D, timeout=60)
        assert form(b).to_py() == form(a).to_py()
        assert len(form(b).to_py()) == total
    finally:
        await a.disconnect()
        await b.disconnect()
        await relay.ensure_stopped()


CLIENT_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    import pycrdt
    from crdtsync import Replica

    async def main():
        replica = Replica(sys.argv[1])
        items = replica.open("inspection-42").get("form", type=pycrdt.Map)
        await replica.connect(sys.argv[2])
        await replica.wait_synced("inspection-42", timeout=20)
        for i in range(500):
            items[f"k{i}"] = i
        print(replica.pending("inspection-42"), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # before any ACK for these can arrive

    asyncio.run(main())
    """
)


async def test_client_killed_before_ack_resends_from_its_outbox(
    tmp_path: Path, relay: Relay, replicas: list[Replica]
) -> None:
    path = tmp_path / "killed.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLIENT_SCRIPT,
        str(path),
        relay.url,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == -signal.SIGKILL
    assert int(out) == 500
    with Replica(path) as restarted:
        assert restarted.pending(D) > 0  # the outbox survived the kill
        await restarted.connect(relay.url)
        await restarted.wait_synced(D, timeout=30)
        assert restarted.pending(D) == 0
        await restarted.disconnect()
    c = replicas[2]
    await c.connect(relay.url)
    await c.wait_synced(D, timeout=30)
    assert form(c).to_py() == {f"k{i}": i for i in range(500)}


async def test_cli_serves_and_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    relay = RelayProcess(f"sqlite:///{tmp_path}/data/relay.db", tmp_path / "relay.log")
    await relay.start()
    try:
        with Replica(":memory:") as replica:
            form(replica)["x"] = 1
            await replica.connect(relay.url)
            await replica.wait_synced(D, timeout=20)
            assert await relay.terminate() == 0
            await replica.disconnect()
    finally:
        await relay.ensure_stopped()
    log = (tmp_path / "relay.log").read_text()
    assert "stopped" in log
    assert (tmp_path / "data" / "relay.db").exists()


def test_cli_help_and_bad_store() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "relay", "--help"],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0 and "--store" in out.stdout and "memory://" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "relay", "--store", "postgres://x"],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ},
    )
    assert bad.returncode == 2 and "unknown storage URL" in bad.stderr


async def test_a_document_larger_than_the_upload_limit_reaches_a_new_replica(
    tmp_path: Path, replicas: list[Replica]
) -> None:
    a, b, _ = replicas
    limits = Limits(max_frame=64 * 1024)
    async with Relay(f"sqlite:///{tmp_path}/relay.db", port=0, limits=limits) as relay:
        await a.connect(relay.url)
        text = notes(a)
        for _ in range(10):  # each change fits a frame; the whole document does not
            text.insert(len(text), "y" * 30_000)
            await a.wait_synced(D, timeout=20)
        await b.connect(relay.url)
        await b.wait_synced(D, timeout=20)  # one SYNC of ~300 KB
        assert str(notes(b)) == str(text)


# -- graceful drain ------------------------------------------------------------------------


async def test_stop_stores_and_acknowledges_then_closes_with_1012(tmp_path: Path) -> None:
    """SIGTERM's path: stop accepting, store and ACK what was received, then close every
    connection with 1012 (service restart) after a fatal ERROR shutting_down."""
    relay = Relay(f"sqlite:///{tmp_path}/relay.db", port=0, commit_delay=0.5)
    await relay.start()
    ws = await raw_client(relay)
    peer = pycrdt.Doc()
    peer.get("m", type=pycrdt.Map)["k"] = "v"
    await ws.send(encode_frame(Update(D, peer.get_update(), 1)))
    await ws.send(encode_frame(Subscribe(DocId("other"), b"\x00")))
    assert isinstance(decode_frame(await ws.recv()), Sync)  # type: ignore[arg-type]
    # The relay has the update (frames are handled in order); the long commit delay
    # keeps it waiting: stop() must store it and send its ACK first.
    stopping = asyncio.ensure_future(relay.stop())
    frames = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            frames.append(decode_frame(await ws.recv()))  # type: ignore[arg-type]
    await stopping
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    assert [type(f).__name__ for f in frames] == ["Ack", "ErrorFrame"]
    assert frames[1].code == ErrorCode.SHUTTING_DOWN  # type: ignore[union-attr]
    async with SQLiteStorage(tmp_path / "relay.db") as storage:
        assert len((await storage.load(D)).updates) == 1
