"""The relay service: a websockets server around the sans-I/O :class:`~relay.rooms.Hub`.

This module only moves bytes and runs the storage calls the hub asks for:

- one reader and one writer per connection (the writer drains the session's
  bounded queue; a client that stops reading is closed as a slow consumer);
- one storage writer for the whole relay doing group commit: every update
  received while a commit runs goes into the next one, and ACKs are sent
  after the commit that holds them (fan-out does not wait for the disk);
- room loads and background compactions as tasks, and a janitor that unloads
  idle rooms.

Use ``async with Relay(...) as relay:`` or ``await relay.start()`` /
``await relay.stop()``; ``python -m relay`` runs it from the command line.
"""

from __future__ import annotations

import asyncio
import http
import ipaddress
import json
import logging
import secrets
import ssl
import urllib.parse
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any

import pycrdt
import websockets
from websockets.asyncio.server import Server, ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidState
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Origin

from crdtsync.errors import AuthError, StoreError
from crdtsync.ids import DocId, check_doc_id
from crdtsync.protocol import ErrorCode
from crdtsync.session import CLOSE_POLICY, Access, Authenticate, Limits, RelaySession
from crdtsync.statevector import DeleteSet, StateVector, doc_state

from .rooms import DEFAULT_COMPACT_MIN_BYTES, Hub, Room, RoomState, replay
from .storage import RelayStorage, StoredRoom, open_storage

__all__ = ["DEFAULT_STORE", "Relay"]

logger = logging.getLogger("relay.server")

DEFAULT_STORE = "sqlite:///relay-data/relay.db"
NATIVE_PATH = "/"
DOCS_PREFIX = "/docs/"
"""``GET /docs/<doc id>``: the document's current state as one Yjs update."""
TICK = 1.0
"""Seconds between checks of authentication deadlines and token expiry."""
_UNAUTHORIZED = frozenset(
    {
        ErrorCode.TOKEN_REQUIRED,
        ErrorCode.TOKEN_INVALID,
        ErrorCode.TOKEN_EXPIRED,
        ErrorCode.TOKEN_NOT_YET_VALID,
        ErrorCode.UNKNOWN_KEY,
        ErrorCode.WRONG_ALGORITHM,
    }
)
YJS_PREFIX = "/yjs/"
"""y-websocket clients connect to ``YJS_PREFIX + <doc id>`` (percent-decoded)."""


class Relay:
    """A relay serving the native protocol on ``ws://host:port/`` and the
    y-websocket protocol on ``ws://host:port/yjs/<doc id>``.

    ``storage`` is a storage URL (``sqlite:///relay-data/relay.db``,
    ``sqlite:////abs/path.db``, ``memory://``) or a :class:`RelayStorage`.
    ``port=0`` picks a free port (read it back from :attr:`port`).
    ``idle_timeout``: seconds a room without subscribers stays in memory.
    """

    def __init__(
        self,
        storage: str | RelayStorage = DEFAULT_STORE,
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        limits: Limits = Limits(),  # noqa: B008 - frozen dataclass
        relay_id: str | None = None,
        idle_timeout: float = 60.0,
        compact_min_bytes: int = DEFAULT_COMPACT_MIN_BYTES,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        on_disconnect: Callable[[RelaySession], None] | None = None,
        commit_delay: float = 0.002,
        authenticate: Authenticate | None = None,
        authorship: bool | None = None,
        insecure: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        origins: Sequence[str] | None = None,
        compression: bool = False,
    ) -> None:
        if authenticate is None and not insecure and not _is_loopback(host):
            raise ValueError(
                f"refusing to serve {host!r} without authentication: require tokens "
                "(--require-auth) or accept an open relay on the network with --insecure"
            )
        self.authenticate = authenticate
        """Token check (None: an open relay, only on loopback unless ``insecure``)."""
        self.ssl_context = ssl_context
        self.origins = list(origins) if origins is not None else None
        """Allowed ``Origin`` headers for browsers (None: any); clients that send no
        Origin (Python, Node) are always allowed."""
        self.compression = compression
        """Offer permessage-deflate. The frame limit then applies to the
        decompressed size, so a small compressed bomb is refused (close 1009)
        before it is inflated beyond the limit."""
        self._per_address: dict[str, int] = {}
        self._access: dict[int, Access] = {}  # y-websocket connections checked at upgrade
        self.commit_delay = commit_delay
        """Seconds the storage writer waits before a commit so that more updates share
        its fsync (group commit). Delays ACKs, never fan-out."""
        self.on_disconnect = on_disconnect
        """Called with each connection's session when it has closed (for monitoring)."""
        self.storage = open_storage(storage) if isinstance(storage, str) else storage
        self.host = host
        self.limits = limits
        self.relay_id = relay_id or f"relay-{secrets.token_hex(4)}"
        self.idle_timeout = idle_timeout
        self._requested_port = port
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self.hub = Hub(
            self.relay_id,
            limits,
            compact_min_bytes=compact_min_bytes,
            on_load=self._on_load,
            on_write=self._on_write,
            on_compact=self._on_compact,
            authenticate=authenticate,
            authorship=authorship,
        )
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._write_wake = asyncio.Event()
        self._writes_idle = asyncio.Event()
        self._writes_idle.set()
        self._writer: asyncio.Task[None] | None = None
        self._janitor: asyncio.Task[None] | None = None
        self._stopping = False
        self.connections: set[ServerConnection] = set()

    # -- life cycle ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the relay listens on (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("the relay is not started")
        port: int = next(iter(self._server.sockets)).getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """``ws://host:port`` (``wss://`` with TLS) of the native protocol."""
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> None:
        """Open storage and start listening."""
        await self.storage.open()
        # Updates other relay processes stored (shared storage such as Redis) reach
        # this process's rooms; single-process backends never call it.
        self.storage.on_remote(self.hub.remote_update)
        loop = asyncio.get_running_loop()
        self._writer = loop.create_task(self._write_loop(), name="relay storage writer")
        self._janitor = loop.create_task(self._janitor_loop(), name="relay janitor")
        try:
            self._server = await websockets.serve(
                self._handle,
                self.host,
                self._requested_port,
                max_size=self.limits.max_frame,
                compression="deflate" if self.compression else None,
                process_request=self._process_request,
                ping_interval=self._ping_interval,
                ping_timeout=self._ping_timeout,
                close_timeout=2,
                open_timeout=self.limits.auth_timeout,
                ssl=self.ssl_context,
                origins=self._origins(),
            )
        except OSError:
            await self._close_background()
            await self.storage.close()
            raise
        logger.info(
            "relay %s listening on %s (storage %s, max frame %d bytes, max %d docs/connection)",
            self.relay_id,
            self.url,
            self.storage.url,
            self.limits.max_frame,
            self.limits.max_docs,
        )
        if self.authenticate is None:
            logger.warning(
                "relay %s is OPEN: no tokens are required; anyone who can reach %s can "
                "read and write every document",
                self.relay_id,
                self.url,
            )

    def _origins(self) -> list[Origin | None] | None:
        if self.origins is None:
            return None
        allowed: list[Origin | None] = [Origin(origin) for origin in self.origins]
        allowed.append(None)  # no Origin header: not a browser
        return allowed

    async def stop(self) -> None:
        """Graceful shutdown: stop accepting, store what was received (sending its
        ACKs), close every connection with 1001, close storage."""
        if self._server is None or self._stopping:
            return
        self._stopping = True
        server = self._server
        logger.info("relay %s stopping", self.relay_id)
        server.server.close()  # stop accepting; connections stay open while we drain
        await self._drain_writes()
        await self._flush_sessions(timeout=2.0)
        server.close(close_connections=True)
        await server.wait_closed()
        await self._close_background()
        await self.storage.close()
        self._server = None
        self._stopping = False
        logger.info("relay %s stopped", self.relay_id)

    async def _flush_sessions(self, timeout: float) -> None:
        """Give each connection's writer a chance to send what is queued (the ACKs
        the final drain released) before the connections are closed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(s.queued_bytes for s in self.hub.sessions) and loop.time() < deadline:
            await asyncio.sleep(0.01)  # writers run between these polls

    async def _close_background(self) -> None:
        tasks = [t for t in (self._writer, self._janitor, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._writer = self._janitor = None

    async def serve_forever(self) -> None:
        """Run until cancelled (``start`` first)."""
        if self._server is None:
            await self.start()
        await asyncio.Future()

    async def __aenter__(self) -> Relay:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- HTTP --------------------------------------------------------------------------------

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        path, _, query = request.path.partition("?")
        limit = self.limits.max_connections_per_address
        if limit and self._per_address.get(_address(connection), 0) >= limit:
            logger.warning("%s: over %d connections; refused", _peer(connection), limit)
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
                doc_id = _yjs_doc_id(path)
            except ValueError as exc:
                return _text(connection, http.HTTPStatus.BAD_REQUEST, str(exc))
            if self.authenticate is not None:
                access = self._check_token(connection, request, query, doc_id)
                if isinstance(access, Response):
                    return access
                self._access[id(connection)] = access
        elif path != NATIVE_PATH:
            return _text(connection, http.HTTPStatus.NOT_FOUND, f"no endpoint at {path}")
        if self._stopping:
            return _text(connection, http.HTTPStatus.SERVICE_UNAVAILABLE, "shutting down")
        return None

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
                if exc.code in _UNAUTHORIZED
                else http.HTTPStatus.FORBIDDEN
            )
            logger.info("%s: token refused (%s): %s", _peer(connection), exc.code, exc.message)
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
        status: dict[str, object] = {"status": "stopping" if self._stopping else "ok"}
        detailed = self.authenticate is None or (
            _bearer(request, query) is not None
            and not isinstance(self._check_token(connection, request, query, None), Response)
        )
        if detailed:
            status |= {
                "relay": self.relay_id,
                "connections": len(self.connections),
                "rooms": len(self.hub.rooms),
                "refusals": dict(self.hub.refusals),
            }
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
        room = self.hub.rooms.get(doc_id)
        try:
            if room is not None and room.state is RoomState.READY:
                state = room.doc.get_update()
            else:
                stored = await self.storage.load(doc_id)
                state = (await asyncio.to_thread(replay, stored))[0].get_update()
        except StoreError as exc:
            logger.error("GET %s: %s", path, exc)
            return _text(connection, http.HTTPStatus.SERVICE_UNAVAILABLE, "storage unavailable")
        return _body(connection, state, "application/octet-stream")

    # -- one connection ------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        peer = _peer(ws)
        wake = asyncio.Event()
        path = ws.request.path.split("?", 1)[0] if ws.request is not None else NATIVE_PATH
        self.connections.add(ws)
        address = _address(ws)
        self._per_address[address] = self._per_address.get(address, 0) + 1
        session: RelaySession
        if path.startswith(YJS_PREFIX):
            doc_id = _yjs_doc_id(path)  # checked in _process_request
            session = self.hub.open_yjs_session(
                doc_id, name=peer, on_output=wake.set, access=self._access.pop(id(ws), None)
            )
            logger.info("y-websocket connection from %s to %r", peer, doc_id)
            binary = "y-protocols messages are binary, not text"
        else:
            session = self.hub.open_session(name=peer, on_output=wake.set)
            logger.info("connection from %s", peer)
            binary = "frames are binary msgpack, not text"
        session.on_output = lambda: self._output(ws, session, wake)
        writer = asyncio.get_running_loop().create_task(self._send_loop(ws, session, wake))
        try:
            async for message in ws:
                if isinstance(message, str):
                    session.fail(1003, "bad_frame", binary)
                    break
                self.hub.receive(session, message)
                if session.close is not None or writer.done():
                    break
        except ConnectionClosed as exc:
            logger.info("connection from %s lost: %s", peer, exc)
        finally:
            self.hub.close_session(session)
            self.connections.discard(ws)
            remaining = self._per_address.pop(address, 1) - 1
            if remaining:
                self._per_address[address] = remaining
            if session.close is not None and not writer.done():
                try:
                    await asyncio.wait_for(asyncio.shield(writer), timeout=2)
                except TimeoutError:
                    logger.info("%s did not take its close frame in time; dropping it", peer)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            if session.close is not None:
                await _close(ws, session.close.code, session.close.reason)
            logger.info(
                "connection from %s (replica %s) closed%s",
                peer,
                session.replica_id,
                f": {session.close.reason}" if session.close else "",
            )
            if self.on_disconnect is not None:
                self.on_disconnect(session)

    def _output(self, ws: ServerConnection, session: RelaySession, wake: asyncio.Event) -> None:
        """The session queued frames: write them to the socket now, as websockets'
        ``broadcast()`` does (no task switch per delivery, which would cost more than
        the frame). The writer task takes over for the close, and whenever the
        connection is not plainly open.

        Backpressure: a client whose unsent bytes (the transport's buffer) exceed
        ``max_queued_bytes`` is closed as a slow consumer."""
        if session.close is not None or ws.protocol.state is not State.OPEN:
            wake.set()
            return
        frames = session.frames_to_send()
        if not frames:
            return
        protocol = ws.protocol
        try:
            for frame in frames:
                protocol.send_binary(frame)
            ws.send_data()
        except (InvalidState, OSError, RuntimeError) as exc:
            logger.info("%s: write failed (%s); the connection is closing", _peer(ws), exc)
            wake.set()
            return
        buffered = ws.transport.get_write_buffer_size()
        if buffered > self.limits.max_queued_bytes:
            session.fail(
                CLOSE_POLICY,
                ErrorCode.SLOW_CONSUMER,
                f"more than {self.limits.max_queued_bytes} bytes unsent; reconnect to resync",
            )
            # It is not reading: the close handshake cannot get through either, so
            # _close gives up after its timeout and aborts the connection.
            assert session.close is not None
            self._spawn(_close(ws, session.close.code, session.close.reason), "slow consumer")

    async def _send_loop(
        self, ws: ServerConnection, session: RelaySession, wake: asyncio.Event
    ) -> None:
        """The connection's only writer: the session's frames, in order."""
        try:
            while True:
                await wake.wait()
                wake.clear()
                frames = session.frames_to_send()
                if frames:
                    # One write and one drain for the whole batch, as websockets'
                    # broadcast does: the per-frame send() costs more than the frame.
                    async with ws.send_context():
                        for frame in frames:
                            ws.protocol.send_binary(frame)
                if session.close is not None:
                    await _close(ws, session.close.code, session.close.reason)
                    return
        except ConnectionClosed:
            return

    # -- storage -----------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_load(self, doc_id: DocId) -> None:
        self._spawn(self._load(doc_id), f"load {doc_id}")

    async def _load(self, doc_id: DocId) -> None:
        try:
            stored = await self.storage.load(doc_id)
        except StoreError as exc:
            self.hub.load_failed(doc_id, exc)
            return
        self.hub.loaded(doc_id, stored)

    def _on_write(self) -> None:
        self._writes_idle.clear()
        self._write_wake.set()

    async def _write_loop(self) -> None:
        """Group commit: everything received while one commit runs goes into the next."""
        while True:
            await self._write_wake.wait()
            if self.commit_delay and not self._stopping:
                # Let more updates join this commit: one fsync for all of them.
                await asyncio.sleep(self.commit_delay)
            self._write_wake.clear()
            writes = self.hub.take_writes()
            if writes:
                claims = [(w.doc_id, client, owner) for w in writes for client, owner in w.claims]
                try:
                    ids = await self.storage.append([(w.doc_id, w.update) for w in writes], claims)
                except StoreError as exc:
                    self.hub.write_failed(writes, exc)
                else:
                    self.hub.written(writes, ids)
            if self.hub.writes_waiting:
                self._write_wake.set()
            else:
                self._writes_idle.set()

    async def _drain_writes(self) -> None:
        """Wait until every received update is stored (or failed)."""
        while self.hub.writes_waiting or not self._writes_idle.is_set():
            self._write_wake.set()
            await self._writes_idle.wait()

    def _on_compact(self, doc_id: DocId) -> None:
        self._spawn(self._compact(doc_id), f"compact {doc_id}")

    async def _compact(self, doc_id: DocId) -> None:
        room = self.hub.rooms.get(doc_id)
        if (
            room is not None
            and room.state is RoomState.READY
            and not room.held
            and room.writes_in_flight == 0
            and room.log
            and not getattr(self.storage, "shared", False)
        ):
            await self._compact_live(doc_id, room)
            return
        try:
            stored = await self.storage.load(doc_id)
            if not stored.updates:
                self.hub.compacted(doc_id, len(stored.snapshot or b""), stored.snapshot_upto)
                return
            snapshot, upto = await asyncio.to_thread(_verified_snapshot, stored)
            await self.storage.compact(doc_id, snapshot, upto)
        except (StoreError, ValueError, RuntimeError) as exc:
            self.hub.compaction_failed(doc_id, exc)
            return
        logger.info(
            "compacted %r: log entries up to %d into a %d-byte snapshot",
            doc_id,
            upto,
            len(snapshot),
        )
        self.hub.compacted(doc_id, len(snapshot), upto)

    async def _compact_live(self, doc_id: DocId, room: Room) -> None:
        """Compact from the live room: with nothing in flight and nothing held, the
        room's document is exactly what storage holds up to its last log id (one
        relay process per storage), so there is no log to replay. The snapshot is
        checked to reproduce the room's state vector and delete set first."""
        snapshot = room.doc.get_update()
        expected = doc_state(room.doc)
        upto = room.log[-1][0]
        try:
            await asyncio.to_thread(_check_snapshot, snapshot, expected)
            await self.storage.compact(doc_id, snapshot, upto)
        except (StoreError, ValueError, RuntimeError) as exc:
            self.hub.compaction_failed(doc_id, exc)
            return
        logger.debug("compacted %r up to log entry %d (%d bytes)", doc_id, upto, len(snapshot))
        self.hub.compacted(doc_id, len(snapshot), upto)

    async def _janitor_loop(self) -> None:
        loop = asyncio.get_running_loop()
        period = max(0.05, min(self.idle_timeout / 2, TICK))
        while True:
            self.hub.unload_idle(loop.time(), self.idle_timeout)
            self.hub.expire_awareness(self.hub.clock())
            self.hub.tick()
            await asyncio.sleep(period)


def _verified_snapshot(stored: StoredRoom) -> tuple[bytes, int]:
    """The room's state as one update and the last log id it covers, checked to
    reproduce the stored content.

    Log entries still waiting for their dependencies (held) are not folded in:
    the snapshot covers the log up to the first of them, and they stay in the
    log. Raises ``ValueError`` if there is nothing to fold, or if the snapshot
    does not reproduce the same state vector and delete set.
    """
    doc, held = replay(stored)
    updates = stored.updates
    if held:
        waiting = {item.update for item in held}
        first = next(i for i, entry in enumerate(updates) if entry.update in waiting)
        if first == 0:
            raise ValueError("the oldest log entry waits for missing dependencies")
        updates = updates[:first]
        doc, _ = replay(StoredRoom(stored.doc_id, stored.snapshot, stored.snapshot_upto, updates))
    snapshot = doc.get_update()
    _check_snapshot(snapshot, doc_state(doc))
    return snapshot, updates[-1].id


def _check_snapshot(snapshot: bytes, expected: tuple[StateVector, DeleteSet]) -> None:
    """Raise ``ValueError`` unless ``snapshot`` loads into the state ``expected``."""
    check: pycrdt.Doc[Any] = pycrdt.Doc()
    check.apply_update(snapshot)
    if doc_state(check) != expected:
        raise ValueError("the snapshot does not reproduce the document it was made from")


async def _close(ws: ServerConnection, code: int, reason: str) -> None:
    try:
        await asyncio.wait_for(ws.close(code, reason), timeout=2)
    except TimeoutError:
        ws.transport.abort()


def _yjs_doc_id(path: str) -> DocId:
    """The document id of a y-websocket path (``/yjs/<doc id>``, percent-decoded).

    Raises ``ValueError`` if it is missing or not a usable document id."""
    raw = path[len(YJS_PREFIX) :]
    try:
        return check_doc_id(urllib.parse.unquote(raw, errors="strict"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"document id {raw!r} is not valid percent-encoded UTF-8") from exc
    except ValueError as exc:
        raise ValueError(f"bad document id in {path!r}: {exc}") from exc


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


def _address(ws: ServerConnection) -> str:
    address = ws.remote_address
    if isinstance(address, tuple) and address:
        return str(address[0])
    return str(address)


def _peer(ws: ServerConnection) -> str:
    address = ws.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
