"""One document over one connection, in any protocol, counting payload bytes each way."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pycrdt
from websockets.asyncio.client import ClientConnection

from ..wire import EMPTY_UPDATE, Codec, update_client_id
from .connection import HANDSHAKE_TIMEOUT_S, Connection

__all__ = ["TEXT", "DocClient"]

TEXT = "text"
"""The root text every document of these clients edits."""


class DocClient(Connection):
    """A replica of one document: syncs with its protocol on connect (its state vector
    out, the server's answer applied), applies every update from others (echoes of its
    own are not counted), and answers a server's sync step 1."""

    def __init__(self, wire: Codec, name: str, doc: pycrdt.Doc[Any] | None = None) -> None:
        super().__init__(name)
        self.wire = wire
        self.doc: pycrdt.Doc[Any] = (
            doc if doc is not None else pycrdt.Doc(client_id=random.getrandbits(32) or 1)
        )
        self.text = self.doc.get(TEXT, type=pycrdt.Text)
        self.synced = asyncio.Event()
        self.progress = asyncio.Event()
        self.received = 0
        """Updates received from others (echoes of our own not counted)."""
        self.bytes_in = 0
        self.bytes_out = 0

    async def open(self, url: str) -> None:
        """Connect and send the protocol's opening (with the document's state vector)."""
        await self.connect(self.wire.path(url), open_timeout=HANDSHAKE_TIMEOUT_S)
        for message in self.wire.opening(self.doc.get_state()):
            await self.send(message)

    async def send(self, message: bytes) -> None:
        """Send one message, counting its bytes."""
        assert self.ws is not None
        self.bytes_out += len(message)
        await self.ws.send(message)

    async def receive(self, ws: ClientConnection) -> None:
        own = self.doc.client_id
        async for message in ws:
            if isinstance(message, str):
                self.error("text message")
                continue
            self.bytes_in += len(message)
            for event in self.wire.decode(message):
                if event.kind == "update":
                    if event.payload == EMPTY_UPDATE or update_client_id(event.payload) == own:
                        continue  # an echo of our own update, or nothing
                    self.doc.apply_update(event.payload)
                    self.received += 1
                    self.progress.set()
                elif event.kind == "step1":
                    await self.send(self.wire.step2(self.doc.get_update(event.payload)))
                elif event.kind == "step2":
                    self.doc.apply_update(event.payload)
                    self.synced.set()
                elif event.kind == "error":
                    self.error(event.text)

    def stopped(self) -> None:
        self.synced.set()
        self.progress.set()

    async def wait_synced(self, timeout: float) -> None:
        """Until the server's answer to our state vector is applied."""
        async with asyncio.timeout(timeout):
            await self.synced.wait()
        if self.errors:
            raise ConnectionError(self.errors[0])

    async def wait_received(self, count: int, *others: DocClient, timeout: float = 60) -> None:
        """Until ``count`` updates from others have arrived (ConnectionError as soon as
        this client or one of ``others`` reports an error)."""
        while self.received < count:
            self.progress.clear()
            await asyncio.wait_for(self.progress.wait(), timeout)
            errors = [error for client in (self, *others) for error in client.errors]
            if errors:
                raise ConnectionError(errors[0])
