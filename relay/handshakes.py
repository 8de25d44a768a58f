"""Connections between accept() and the end of their HTTP handshake.

Before a connection has sent its request the relay knows nothing of it but its
address, and each one holds a file descriptor. :class:`HandshakeGuard` bounds
them:

- at most ``max_handshakes`` in all and ``max_handshakes_per_address`` from one
  address; past either, the oldest connection whose request has not fully
  arrived (nothing sent, part of a request head, or on ``/fetch`` and
  ``/attachments/`` an unfinished body) is closed, of that address or of the
  address with the most, so a flood of silent or trickling connections never
  locks out the next honest request or probe;
- each has ``auth_timeout`` seconds from accept() to finish the handshake (a
  routed HTTP request: to be read and answered), then it is closed; bytes that
  trickle in do not extend it;
- both are counted (``too_many_handshakes``, ``handshake_timeout`` in
  ``/health`` refusals) and logged once per interval, not once per connection.

:class:`RelayConnection` is websockets' server connection with the guard wired
in, and with a stricter request parser: a malformed request gets ``400`` with
the reason (websockets closes without a word), and the request line and headers
together may not exceed the pre-authentication budget (``431`` past it; a
header flood never reaches the upgrade).
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections import Counter
from collections.abc import Generator
from typing import Any, ClassVar

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import (
    HeaderLineTooLong,
    InvalidMessage,
    RequestLineTooLong,
    TooManyHeaders,
)
from websockets.http11 import Request
from websockets.protocol import OPEN, Protocol
from websockets.server import ServerProtocol

from .limits import Limits
from .listener import FloodLog

__all__ = ["HANDSHAKE_TIMEOUT", "TOO_MANY_HANDSHAKES", "HandshakeGuard", "RelayConnection"]

logger = logging.getLogger("relay.handshakes")

TOO_MANY_HANDSHAKES = "too_many_handshakes"
"""Refusal code: closed to make room, over the limits of connections in the handshake."""
HANDSHAKE_TIMEOUT = "handshake_timeout"
"""Refusal code: no complete HTTP request within the deadline."""


class _OverBudgetError(Exception):
    """The request's line and headers exceed the pre-authentication budget."""


class HandshakeGuard:
    """Every connection of one relay that is still in its HTTP handshake.

    ``refusals`` is the relay's counter of refusals by code (``/health``).
    ``total`` and ``per_address``: the limits (0: none); ``timeout``: seconds a
    connection has to finish its handshake.
    """

    def __init__(
        self, refusals: Counter[str], *, total: int, per_address: int, timeout: float
    ) -> None:
        self.refusals = refusals
        self.total = total
        self.per_address = per_address
        self.timeout = timeout
        self.count = 0
        """Connections in the handshake now."""
        self._by_address: dict[str, dict[RelayConnection, asyncio.TimerHandle]] = {}
        self._evicted = FloodLog(
            logger.warning,
            "closed %d connection(s) in the HTTP handshake in the last %.0f s to make room "
            "(over %s); the latest from %s",
        )
        self._expired = FloodLog(
            logger.info,
            "closed %d connection(s) that sent no complete HTTP request within the deadline "
            "in the last %.0f s; the latest from %s",
        )

    def opened(self, connection: RelayConnection) -> None:
        """``connection`` was accepted: track it, making room if it is over a limit."""
        address = connection.address
        pending = self._by_address.setdefault(address, {})
        room = True
        if self.per_address and len(pending) >= self.per_address:
            room = self._evict(address, f"{self.per_address} from {address}")
        elif self.total and self.count >= self.total:
            busiest = max(self._by_address, key=lambda a: len(self._by_address[a]))
            room = self._evict(busiest, f"{self.total} in all")
        if not room:  # every one of them is being answered: refuse the newcomer
            self.refusals[TOO_MANY_HANDSHAKES] += 1
            self._evicted("the limit", address)
            connection.transport.abort()
        if connection.transport.is_closing():
            if not pending:
                del self._by_address[address]
            return
        loop = asyncio.get_running_loop()
        pending[connection] = loop.call_later(self.timeout, self._deadline, connection)
        self.count += 1

    def done(self, connection: RelayConnection) -> None:
        """``connection`` finished its handshake (or closed): stop tracking it."""
        pending = self._by_address.get(connection.address)
        timer = pending.pop(connection, None) if pending is not None else None
        if timer is None:
            return
        timer.cancel()
        self.count -= 1
        if not pending:
            del self._by_address[connection.address]

    def tick(self) -> None:
        """Report what the flood logs counted since their last line (now and then)."""
        self._evicted.tick()
        self._expired.tick()

    def _evict(self, address: str, limit: str) -> bool:
        """Close ``address``'s oldest connection whose request has not fully
        arrived; False if there is none (all of them are being answered)."""
        pending = self._by_address.get(address, {})
        victim = next((c for c in pending if not c.request_complete), None)
        if victim is None:
            return False
        self.refusals[TOO_MANY_HANDSHAKES] += 1
        self._evicted(limit, victim.address)
        self.done(victim)
        victim.transport.abort()
        return True

    def _deadline(self, connection: RelayConnection) -> None:
        self.refusals[HANDSHAKE_TIMEOUT] += 1
        self._expired(connection.address)
        self.done(connection)
        connection.transport.abort()


class RelayConnection(ServerConnection):
    """A websockets server connection that reports to the relay's
    :class:`HandshakeGuard` and parses its request within ``limits``.

    Use :meth:`bind` to make the class websockets instantiates
    (``serve(create_connection=...)``).
    """

    __slots__ = ("address", "request_bytes", "request_complete")  # not in the (large) __dict__

    guard: ClassVar[HandshakeGuard]
    limits: ClassVar[Limits]

    @classmethod
    def bind(
        cls, guard: HandshakeGuard, limits: Limits, base: type[ServerConnection] = ServerConnection
    ) -> type[RelayConnection]:
        """A subclass reporting to ``guard`` and parsing within ``limits``, over
        ``base`` (another connection class of the relay: its own methods run
        within these)."""
        bound: type[RelayConnection] = type(
            "BoundRelayConnection", (cls, base), {"guard": guard, "limits": limits}
        )
        return bound

    def __init__(self, protocol: ServerProtocol, *args: Any, **kwargs: Any) -> None:
        super().__init__(protocol, *args, **kwargs)
        self.address = ""
        self.request_complete = False
        """Its whole request arrived (the head; and a routed HTTP request's body):
        it is being answered, so it is never closed to make room. A request line
        alone, part of the headers or part of a body does not count."""
        self.request_bytes = 0
        """Bytes of the request line and headers (they count before authentication)."""
        # Replace websockets' request parser before any byte has arrived.
        protocol.parser = self._parse_request(protocol)
        next(protocol.parser)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
        super().connection_made(transport)
        self.guard.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.done(self)
        super().connection_lost(exc)

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().handshake(*args, **kwargs)
        finally:
            self.guard.done(self)
        if self.protocol.state is OPEN:
            # Nothing reads the headers once the connection is open (the relay takes
            # the path, the token's access and the address during the handshake): an
            # idle connection does not keep them (a few KB, more from a browser).
            if self.request is not None:
                self.request.headers = Headers()
            if self.response is not None:
                self.response.headers = Headers()

    def _parse_request(self, protocol: ServerProtocol) -> Generator[None]:
        """websockets' ``ServerProtocol.parse``, answering what it drops in silence."""
        budget = self.limits.max_pre_auth_bytes

        def read_line(limit: int, too_long: type[Exception]) -> Generator[None, None, bytearray]:
            room = budget - self.request_bytes
            if room < limit:
                line = yield from protocol.reader.read_line(room, _OverBudgetError)
            else:
                line = yield from protocol.reader.read_line(limit, too_long)
            self.request_bytes += len(line)
            return line

        status: http.HTTPStatus | None = None
        try:
            request = yield from Request.parse(read_line)
        except _OverBudgetError:
            status = http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
            reason = f"the request line and headers exceed {budget} bytes"
        except (HeaderLineTooLong, TooManyHeaders) as exc:
            status = http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
            reason = str(exc)
        except RequestLineTooLong as exc:
            status = http.HTTPStatus.REQUEST_URI_TOO_LONG
            reason = str(exc)
        except EOFError as exc:  # closed before a whole request: nobody to answer
            protocol.handshake_exc = InvalidMessage("did not receive a valid HTTP request")
            protocol.handshake_exc.__cause__ = exc
            protocol.send_eof()
            protocol.parser = protocol.discard()
            next(protocol.parser)
            yield
            return
        except (ValueError, UnicodeDecodeError, NotImplementedError) as exc:
            status = http.HTTPStatus.BAD_REQUEST
            reason = f"malformed HTTP request: {exc}"
        self.request_complete = True  # answered from here on, whatever the answer
        if status is not None:
            logger.info("%s: HTTP %d: %s", self.address, status.value, reason)
            protocol.handshake_exc = InvalidMessage(reason)
            protocol.send_response(protocol.reject(status, reason + "\n"))
            yield
            return
        protocol.events.append(request)
        # Frames from here on: websockets' own parser takes over, as websockets hands
        # over to discard() (this generator's frame is not kept for the connection's life).
        protocol.parser = Protocol.parse(protocol)
        next(protocol.parser)
        yield


def connection_factory(
    refusals: Counter[str],
    limits: Limits,
    total: int,
    base: type[ServerConnection] = ServerConnection,
) -> tuple[HandshakeGuard, type[RelayConnection]]:
    """The guard of one relay and the connection class reporting to it (over
    ``base``, see :meth:`RelayConnection.bind`)."""
    guard = HandshakeGuard(
        refusals,
        total=total,
        per_address=limits.max_handshakes_per_address,
        timeout=limits.auth_timeout,
    )
    return guard, RelayConnection.bind(guard, limits, base)
