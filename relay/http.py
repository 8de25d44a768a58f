"""What the relay answers over plain HTTP, and the checks before a websocket upgrade.

Every request reaches :meth:`HttpFront.process_request` first (websockets'
``process_request`` hook). It answers:

- ``GET /health``: liveness for anyone; the figures need a token when the relay
  requires tokens;
- ``GET /healthz``: 200 while the process runs; ``GET /readyz``: 200 while the
  relay takes work, else 503 with the reason (:mod:`relay.readiness`); ``GET
  /metrics``: Prometheus text format (:mod:`relay.metrics`), with a token when
  the relay requires tokens. These three come before every other check but
  the method;
- ``GET /docs/<doc id>``: the document's current state as one Yjs update
  (``application/octet-stream``), with read access when tokens are required;

and for the two websocket paths (``/`` native, ``/yjs/<doc id>`` y-websocket)
it refuses the upgrade early: too many connections from one address (429;
never for :data:`PROBE_PATHS`), a bad document id (400), a token refused before
a y-websocket upgrade (401/403, since y-protocols cannot carry a token
refusal), an unknown path (404), or a relay that is shutting down (503).
Returning None lets the upgrade proceed. A method other than GET gets 405 (400
if it is no HTTP method); malformed requests and oversized headers are
answered before this, by :mod:`relay.handshakes`.
"""

from __future__ import annotations

import asyncio
import http
import ipaddress
import json
import logging
import urllib.parse
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from crdtsync.errors import AuthError, StoreError
from crdtsync.ids import DocId, check_doc_id
from crdtsync.sync.protocol import TOKEN_REFUSALS, ErrorCode

from .room import replay
from .rooms import Hub
from .session import Access, Authenticate, Limits
from .storage import RelayStorage

__all__ = [
    "DOCS_PREFIX",
    "NATIVE_PATH",
    "PROBE_PATHS",
    "YJS_PREFIX",
    "HttpFront",
    "peer",
    "yjs_doc_id",
]

logger = logging.getLogger("relay.http")

NATIVE_PATH = "/"
DOCS_PREFIX = "/docs/"
"""``GET /docs/<doc id>``: the document's current state as one Yjs update."""
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus' text exposition format."""
YJS_PREFIX = "/yjs/"
"""y-websocket clients connect to ``YJS_PREFIX + <doc id>`` (percent-decoded)."""
PROBE_PATHS = frozenset({"/health", "/healthz", "/readyz", "/metrics"})
"""Health checkers and scrapers: never refused for their address's connections
(a load balancer or sidecar shares its address with clients at peak load)."""
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)


class HttpFront:
    """The HTTP side of one relay: endpoints, upgrade checks, connections per address.

    ``connections()`` counts the open websocket connections (for ``/health``).
    The connection loop reports each upgraded connection with :meth:`opened`
    and :meth:`closed`, and takes the access checked before a y-websocket
    upgrade with :meth:`take_access`.
    """

    def __init__(
        self,
        hub: Hub,
        storage: RelayStorage,
        limits: Limits,
        *,
        authenticate: Authenticate | None,
        connections: Callable[[], int],
        readiness: Callable[[], str | None] = lambda: None,
        metrics: Callable[[], bytes] | None = None,
        figures: Callable[[], dict[str, object]] = dict,
    ) -> None:
        self.hub = hub
        self.figures = figures
        """More figures for ``/health`` (connections in the handshake, syncs)."""
        self.storage = storage
        self.limits = limits
        self.authenticate = authenticate
        self.connections = connections
        self.readiness = readiness
        """Why the relay takes no work now (None: ready), for ``/readyz``."""
        self.metrics = metrics
        """The ``/metrics`` body (None: no metrics)."""
        self.stopping = False
        """Set while the relay shuts down: upgrades get 503."""
        self._per_address: dict[str, int] = {}
        self._access: dict[int, Access] = {}  # y-websocket connections checked at upgrade

    # -- connections per address ---------------------------------------------------------

    def opened(self, ws: ServerConnection) -> None:
        """An upgraded connection from ``ws``'s address is open."""
        address = _address(ws)
        self._per_address[address] = self._per_address.get(address, 0) + 1

    def closed(self, ws: ServerConnection) -> None:
        """The connection has ended."""
        address = _address(ws)
        remaining = self._per_address.pop(address, 1) - 1
        if remaining:
            self._per_address[address] = remaining
        self._access.pop(id(ws), None)

    def take_access(self, ws: ServerConnection) -> Access | None:
        """What the token of ``ws``'s y-websocket upgrade grants (None: no tokens)."""
        return self._access.pop(id(ws), None)

    # -- requests ------------------------------------------------------------------------

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        """Answer ``request``, or return None to let the websocket upgrade proceed."""
        path, _, query = request.path.partition("?")
        if request.method != "GET":
            return self._bad_method(connection, request.method, path)
        probe = self._operations(connection, request, path, query)
        if probe is not None:
            return probe
        limit = self.limits.max_connections_per_address
        if (
            limit
            and path not in PROBE_PATHS
            and self._per_address.get(_address(connection), 0) >= limit
        ):
            logger.warning("%s: over %d connections; refused", peer(connection), limit)
            self.hub.refusals[ErrorCode.TOO_MANY_CONNECTIONS] += 1
            return _text(
                connection,
                http.HTTPStatus.TOO_MANY_REQUESTS,
                f"{ErrorCode.TOO_MANY_CONNECTIONS}: at most {limit} per address",
            )
        if path == "/health":
            return self._health(connection, request, query)
        if path.startswith(DOCS_PREFIX):
            return await self._document(connection, request, query, path)
        if path.startswith(YJS_PREFIX):
            try:
                doc_id = yjs_doc_id(path)
            except ValueError as exc:
                return _text(connection, http.HTTPStatus.BAD_REQUEST, str(exc))
            if self.authenticate is not None:
                access = self._check_token(connection, request, query, doc_id)
                if isinstance(access, Response):
                    return access
                self._access[id(connection)] = access
        elif path != NATIVE_PATH:
            return _text(connection, http.HTTPStatus.NOT_FOUND, f"no endpoint at {path}")
        if self.stopping:
            return _text(connection, http.HTTPStatus.SERVICE_UNAVAILABLE, "shutting down")
        return None

    def _bad_method(self, connection: ServerConnection, method: str, path: str) -> Response:
        """Only GET is served: 405 for another HTTP method, 400 for an unknown one."""
        if method in HTTP_METHODS:
            logger.info("%s: %s %s: method not allowed", peer(connection), method, path)
            response = _text(
                connection, http.HTTPStatus.METHOD_NOT_ALLOWED, f"{method} not allowed: only GET"
            )
            response.headers["Allow"] = "GET"
            return response
        logger.info("%s: unknown HTTP method %r for %s", peer(connection), method[:32], path)
        return _text(connection, http.HTTPStatus.BAD_REQUEST, f"unknown HTTP method {method!r}")

    # -- operations: probes and metrics -------------------------------------------------

    def _operations(
        self, connection: ServerConnection, request: Request, path: str, query: str
    ) -> Response | None:
        """``/healthz``, ``/readyz`` and ``/metrics`` (None for any other path)."""
        if path == "/healthz":
            return _text(connection, http.HTTPStatus.OK, "ok")
        if path == "/readyz":
            reason = self.readiness()
            if reason is None:
                return _text(connection, http.HTTPStatus.OK, "ready")
            return _text(connection, http.HTTPStatus.SERVICE_UNAVAILABLE, f"not ready: {reason}")
        if path == "/metrics" and self.metrics is not None:
            return self._metrics(connection, request, query, self.metrics)
        return None

    def _metrics(
        self,
        connection: ServerConnection,
        request: Request,
        query: str,
        render: Callable[[], bytes],
    ) -> Response:
        """``GET /metrics``: with tokens required, any valid token may read them, and
        so may this host (a loopback address: ``curl localhost:8765/metrics``, a
        scraper on the same machine) without one. They are aggregate counts and
        latencies: no document ids, subjects or addresses."""
        if self.authenticate is not None and metrics_need_token(_address(connection)):
            access = self._check_token(connection, request, query, None)
            if isinstance(access, Response):
                return access
        return _body(connection, render(), METRICS_CONTENT_TYPE)

    def _check_token(
        self, connection: ServerConnection, request: Request, query: str, doc_id: DocId | None
    ) -> Access | Response:
        """The access of the request's token (``Authorization: Bearer`` or
        ``?token=``), or the 401/403 response refusing it."""
        assert self.authenticate is not None
        token = _bearer(request, query)
        try:
            access = self.authenticate(token)
        except AuthError as exc:
            status = (
                http.HTTPStatus.UNAUTHORIZED
                if exc.code in TOKEN_REFUSALS
                else http.HTTPStatus.FORBIDDEN
            )
            logger.info("%s: token refused (%s): %s", peer(connection), exc.code, exc.message)
            self.hub.refusals[exc.code] += 1
            response = _text(connection, status, f"{exc.code}: {exc.message}")
            if status == http.HTTPStatus.UNAUTHORIZED:
                response.headers["WWW-Authenticate"] = f'Bearer error="{exc.code}"'
            return response
        if doc_id is not None and not access.can_read(doc_id):
            self.hub.refusals[ErrorCode.PERMISSION_DENIED] += 1
            return _text(
                connection,
                http.HTTPStatus.FORBIDDEN,
                f"{ErrorCode.PERMISSION_DENIED}: your token grants no access to {doc_id!r}",
            )
        return access

    def _health(self, connection: ServerConnection, request: Request, query: str) -> Response:
        """``GET /health``: liveness for anyone; the figures need a token when the
        relay requires tokens."""
        status: dict[str, object] = {"status": "stopping" if self.stopping else "ok"}
        detailed = self.authenticate is None or (
            _bearer(request, query) is not None
            and not isinstance(self._check_token(connection, request, query, None), Response)
        )
        if detailed:
            status |= {
                "relay": self.hub.relay_id,
                "connections": self.connections(),
                "rooms": len(self.hub.rooms),
                "refusals": dict(self.hub.refusals),
            }
            status |= self.figures()
        return _body(connection, (json.dumps(status) + "\n").encode(), "application/json")

    async def _document(
        self, connection: ServerConnection, request: Request, query: str, path: str
    ) -> Response:
        """``GET /docs/<doc id>``: the document's state as one Yjs v1 update
        (``application/octet-stream``); needs read access when tokens are required."""
        try:
            doc_id = check_doc_id(urllib.parse.unquote(path[len(DOCS_PREFIX) :], errors="strict"))
        except (UnicodeDecodeError, ValueError) as exc:
            return _text(connection, http.HTTPStatus.BAD_REQUEST, f"bad document id: {exc}")
        if self.authenticate is not None:
            access = self._check_token(connection, request, query, doc_id)
            if isinstance(access, Response):
                return access
        try:
            state = self.hub.document_state(doc_id)
            if state is None:
                stored = await self.storage.load(doc_id)
                state = (await asyncio.to_thread(replay, stored)).doc.get_update()
        except StoreError as exc:
            logger.error("GET %s: %s", path, exc)
            return _text(connection, http.HTTPStatus.SERVICE_UNAVAILABLE, "storage unavailable")
        return _body(connection, state, "application/octet-stream")


def yjs_doc_id(path: str) -> DocId:
    """The document id of a y-websocket path (``/yjs/<doc id>``, percent-decoded).

    Raises ``ValueError`` if it is missing or not a usable document id."""
    raw = path[len(YJS_PREFIX) :]
    try:
        return check_doc_id(urllib.parse.unquote(raw, errors="strict"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"document id {raw!r} is not valid percent-encoded UTF-8") from exc
    except ValueError as exc:
        raise ValueError(f"bad document id in {path!r}: {exc}") from exc


def _bearer(request: Request, query: str) -> str | None:
    """The request's token: ``Authorization: Bearer <token>`` or ``?token=``."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    values = urllib.parse.parse_qs(query).get("token")
    return values[0] if values else None


def _text(connection: ServerConnection, status: http.HTTPStatus, text: str) -> Response:
    return connection.respond(status, text + "\n")


def _body(connection: ServerConnection, body: bytes, content_type: str) -> Response:
    """200 with ``body`` of ``content_type`` (``respond`` only makes text)."""
    response = connection.respond(http.HTTPStatus.OK, "")
    del response.headers["Content-Type"]
    del response.headers["Content-Length"]
    response.headers["Content-Type"] = content_type
    response.headers["Content-Length"] = str(len(body))
    response.body = body
    return response


def metrics_need_token(address: str) -> bool:
    """Whether a ``/metrics`` request from ``address`` needs a token on a relay that
    requires them: yes, unless it comes from this host (a loopback address)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:  # a Unix socket path, or nothing known: ask for a token
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # an IPv4 client on a dual-stack socket
    return not ip.is_loopback


def _address(ws: ServerConnection) -> str:
    address = ws.remote_address
    if isinstance(address, tuple) and address:
        return str(address[0])
    return str(address)


def peer(ws: ServerConnection) -> str:
    """``host:port`` of the other end, for logs."""
    address = ws.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
