"""The memory group's worker process: opens idle connections or loads documents on one
server and keeps them open while the orchestrator reads the server's RSS.

Driven through :func:`benchmarks.harness.commands.serve_commands`: ``idle <n>``
(``opened``), ``documents <n>`` (``loaded``), ``close`` (``closed``), ``finish``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pycrdt

from ..clients.document import TEXT, DocClient
from ..clients.native import NativeConnection
from ..clients.server_copy import fetch_document
from ..harness.commands import serve_commands
from ..servers import SERVERS
from ..trace import captured_updates
from .params import NATIVE_DOCS_PER_CONNECTION, TEXT_LENGTH

__all__ = ["Holder", "content", "worker_main"]

CONNECT_BATCH = 50
"""Connections opened concurrently."""
SETTLE_WRITES_S = 0.5
"""Time the server gets to apply the last writes before they are read back."""


def content(name: str) -> str:
    """The text of document ``name``: its name repeated, :data:`TEXT_LENGTH` characters."""
    return ((name + " ") * (TEXT_LENGTH // (len(name) + 1) + 1))[:TEXT_LENGTH]


class Holder:
    """The worker's open connections."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.info = SERVERS[spec["server"]]
        self.connections: list[DocClient | NativeConnection] = []
        self.docs: dict[str, str] = {}

    async def _open(self, batches: Sequence[Sequence[DocClient]]) -> None:
        """Open each batch of clients at once, handshakes done, one batch after another."""
        url = self.spec["url"]
        handshake = self.info.protocol != "raw"
        for batch in batches:
            await asyncio.gather(*(client.open(url) for client in batch))
            self.connections.extend(batch)
            if handshake:
                await asyncio.gather(*(client.wait_synced(60) for client in batch))

    async def idle(self, count: int) -> None:
        """``count`` connections on one document, handshakes done (the first alone: a
        room that does not exist yet is created by one connection, see
        :func:`benchmarks.loadgen.rooms._connect_all`)."""
        clients = [
            DocClient(self.info.codec("bench-idle", f"idle-{os.getpid()}-{i}"), f"idle-{i}")
            for i in range(count)
        ]
        await self._open([clients[:1], *_batches(clients[1:])])

    async def documents(self, count: int) -> None:
        """``count`` small documents, written and kept open."""
        names = [f"bench-doc-{i}" for i in range(count)]
        self.docs = {name: content(name) for name in names}
        if self.info.protocol == "native":
            for start in range(0, len(names), NATIVE_DOCS_PER_CONNECTION):
                await self._native_documents(names[start : start + NATIVE_DOCS_PER_CONNECTION])
            return
        clients = [
            DocClient(self.info.codec(name, f"doc-{os.getpid()}-{name}"), name) for name in names
        ]
        await self._open(_batches(clients))
        for client in clients:
            with captured_updates(client.doc) as updates:
                client.text.insert(0, self.docs[client.name])
            for seq, update in enumerate(updates, start=1):
                await client.send(client.wire.update(update, seq))

    async def _native_documents(self, names: Sequence[str]) -> None:
        """One native connection: SUBSCRIBE each document, write it, wait for the ACKs."""
        connection = NativeConnection(f"bench-memory-{os.getpid()}-{len(self.connections)}")
        self.connections.append(connection)
        await connection.open(self.spec["url"])
        docs: dict[str, pycrdt.Doc[Any]] = {name: pycrdt.Doc() for name in names}
        await connection.subscribe(docs, timeout=120)
        for name, doc in docs.items():
            doc.get(TEXT, type=pycrdt.Text).insert(0, self.docs[name])
        await connection.write({name: doc.get_update() for name, doc in docs.items()}, 120)

    async def check(self) -> list[str]:
        """A sample of the documents: the server's copy equals what was written."""
        problems = []
        names = list(self.docs)
        for name in names[:: max(1, len(names) // 50)]:
            doc = await fetch_document(self.info.protocol, self.info.prefix, self.spec["url"], name)
            if str(doc.get(TEXT, type=pycrdt.Text)) != self.docs[name]:
                problems.append(f"{name}: the server's copy differs")
        return problems

    def errors(self) -> list[str]:
        """Errors the connections reported."""
        return [error for connection in self.connections for error in connection.errors]

    async def close(self) -> None:
        """Close every connection."""
        await asyncio.gather(*(c.close() for c in self.connections), return_exceptions=True)
        self.connections = []


def _batches(clients: Sequence[DocClient]) -> list[Sequence[DocClient]]:
    return [clients[i : i + CONNECT_BATCH] for i in range(0, len(clients), CONNECT_BATCH)]


async def worker_main(spec: dict[str, Any], out: Path) -> None:
    """The worker process: serve the orchestrator's commands, then write the result."""
    holder = Holder(spec)
    result: dict[str, Any] = {"status": "ok", "failure": None, "problems": []}

    async def on_idle(args: list[str]) -> str:
        await holder.idle(int(args[0]))
        return "opened"

    async def on_documents(args: list[str]) -> str:
        await holder.documents(int(args[0]))
        await asyncio.sleep(SETTLE_WRITES_S)
        result["problems"] = await holder.check()
        if result["problems"]:
            result["status"] = "FAILED"
            result["failure"] = "; ".join(result["problems"][:3])
        return "loaded"

    async def on_close(_: list[str]) -> str:
        errors = holder.errors()
        if errors:
            raise ConnectionError(errors[0])
        await holder.close()
        return "closed"

    handlers = {"idle": on_idle, "documents": on_documents, "close": on_close}
    await serve_commands(handlers, result, out, holder.close)
