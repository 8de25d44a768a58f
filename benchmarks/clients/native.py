"""One native connection carrying many documents (crdtsync's protocol multiplexes them).

HELLO once, then SUBSCRIBE every document and wait for every SYNC, or UPDATE every
document and wait for every ACK: the memory worker loads documents this way, and the
convergence check fetches the relay's copy of every room over one connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import pycrdt
from websockets.asyncio.client import ClientConnection

from ..wire import Event, EventKind, decode_native, native_hello, native_subscribe, native_update
from .connection import open_websocket

__all__ = ["NativeConnection"]


class NativeConnection:
    """A native client connection for many documents, read in turn (no reader task)."""

    def __init__(self, replica: str) -> None:
        self.replica = replica
        self.ws: ClientConnection | None = None
        self.errors: list[str] = []
        """Always empty: every error raises (the same interface as a reading client)."""

    async def open(self, url: str) -> None:
        """Connect and say HELLO."""
        self.ws = await open_websocket(url)
        await self.ws.send(native_hello(self.replica))

    async def subscribe(self, docs: Mapping[str, pycrdt.Doc[Any]], timeout: float) -> None:
        """SUBSCRIBE every document with its state vector; apply every SYNC to it."""
        assert self.ws is not None
        for name, doc in docs.items():
            await self.ws.send(native_subscribe(name, doc.get_state()))
        await self._until(
            "step2", set(docs), timeout, lambda e: docs[e.doc].apply_update(e.payload)
        )

    async def write(self, updates: Mapping[str, bytes], timeout: float) -> None:
        """One UPDATE per document; wait until every one is acknowledged (stored)."""
        assert self.ws is not None
        for name, update in updates.items():
            await self.ws.send(native_update(name, update, 1))
        await self._until("ack", set(updates), timeout)

    async def _until(
        self,
        kind: EventKind,
        pending: set[str],
        timeout: float,
        handle: Callable[[Event], None] | None = None,
    ) -> None:
        """Read until an event of ``kind`` came for every document of ``pending``."""
        assert self.ws is not None
        async with asyncio.timeout(timeout):
            while pending:
                event = decode_native(await self.ws.recv(decode=False))
                if event.kind == "error":
                    raise ConnectionError(event.text)
                if event.kind == kind and event.doc in pending:
                    pending.discard(event.doc)
                    if handle is not None:
                        handle(event)

    async def close(self) -> None:
        """Close the connection."""
        if self.ws is not None:
            await self.ws.close()
