"""pycrdt-websocket's ``WebsocketServer`` for the crdtsync relay benchmark.

    <peer venv>/bin/python pycrdt_ws_server.py [--host HOST] [--port PORT]

One room per request path (``ws://host:port/<room>``), served by
``pycrdt.websocket.WebsocketServer`` with its defaults: rooms in memory only
(no YStore: nothing is stored), deleted when their last client leaves
(``auto_clean_rooms``). The transport is the ``websockets`` asyncio server (the
same library as crdtsync's relay and the bare forwarder), wrapped in the small
``Channel`` adapter below. Prints ``pycrdt-websocket listening on ws://HOST:PORT``
as its first stdout line and runs until SIGTERM or SIGINT.

Runs in its own virtual environment (benchmarks/.peers/pycrdt-websocket): it
imports neither crdtsync nor the benchmarks package.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from contextlib import suppress

from pycrdt.websocket import WebsocketServer, exception_logger
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

MAX_FRAME = 1 << 20


class Channel:
    """A ``websockets`` connection as the ``pycrdt.Channel`` the rooms serve."""

    def __init__(self, websocket: ServerConnection) -> None:
        self._websocket = websocket
        request = websocket.request
        self._path = request.path if request is not None else "/"

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> Channel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        # A connection that closed is noticed (and left) by its room's receive loop.
        with suppress(ConnectionClosed):
            await self._websocket.send(message)

    async def recv(self) -> bytes:
        message = await self._websocket.recv()
        return message if isinstance(message, bytes) else message.encode()


async def _serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log = logging.getLogger("pycrdt-websocket")
    async with WebsocketServer(exception_handler=exception_logger, log=log) as rooms:

        async def handler(websocket: ServerConnection) -> None:
            await rooms.serve(Channel(websocket))

        async with serve(
            handler,
            host,
            port,
            max_size=MAX_FRAME,
            compression=None,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=2,
        ) as server:
            bound = next(iter(server.sockets)).getsockname()
            print(f"pycrdt-websocket listening on ws://{bound[0]}:{bound[1]}", flush=True)
            await stop.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(_serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
