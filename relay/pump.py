"""The sync pump of one connection: large sync answers (:mod:`relay.syncs`) sent
piece by piece, each once the connection has sent the one before (flow
control), so a slow link only makes the sync slower. A client that takes
nothing of its sync for ``stall`` seconds has stopped reading: it is closed as
a slow consumer."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection

from .http import peer
from .session import RelaySession
from .syncs import Syncs

__all__ = ["SlowConsumer", "sync_step", "unsent"]

logger = logging.getLogger("relay.server")  # its lines are the connection's, as before

SlowConsumer = Callable[[ServerConnection, RelaySession, str], None]
"""Closes a connection that stopped reading, with the reason (the relay's)."""

if sys.platform.startswith("linux"):
    import fcntl
    import termios

    _SIOCOUTQ: int | None = termios.TIOCOUTQ
    """ioctl that reads a TCP socket's unsent bytes (SIOCOUTQ == TIOCOUTQ)."""
else:  # elsewhere only the transport's buffer is seen
    _SIOCOUTQ = None


async def sync_step(
    ws: ServerConnection,
    session: RelaySession,
    syncs: Syncs,
    stall: float,
    slow_consumer: SlowConsumer,
) -> bool:
    """Send ``session``'s pending large sync answers, one piece per drain of the
    connection. An :class:`~relay.ondemand.OnDemand` step, run whenever the
    session has a sync to send: True when the connection failed (nothing more to
    do for good)."""
    while session.close is None and syncs.pending(session):
        if not await _drained(ws, session, stall, slow_consumer):
            return True
        syncs.feed(session)  # queues the next piece: the relay's output writes it
        await asyncio.sleep(0)  # everyone else runs between two pieces
    return False


async def _drained(
    ws: ServerConnection, session: RelaySession, stall: float, slow_consumer: SlowConsumer
) -> bool:
    """Wait until the connection's buffer is down to websockets' low-water mark;
    False (and the session failed) if it did not shrink for ``stall`` seconds."""
    transport = ws.transport
    loop = asyncio.get_running_loop()
    last, since = unsent(transport), loop.time()
    while ws.paused and not transport.is_closing():
        try:
            await asyncio.wait_for(ws.drain(), timeout=min(1.0, stall))
        except TimeoutError:
            size = unsent(transport)
            if size < last:
                last, since = size, loop.time()
            elif loop.time() - since >= stall:
                message = f"took nothing of its sync for {stall:g} s; reconnect to resume"
                slow_consumer(ws, session, message)
                return False
        except OSError as exc:
            logger.info("%s: connection lost during a sync (%s)", peer(ws), exc)
            return False
    session.backlog = transport.get_write_buffer_size()
    return not transport.is_closing()


def unsent(transport: asyncio.WriteTransport) -> int:
    """Bytes written to ``transport`` that the peer has not taken: the transport's
    buffer, plus (on Linux) the socket's send queue, which can hold megabytes a
    slow reader takes for many seconds before the transport's buffer shrinks."""
    size = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if _SIOCOUTQ is not None and sock is not None:
        try:
            queued = fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0\0\0\0")
        except OSError:
            return size
        size += int.from_bytes(queued, sys.byteorder, signed=True)
    return size
