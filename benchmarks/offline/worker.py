"""The offline group's worker actions, each in a fresh process, printing one JSON line:
``create`` (a replica store of small documents), ``cold-start`` (first document
readable), ``seed`` (the relay's storage), ``prefetch`` (over HTTP through a
byte-counting proxy). crdtsync and the relay are imported only here."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import pycrdt

__all__ = ["cold_start", "create_store", "prefetch", "seed_relay", "small_text"]

BIG_ID = "big/report"
CHUNK = 512 << 10  # the big document is written in 512 KiB transactions


def small_text(number: int) -> str:
    """About 1 KB of text for small document ``number``."""
    line = f"inspection {number:05d}: all fire exits clear, extinguishers checked. "
    return (line * (1024 // len(line) + 1))[:1024]


def create_store(path: Path, documents: int) -> dict[str, Any]:
    """A replica store holding ``documents`` small documents."""
    from crdtsync import Replica  # noqa: PLC0415 - only in the worker process

    with Replica(path) as replica:
        for number in range(documents):
            replica.open(f"small/{number:05d}").get("text", type=pycrdt.Text).insert(
                0, small_text(number)
            )
    return {"documents": documents}


def cold_start(path: Path) -> dict[str, Any]:
    """A fresh process: import crdtsync, open the store, read the first document."""
    started = time.perf_counter()
    from crdtsync import Replica  # noqa: PLC0415 - timed: a cold start imports it

    imported = time.perf_counter()
    replica = Replica(path)
    text = str(replica.open("small/00000", offline_only=True).get("text", type=pycrdt.Text))
    readable = time.perf_counter()
    replica.close()
    return {
        "import_s": imported - started,
        "open_read_s": readable - imported,
        "ok": text == small_text(0),
    }


def _big_chunks(megabytes: int) -> list[str]:
    total = megabytes << 20
    base = "".join(f"{i:07d} a line of a large site report\n" for i in range(CHUNK // 36 + 1))
    return [base[: min(CHUNK, total - start)] for start in range(0, total, CHUNK)]


async def seed_relay(url: str, documents: int, big_mb: int) -> dict[str, Any]:
    """Write the documents straight into the relay's storage (``url``); return the
    bytes of their updates (what a prefetch from nothing must transfer) and digests."""
    from relay.storage import open_storage  # noqa: PLC0415

    storage = open_storage(url)
    small_bytes = 0
    async with storage:
        batch = []
        for number in range(documents):
            doc = pycrdt.Doc()
            doc.get("text", type=pycrdt.Text).insert(0, small_text(number))
            update = doc.get_update()
            small_bytes += len(update)
            batch.append((f"small/{number:05d}", update))
        await storage.append(batch)
        doc = pycrdt.Doc()
        text = doc.get("text", type=pycrdt.Text)
        for chunk in _big_chunks(big_mb):
            before = doc.get_state()
            text += chunk
            await storage.append([(BIG_ID, doc.get_update(before))])
        big_bytes = len(doc.get_update())
        digest = hashlib.sha256(str(text).encode()).hexdigest()
    return {"small_bytes": small_bytes, "big_bytes": big_bytes, "big_digest": digest}


class CountingProxy:
    """A TCP proxy counting every byte each way (HTTP headers included)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sent = 0
        self.received = 0
        self.connections = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            while data := await src.read(1 << 16):
                if up:
                    self.sent += len(data)
                else:
                    self.received += len(data)
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))


async def prefetch(path: Path, url: str, pattern: str) -> dict[str, Any]:
    """Prefetch ``pattern`` from the relay at ``url`` into a new store, through the proxy."""
    from crdtsync import Replica  # noqa: PLC0415

    proxy = CountingProxy(int(url.rsplit(":", 1)[1]))
    port = await proxy.start()
    with Replica(path) as replica:
        started = time.perf_counter()
        stored = await replica.prefetch([pattern], url=f"http://127.0.0.1:{port}")
        seconds = time.perf_counter() - started
        texts = hashlib.sha256()
        ok = True
        for doc_id in stored:
            text = str(replica.open(doc_id).get("text", type=pycrdt.Text))
            if doc_id.startswith("small/"):
                ok = ok and text == small_text(int(doc_id[6:]))
            else:
                texts.update(text.encode())
    proxy.server.close()
    return {
        "seconds": seconds,
        "documents": len(stored),
        "wire_up": proxy.sent,
        "wire_down": proxy.received,
        "requests": proxy.connections,
        "ok": ok,
        "big_digest": texts.hexdigest(),
    }
