"""A bare websocket forwarder: the practical limit of a Python relay.

Every binary message a connection sends is forwarded, unchanged, to every other
connection of the same room; the room is the request path (``ws://host:port/<room>``).
No CRDT work, no storage, no acknowledgements, no parsing of the messages. It uses
the same ``websockets`` asyncio server as the relay (no compression, the same
frame limit) and ``websockets.broadcast``, the cheapest way that library offers to
send one message to many connections (it writes to each transport without waiting
for it to drain).

    python -m benchmarks.bare_forwarder --host 127.0.0.1 --port 0

prints ``bare forwarder listening on ws://127.0.0.1:PORT`` as its first stdout
line and runs until SIGTERM or SIGINT. The relay benchmark (``benchmarks/relay/``)
starts it as the baseline next to ``python -m relay``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

__all__ = ["BareForwarder", "main"]

MAX_FRAME = 1 << 20
"""The same frame limit as the relay's default (``crdtsync.sync.protocol.DEFAULT_MAX_FRAME``)."""


class BareForwarder:
    """Rooms of connections; each message goes to the other members of its room."""

    def __init__(self) -> None:
        self.rooms: dict[str, list[ServerConnection]] = {}
        self.messages = 0
        self.deliveries = 0

    async def handle(self, ws: ServerConnection) -> None:
        """One connection: join the room named by the path, forward until it closes."""
        room = ws.request.path if ws.request is not None else "/"
        members = self.rooms.setdefault(room, [])
        members.append(ws)
        try:
            async for message in ws:
                others = [other for other in members if other is not ws]
                broadcast(others, message)
                self.messages += 1
                self.deliveries += len(others)
        except ConnectionClosed:
            pass
        finally:
            members.remove(ws)
            if not members:
                del self.rooms[room]


async def _serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    forwarder = BareForwarder()
    async with serve(
        forwarder.handle,
        host,
        port,
        max_size=MAX_FRAME,
        compression=None,
        ping_interval=20,
        ping_timeout=20,
        close_timeout=2,
    ) as server:
        bound = next(iter(server.sockets)).getsockname()
        print(f"bare forwarder listening on ws://{bound[0]}:{bound[1]}", flush=True)
        await stop.wait()
    print(
        f"bare forwarder stopped: {forwarder.messages} messages, {forwarder.deliveries} deliveries",
        file=sys.stderr,
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.bare_forwarder``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bare_forwarder",
        description="Forward every binary websocket message to the other connections "
        "of its room (the request path). The baseline of the relay benchmark.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    parser.add_argument("--port", type=int, default=0, help="default: 0 (any free port)")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args.host, args.port))
    except OSError as exc:
        print(f"bare forwarder: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
