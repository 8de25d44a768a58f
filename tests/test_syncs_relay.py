"""Large syncs over real sockets (:mod:`relay.syncs` and the relay's sync pump):
a 30 MB document through a 5 MB/s link, a joiner that stops reading, a joiner
that loses its connection midway."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pycrdt
import websockets

from crdtsync import Replica
from crdtsync.ids import DocId, ReplicaId
from crdtsync.sync.protocol import ErrorCode, Hello, Subscribe, encode_frame
from relay.server import Relay
from relay.session import Limits, RelaySession
from relay.storage import SQLiteStorage

D = DocId("big")
MB = 1_000_000


def _text(size: int) -> str:
    return "".join(f"{i:015d}\n" for i in range(size // 16))


async def _seed(path: Path, text: str) -> pycrdt.Doc[Any]:
    """A relay store holding ``text`` as one document's compacted snapshot."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=77)
    doc.get("t", type=pycrdt.Text).insert(0, text)
    update = doc.get_update()
    async with SQLiteStorage(path) as storage:
        [entry] = await storage.append([(D, update)])
        await storage.compact(D, update, entry)
    return doc


class ThrottledProxy:
    """A TCP proxy on 127.0.0.1 whose relay-to-client direction carries at most
    ``rate`` bytes per second; ``cut_after`` bytes into its first connection, it
    cuts that connection (both ways)."""

    def __init__(self, target: int, rate: float, cut_after: int | None = None) -> None:
        self.target = target
        self.rate = rate
        self.cut_after = cut_after
        self.down: list[int] = []  # bytes relay -> client, per connection
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> ThrottledProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        index = len(self.down)
        self.down.append(0)
        relay_r, relay_w = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers += [client_w, relay_w]
        up = asyncio.ensure_future(self._copy(client_r, relay_w))
        down = asyncio.ensure_future(self._copy(relay_r, client_w, index))
        self._tasks |= {up, down}
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        for writer in (client_w, relay_w):
            writer.transport.abort()

    async def _copy(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(64 << 10):
                writer.write(chunk)
                await writer.drain()
                if index is None:
                    continue
                self.down[index] += len(chunk)
                if index == 0 and self.cut_after is not None and self.down[0] >= self.cut_after:
                    return
                # Pacing, not waiting for an event: the link carries `rate` bytes/s.
                await asyncio.sleep(max(0.0, start + self.down[index] / self.rate - loop.time()))


def _digest(replica: Replica) -> str:
    return hashlib.sha256(str(replica.open(D).get("t", type=pycrdt.Text)).encode()).hexdigest()


async def test_a_30_mb_document_reaches_a_joiner_behind_a_5_mb_s_link_on_its_first_connection(
    tmp_path: Path, replica: Replica
) -> None:
    text = _text(30 * MB)
    await _seed(tmp_path / "relay.db", text)
    closed: list[RelaySession] = []
    async with (
        Relay(f"sqlite:///{tmp_path}/relay.db", port=0, on_disconnect=closed.append) as relay,
        ThrottledProxy(relay.port, rate=5 * MB) as proxy,
    ):
        await replica.connect(proxy.url)
        await replica.wait_synced(D, timeout=240)
        assert _digest(replica) == hashlib.sha256(text.encode()).hexdigest()
        assert len(proxy.down) == 1, "the joiner had to reconnect"
        assert proxy.down[0] < 1.05 * len(text)  # sent once
        assert not closed  # nobody was disconnected, least of all as a slow consumer
        assert relay.hub.syncs.completed == 1 and relay.hub.syncs.active == 0


async def test_a_joiner_cut_off_midway_resumes_where_it_stopped(
    tmp_path: Path, replica: Replica
) -> None:
    text = _text(8 * MB)
    await _seed(tmp_path / "relay.db", text)
    async with (
        Relay(f"sqlite:///{tmp_path}/relay.db", port=0) as relay,
        ThrottledProxy(relay.port, rate=20 * MB, cut_after=4 * MB) as proxy,
    ):
        await replica.connect(proxy.url)
        await replica.wait_synced(D, timeout=120)
        assert _digest(replica) == hashlib.sha256(text.encode()).hexdigest()
        assert len(proxy.down) == 2
        assert proxy.down[1] < 0.75 * len(text), f"started over: {proxy.down}"


async def test_a_joiner_that_stops_reading_is_disconnected_and_its_sync_freed(
    tmp_path: Path, replica: Replica
) -> None:
    text = _text(8 * MB)
    await _seed(tmp_path / "relay.db", text)
    gone: asyncio.Future[RelaySession] = asyncio.get_running_loop().create_future()

    def on_disconnect(session: RelaySession) -> None:
        if session.replica_id == "stalled" and not gone.done():
            gone.set_result(session)

    limits = Limits(sync_stall_timeout=1.0)
    async with Relay(
        f"sqlite:///{tmp_path}/relay.db",
        port=0,
        limits=limits,
        on_disconnect=on_disconnect,
        ping_interval=None,  # the stall, not a missing pong, must end it
    ) as relay:
        await replica.connect(relay.url)  # loads the room: part of the level before
        await replica.wait_synced(D, timeout=60)
        tracemalloc.start()
        try:
            ws = await websockets.connect(relay.url, max_size=None, compression=None)
            await ws.send(encode_frame(Hello(ReplicaId("stalled"))))
            await ws.send(encode_frame(Subscribe(D, b"\x00")))
            await ws.recv()  # WELCOME
            await ws.recv()  # the first piece: the sync is under way
            ws.transport.pause_reading()  # and then it reads nothing more
            session = await asyncio.wait_for(gone, timeout=60)
            assert session.close is not None
            assert ErrorCode.SLOW_CONSUMER in session.close.reason
            assert relay.hub.syncs.active == 0 and not relay.hub.rooms[D].diffs
            ws.transport.abort()
            await asyncio.gather(ws.wait_closed(), return_exceptions=True)
            current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak > len(text), "the sync was not under way"
        assert current < 2 * MB, f"{current} bytes still held after the joiner left"
        await replica.wait_synced(D, timeout=10)  # the honest replica is unaffected


async def test_health_answers_while_replicas_join_a_large_document(tmp_path: Path) -> None:
    text = _text(6 * MB)
    await _seed(tmp_path / "relay.db", text)
    joiners = [Replica(tmp_path / f"joiner-{i}.db") for i in range(3)]
    try:
        async with (
            Relay(f"sqlite:///{tmp_path}/relay.db", port=0) as relay,
            ThrottledProxy(relay.port, rate=10 * MB) as proxy,
        ):
            for joiner in joiners:
                await joiner.connect(proxy.url)
            joined = asyncio.gather(*(j.wait_synced(D, timeout=120) for j in joiners))
            during: list[dict[str, Any]] = []
            while not joined.done():
                during.append(await _health(relay.port))
            await joined
        assert any(isinstance(h["syncs"], dict) and h["syncs"]["sending"] for h in during)
        assert all(_digest(j) == hashlib.sha256(text.encode()).hexdigest() for j in joiners)
    finally:
        for joiner in joiners:
            await joiner.disconnect()
            joiner.close()


async def _health(port: int) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: relay\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), timeout=30)
    writer.close()
    await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
    figures: dict[str, Any] = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    return figures
