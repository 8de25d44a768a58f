"""One websocket client connection and the task reading it: the base of every client.

Every client connects the same way (no compression, no pings, the largest frame a
sync can need), reads every message in a task of its own and closes with a short
timeout. A subclass reads the messages (:meth:`Connection.receive`); the base
turns what ends the reading into an error unless the client was closing it.
"""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ..wire import MAX_FRAME_IN

__all__ = ["HANDSHAKE_TIMEOUT_S", "Connection", "open_websocket"]

HANDSHAKE_TIMEOUT_S = 30.0
"""How long a client waits to connect and for its protocol's handshake."""


async def open_websocket(url: str, open_timeout: float = 10.0) -> ClientConnection:
    """A benchmark client's websocket to ``url``."""
    return await connect(
        url,
        compression=None,
        max_size=MAX_FRAME_IN,
        ping_interval=None,
        open_timeout=open_timeout,
        close_timeout=2,
    )


class Connection:
    """A websocket and the task reading it; ``errors`` collects what went wrong."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task[None] | None = None
        self.closing = False
        self.errors: list[str] = []

    async def connect(self, url: str, open_timeout: float = 10.0) -> ClientConnection:
        """Open the websocket and start reading it."""
        self.ws = await open_websocket(url, open_timeout)
        self.reader = asyncio.get_running_loop().create_task(self._read(self.ws))
        return self.ws

    async def receive(self, ws: ClientConnection) -> None:
        """Read and handle every message until the connection closes (a subclass's)."""
        raise NotImplementedError

    def error(self, message: str) -> None:
        """Record an error of this connection."""
        self.errors.append(f"{self.name}: {message}")

    def stopped(self) -> None:
        """The reading ended (closed, failed or cancelled): wake whoever waits on it."""

    async def _read(self, ws: ClientConnection) -> None:
        try:
            await self.receive(ws)
        except ConnectionClosed as exc:
            if not self.closing:
                self.error(f"connection closed: {exc}")
        except Exception as exc:  # noqa: BLE001 - reported as a FAILED run
            self.error(f"{type(exc).__name__}: {exc}")
        finally:
            self.stopped()

    @property
    def disconnected(self) -> bool:
        """True once the reading has ended."""
        return self.reader is not None and self.reader.done()

    async def close(self) -> None:
        """Close the connection and stop the reader."""
        self.closing = True
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), timeout=5)
            except (TimeoutError, OSError):
                self.ws.transport.abort()
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)
