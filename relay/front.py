"""Plain HTTP requests with bodies, on the relay's websocket port.

websockets' server reads a request line and headers, and refuses any request
body: enough for the websocket upgrade and ``GET /health``, not for uploads.
:func:`connection_class` makes the websockets connection class the relay
serves with: it looks at each connection's request line first, and hands the
connections whose path starts with a registered :class:`Route` prefix
(``/fetch``, ``/attachments/``) to h11 (a sans-I/O HTTP/1.1 parser: request
framing, ``Content-Length``, chunked bodies, header validation); every other
connection goes on to websockets untouched. One request per connection
(``Connection: close``). Until its whole request has arrived such a connection
is in the handshake like any other (:mod:`relay.handshakes`: counted, closed
to make room, read and answered within the handshake deadline); its request
line and headers may not exceed the pre-authentication budget (431); a body
larger than the route's ``max_body`` is refused with 413 before it is read, and
on a relay that requires tokens a request with a body is refused (401/403)
before its body is read unless its token is accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import h11
from websockets.asyncio.server import ServerConnection

from crdtsync.errors import AuthError
from crdtsync.sync.protocol import TOKEN_REFUSALS

from .session import Access, Authenticate

__all__ = ["HttpRequest", "HttpResponse", "Route", "check_token", "connection_class"]

logger = logging.getLogger("relay.front")

_MAX_HEAD = 16 << 10
"""Longest request line and headers accepted."""


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One HTTP request, body included."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    peer: str

    def param(self, name: str) -> str | None:
        """The first value of query parameter ``name``."""
        values = self.query.get(name)
        return values[0] if values else None

    @property
    def token(self) -> str | None:
        """``Authorization: Bearer <token>`` or ``?token=``."""
        header = self.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        return self.param("token")


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """What a route answers."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def text(cls, status: int, message: str) -> HttpResponse:
        """A plain-text answer (errors: ``<code>: <what to do>``)."""
        return cls(status, (message.rstrip() + "\n").encode())

    @classmethod
    def json(cls, data: Any, status: int = 200) -> HttpResponse:
        """A JSON answer."""
        return cls(status, (json.dumps(data) + "\n").encode(), "application/json")

    def encode(self) -> bytes:
        """The response on the wire (HTTP/1.1, ``Connection: close``)."""
        reason = http.HTTPStatus(self.status).phrase
        lines = [
            f"HTTP/1.1 {self.status} {reason}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Connection: close",
            "Cache-Control: no-store",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


def check_token(authenticate: Authenticate | None, request: HttpRequest) -> Access | HttpResponse:
    """What the request's token grants (None: an open relay, everything), or the
    401/403 answer refusing it."""
    if authenticate is None:
        return _OPEN
    try:
        return authenticate(request.token)
    except AuthError as exc:
        status = 401 if exc.code in TOKEN_REFUSALS else 403
        logger.info("%s: token refused (%s): %s", request.peer, exc.code, exc.message)
        response = HttpResponse.text(status, f"{exc.code}: {exc.message}")
        if status == 401:
            return HttpResponse(
                response.status,
                response.body,
                headers=(("WWW-Authenticate", f'Bearer error="{exc.code}"'),),
            )
        return response


class _OpenAccess:
    """An open relay's access: everything (relays without tokens are loopback-only
    unless started with --insecure)."""

    subject = "anonymous"
    expires_at = None

    def can_read(self, doc_id: str) -> bool:
        return True

    def can_write(self, doc_id: str) -> bool:
        return True


_OPEN: Access = _OpenAccess()


class Route(Protocol):
    """A family of HTTP endpoints under one path prefix."""

    @property
    def prefix(self) -> str:
        """Paths starting with this go to :meth:`handle`."""
        ...

    @property
    def max_body(self) -> int:
        """Largest request body accepted (413 above)."""
        ...

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer ``request``."""
        ...


_LINGER = 2.0
"""Seconds a refused request's sender may keep sending before the connection is closed."""


class _Exchange:
    """One request read with h11, then answered."""

    def __init__(
        self,
        route: Route,
        peer: str,
        loop: asyncio.AbstractEventLoop,
        *,
        max_head: int,
        authenticate: Authenticate | None,
    ) -> None:
        self.route = route
        self.peer = peer
        self.max_head = max_head
        self.authenticate = authenticate
        self.parser = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        self.head: h11.Request | None = None
        self.body = bytearray()
        self.ready: asyncio.Future[HttpResponse | None] = loop.create_future()
        self.ended: asyncio.Future[None] = loop.create_future()
        """Done when the peer has finished sending (end of file, or connection lost)."""
        self.early = False
        """Answered before the whole request was read (a refused body)."""

    def feed(self, data: bytes) -> None:
        if self.ready.done():
            return
        self.parser.receive_data(data)
        while not self.ready.done():
            try:
                event = self.parser.next_event()
            except h11.RemoteProtocolError as exc:
                if exc.error_status_hint == 431:
                    self._too_large_head()
                else:
                    logger.info("%s: HTTP %d: %s", self.peer, exc.error_status_hint, exc)
                    self._answer(HttpResponse.text(exc.error_status_hint, f"bad_request: {exc}"))
                return
            if event is h11.NEED_DATA:
                return
            if isinstance(event, h11.Request):
                self.head = event
                headers = dict(event.headers)
                length = headers.get(b"content-length")
                if _head_size(event) > self.max_head:  # h11 checks only a head still coming
                    self._too_large_head()
                elif length is not None and length.isdigit() and int(length) > self.route.max_body:
                    self._too_large()
                elif self.authenticate is not None and (
                    b"transfer-encoding" in headers or (length is not None and length != b"0")
                ):
                    self._admit()
            elif isinstance(event, h11.Data):
                self.body += event.data
                if len(self.body) > self.route.max_body:
                    self._too_large()
            elif isinstance(event, h11.EndOfMessage):
                self.ready.set_result(None)
            elif isinstance(event, h11.ConnectionClosed):
                self._answer(HttpResponse.text(400, "bad_request: the request ended early"))

    def _too_large_head(self) -> None:
        reason = f"headers_too_large: the request line and headers exceed {self.max_head} bytes"
        logger.info("%s: HTTP 431: %s", self.peer, reason)
        self._answer(HttpResponse.text(431, reason))

    def _admit(self) -> None:
        """A body is coming: refuse it unread unless the head's token is accepted
        (an unauthenticated body would be bytes before authentication)."""
        refused = check_token(self.authenticate, self.request())
        if isinstance(refused, HttpResponse):
            self._answer(refused)

    def _too_large(self) -> None:
        self._answer(
            HttpResponse.text(
                413, f"body_too_large: at most {self.route.max_body} bytes per request"
            )
        )

    def _answer(self, response: HttpResponse) -> None:
        if not self.ready.done():
            self.early = True
            self.ready.set_result(response)

    def finished(self) -> None:
        """The peer sent end of file."""
        if not self.ended.done():
            self.ended.set_result(None)

    def lost(self) -> None:
        self._answer(HttpResponse.text(400, "bad_request: the connection was lost"))
        self.finished()

    def request(self) -> HttpRequest:
        assert self.head is not None
        target = self.head.target.decode("ascii", "replace")
        path, _, query = target.partition("?")
        return HttpRequest(
            method=self.head.method.decode("ascii", "replace"),
            path=urllib.parse.unquote(path),
            query=urllib.parse.parse_qs(query),
            headers={
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in self.head.headers
            },
            body=bytes(self.body),
            peer=self.peer,
        )

    async def answer(self) -> HttpResponse:
        early = await self.ready
        if early is not None:
            return early
        request = self.request()
        try:
            return await self.route.handle(request)
        except Exception:  # a bug answers 500 and is logged; the relay goes on
            logger.exception("%s %s from %s failed", request.method, request.path, self.peer)
            return HttpResponse.text(500, "internal_error: see the relay's log")


def _head_size(head: h11.Request) -> int:
    """Bytes of ``head``'s request line and headers as sent (give or take spaces)."""
    line = len(head.method) + len(head.target) + len(b"  HTTP/1.1\r\n")
    return line + sum(len(name) + len(value) + 4 for name, value in head.headers) + 2


class _Diversion:
    """What a connection holds to divert a routed HTTP request (one attribute on
    the connection: with more than 30 attributes, an instance's ``__dict__`` is no
    longer a compact split table and costs about 1 KB more per connection)."""

    __slots__ = ("diverted", "exchange", "sniff")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.sniff: bytearray | None = bytearray()
        """What came before the end of the request line (None once it is seen)."""
        self.exchange: _Exchange | None = None
        self.diverted: asyncio.Future[None] = loop.create_future()
        """Done when the request goes to a route."""


class _HttpAwareConnection(ServerConnection):
    """A websockets server connection that hands routed HTTP requests to h11."""

    routes: ClassVar[tuple[Route, ...]] = ()
    max_head: ClassVar[int] = _MAX_HEAD
    authenticate: ClassVar[Authenticate | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request_complete = False
        """A routed request has fully arrived (head and body) and is being answered."""
        self._http = _Diversion(self.loop)

    def _route(self, line: bytes) -> Route | None:
        parts = line.split(b" ")
        if len(parts) != 3:
            return None
        path = parts[1].split(b"?", 1)[0].decode("ascii", "replace")
        return next((r for r in self.routes if path.startswith(r.prefix)), None)

    def data_received(self, data: bytes) -> None:
        if self._http.exchange is not None:
            self._http.exchange.feed(data)
            return
        if self._http.sniff is None:
            super().data_received(data)
            return
        self._http.sniff += data
        end = self._http.sniff.find(b"\r\n")
        if end < 0 and len(self._http.sniff) < _MAX_HEAD:
            return  # the request line is not complete yet
        head, self._http.sniff = bytes(self._http.sniff), None
        route = self._route(head[:end]) if end >= 0 else None
        if route is None:
            super().data_received(head)
            return
        address = self.transport.get_extra_info("peername")
        peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        self._http.exchange = _Exchange(
            route, peer, self.loop, max_head=self.max_head, authenticate=type(self).authenticate
        )
        self._http.exchange.ready.add_done_callback(self._complete)
        self._http.diverted.set_result(None)
        self._http.exchange.feed(head)

    def _complete(self, _: asyncio.Future[HttpResponse | None]) -> None:
        self.request_complete = True

    def eof_received(self) -> bool | None:  # type: ignore[override]  # True keeps it open
        if self._http.exchange is not None:
            self._http.exchange.feed(b"")
            self._http.exchange.finished()
            return True  # keep the transport open to answer
        if self._http.sniff:
            head, self._http.sniff = bytes(self._http.sniff), None
            super().data_received(head)
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._http.exchange is not None:
            self._http.exchange.lost()
        super().connection_lost(exc)

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        """The websocket handshake, or the answer to a routed HTTP request."""
        await asyncio.wait(
            [self._http.diverted, self.request_rcvd, self.connection_lost_waiter],
            return_when=asyncio.FIRST_COMPLETED,
        )
        if self._http.exchange is None:
            await super().handshake(*args, **kwargs)
            return
        exchange = self._http.exchange
        response = await exchange.answer()
        if not self.transport.is_closing():
            self.transport.write(response.encode())
            if exchange.early and self.transport.can_write_eof():
                # Lingering close: the peer may still be sending the body just
                # refused, and closing with unread data resets the connection, which
                # can destroy the answer before the peer reads it. Half-close and
                # let the peer close first (what it sends meanwhile is discarded).
                self.transport.write_eof()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(exchange.ended), _LINGER)
            self.transport.close()
        # close() flushes what is buffered; websockets aborts the transport after
        # this returns, which would drop an unsent answer.
        await asyncio.shield(self.connection_lost_waiter)


def connection_class(
    routes: Sequence[Route],
    *,
    max_head: int = _MAX_HEAD,
    authenticate: Authenticate | None = None,
) -> type[ServerConnection]:
    """A connection class for ``websockets.serve(create_connection=...)`` that
    answers ``routes`` over plain HTTP (see the module docstring): request line
    and headers of at most ``max_head`` bytes (and never more than 16 KiB), and
    a body only with a token ``authenticate`` accepts (None: an open relay)."""
    attributes = {
        "routes": tuple(routes),
        "max_head": min(max_head, _MAX_HEAD),
        "authenticate": staticmethod(authenticate) if authenticate is not None else None,
    }
    return type("HttpAwareConnection", (_HttpAwareConnection,), attributes)
