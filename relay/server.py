"""The relay service: a websockets server around the sans-I/O :class:`~relay.rooms.Hub`.

This module accepts connections and moves their bytes:

- one reader per connection, handing each message to the hub; what the hub
  queues for a connection is written to its socket at once (as websockets'
  ``broadcast()`` does), and a writer task takes over for closes; a client
  whose unsent fan-out exceeds the budget is closed as a slow consumer;
- one sync pump per connection, sending large sync answers piece by piece as
  the socket drains (:mod:`relay.pump`, :mod:`relay.syncs`);
- a janitor that unloads idle rooms, expires presence and ticks the sessions'
  clocks.

HTTP endpoints and the checks before an upgrade are :mod:`relay.http`; room
loads, group commit and compaction are :mod:`relay.persistence`; readiness
(``/readyz``) is :mod:`relay.readiness` and ``/metrics`` :mod:`relay.metrics`.

Use ``async with Relay(...) as relay:`` or ``await relay.start()`` /
``await relay.stop()``; ``python -m relay`` runs it from the command line.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import ssl
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any

import websockets
from websockets.asyncio.server import Server, ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidState
from websockets.protocol import State
from websockets.typing import Origin

from crdtsync.document import DEFAULT_COMPACT_MIN_BYTES
from crdtsync.sync.protocol import ErrorCode

from .framing import BinaryFramer
from .handshakes import HandshakeGuard, connection_factory
from .http import NATIVE_PATH, YJS_PREFIX, HttpFront, peer, yjs_doc_id
from .listener import Listener, listen, quiet_accept_errors, raise_open_file_limit
from .memory import Trimmer
from .metrics import RelayMetrics
from .offline import OfflineEndpoints, OfflineOptions
from .ondemand import OnDemand
from .persistence import Persistence
from .pump import sync_step
from .readiness import Readiness
from .rooms import Hub
from .session import (
    CLOSE_POLICY,
    CLOSE_SERVICE_RESTART,
    CLOSE_UNSUPPORTED_DATA,
    Authenticate,
    Limits,
    RelaySession,
)
from .storage import RelayStorage, open_storage
from .yjs import YjsSession

__all__ = ["DEFAULT_STORE", "Relay"]

logger = logging.getLogger("relay.server")

DEFAULT_STORE = "sqlite:///relay-data/relay.db"
TICK = 1.0
"""Seconds between checks of authentication deadlines and token expiry."""


class Relay:
    """A relay serving the native protocol on ``ws://host:port/`` and the
    y-websocket protocol on ``ws://host:port/yjs/<doc id>``.

    ``storage`` is a storage URL (``sqlite:///relay-data/relay.db``,
    ``sqlite:////abs/path.db``, ``redis://host:6379/0``, ``memory://``) or a
    :class:`RelayStorage`. ``drain_timeout``: seconds :meth:`stop` waits for what
    was received to be stored before closing connections anyway.
    ``port=0`` picks a free port (read it back from :attr:`port`).
    ``idle_timeout``: seconds a room without subscribers stays in memory.
    ``offline``: limits of the offline-app endpoints (``/fetch``, ``/attachments/``).
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
        drain_timeout: float = 10.0,
        offline: OfflineOptions | None = None,
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
        self._trimmer = Trimmer()
        self.hub = Hub(
            self.relay_id,
            limits,
            compact_min_bytes=compact_min_bytes,
            authenticate=authenticate,
            authorship=authorship,
        )
        self.persistence = Persistence(self.hub, self.storage, commit_delay=commit_delay)
        self.drain_timeout = drain_timeout
        self.readiness = Readiness(self.relay_id, self.persistence, lambda: self._stopping)
        """Whether the relay takes work (``/readyz``); ``await relay.readiness.wait()``."""
        self.metrics = RelayMetrics(self.hub, self.persistence, lambda: self.readiness.ready)
        self.connections: set[ServerConnection] = set()
        self.guard: HandshakeGuard | None = None
        """Connections still in the HTTP handshake (from :meth:`start`)."""
        self.http = HttpFront(
            self.hub,
            self.storage,
            limits,
            authenticate=authenticate,
            connections=lambda: len(self.connections),
            readiness=self.readiness.reason,
            metrics=self.metrics.render,
            figures=self._figures,
        )
        # Offline apps: POST /fetch and /attachments/ over plain HTTP (relay.offline).
        self.offline = OfflineEndpoints(
            self.hub, self.storage, authenticate=authenticate, options=offline
        )
        self._framed = BinaryFramer()
        self._server: Server | None = None
        self._restore_handler: Callable[[], None] | None = None
        self._listener: Listener | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._janitor: asyncio.Task[None] | None = None
        self._stopping = False

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
        self.offline.open()
        # Updates other relay processes stored (shared storage such as Redis) reach
        # this process's rooms; single-process backends never call it.
        self.storage.on_remote(self.hub.remote_update)
        self.persistence.start()
        loop = asyncio.get_running_loop()
        self._janitor = loop.create_task(self._janitor_loop(), name="relay janitor")
        self.readiness.started = True
        self._spawn(self.readiness.watch(), "relay readiness")
        files = raise_open_file_limit()
        self.guard, connection = connection_factory(
            self.hub.refusals,
            self.limits,
            self._handshake_limit(files),
            base=self.offline.connection_class,  # /fetch and /attachments/ first
        )
        try:
            sock = self._listener = listen(self.host, self._requested_port)
            self._restore_handler = quiet_accept_errors(loop, sock)
            self._server = await websockets.serve(
                self._handle,
                sock=sock,
                create_connection=connection,
                max_size=self.limits.max_frame,
                compression="deflate" if self.compression else None,
                process_request=self.http.process_request,
                ping_interval=self._ping_interval,
                ping_timeout=self._ping_timeout,
                close_timeout=2,
                # The guard closes a handshake at auth_timeout; this is a backstop.
                open_timeout=self.limits.auth_timeout + 1,
                ssl=self.ssl_context,
                origins=self._origins(),
            )
        except OSError:
            if self._restore_handler is not None:
                self._restore_handler()
                self._restore_handler = None
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            await self._close_background()
            await self.storage.close()
            raise
        logger.info(
            "relay %s listening on %s (storage %s, max frame %d bytes, max %d docs/connection, "
            "%s connections in the HTTP handshake)",
            self.relay_id,
            self.url,
            self.storage.url,
            self.limits.max_frame,
            self.limits.max_docs,
            f"at most {self.guard.total}" if self.guard.total else "no limit on",
        )
        if self.authenticate is None:
            logger.warning(
                "relay %s is OPEN: no tokens are required; anyone who can reach %s can "
                "read and write every document",
                self.relay_id,
                self.url,
            )

    def _handshake_limit(self, files: tuple[int, int] | None) -> int:
        """``max_handshakes``, lowered to a quarter of the open-file limit: a flood
        of silent connections must leave descriptors for everyone else."""
        limit = self.limits.max_handshakes
        if files is None or not limit:  # 0: unlimited, the operator's explicit choice
            return limit
        share = max(16, files[0] // 4)
        if share < limit:
            logger.info(
                "at most %d connections in the HTTP handshake (a quarter of the open-file "
                "limit of %d)",
                share,
                files[0],
            )
            return share
        return limit

    def _tick_floods(self) -> None:
        """The last counts of accept failures and closed handshakes reach the log."""
        if self.guard is not None:
            self.guard.tick()
        if self._listener is not None:
            self._listener.failures.tick()

    def _figures(self) -> dict[str, object]:
        """``/health`` figures beyond the HTTP front's own."""
        syncs = self.hub.syncs
        return {
            "handshakes": self.guard.count if self.guard is not None else 0,
            "syncs": {
                "sending": syncs.active,
                "waiting": len(syncs.waiting),
                "completed": syncs.completed,
            },
        }

    def _origins(self) -> list[Origin | None] | None:
        if self.origins is None:
            return None
        allowed: list[Origin | None] = [Origin(origin) for origin in self.origins]
        allowed.append(None)  # no Origin header: not a browser
        return allowed

    async def stop(self) -> None:
        """Graceful shutdown (drain): stop accepting, store what was received and send
        its ACKs (waiting at most ``drain_timeout`` seconds), close every connection
        with 1012 (service restart: clients go to another relay at once), close
        storage."""
        if self._server is None or self._stopping:
            return
        self._stopping = self.http.stopping = True
        self.readiness.check()
        server = self._server
        logger.info("relay %s stopping", self.relay_id)
        server.server.close()  # stop accepting; connections stay open while we drain
        await self._drain()
        server.close(close_connections=True)
        await server.wait_closed()
        if self._restore_handler is not None:
            self._restore_handler()
            self._restore_handler = None
        self._listener = None
        await self._close_background()
        await self.storage.close()
        self._server = None
        self.readiness.started = False
        self._stopping = self.http.stopping = False
        logger.info("relay %s stopped", self.relay_id)

    async def _drain(self) -> None:
        """Store what was received, send its ACKs, then close every connection with
        1012 and wait (briefly) for the closes to complete."""
        try:
            await asyncio.wait_for(self.persistence.drain(), self.drain_timeout)
        except TimeoutError:
            logger.error(
                "relay %s: %d update(s) not stored within %g s; their senders resend them",
                self.relay_id,
                self.persistence.writes_waiting,
                self.drain_timeout,
            )
        await self._flush_sessions(timeout=2.0)
        for session in list(self.hub.sessions):
            session.fail(
                CLOSE_SERVICE_RESTART,
                ErrorCode.SHUTTING_DOWN,
                "the relay restarts; reconnect (to another relay)",
            )
        closing = [asyncio.ensure_future(ws.wait_closed()) for ws in self.connections]
        if closing:
            _, late = await asyncio.wait(closing, timeout=3)
            for waiter in late:
                waiter.cancel()

    async def _flush_sessions(self, timeout: float) -> None:
        """Give each connection's writer a chance to send what is queued (the ACKs
        the final drain released) before the connections are closed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.hub.queued_bytes and loop.time() < deadline:
            await asyncio.sleep(0.01)  # writers run between these polls

    async def _close_background(self) -> None:
        tasks = [t for t in (self._janitor, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._janitor = None
        await self.persistence.stop()

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

    # -- one connection ------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        name = peer(ws)
        writer = OnDemand(lambda: self._send(ws, session))
        wake = writer.set
        path = ws.request.path.split("?", 1)[0] if ws.request is not None else NATIVE_PATH
        self.connections.add(ws)
        self.http.opened(ws)
        session: RelaySession
        if path.startswith(YJS_PREFIX):
            doc_id = yjs_doc_id(path)  # checked in HttpFront.process_request
            session = self.hub.open_session(
                name,
                wake,
                kind=YjsSession,
                doc_id=doc_id,
                access=self.http.take_access(ws),
            )
            logger.info("y-websocket connection from %s to %r", name, doc_id)
            binary = "y-protocols messages are binary, not text"
        else:
            session = self.hub.open_session(name, wake)
            logger.info("connection from %s", name)
            binary = "frames are binary msgpack, not text"
        session.pre_auth_bytes = getattr(ws, "request_bytes", 0)
        session.on_output = lambda: self._output(ws, session, wake)
        session.sink = self._sink(ws, session)
        stall, slow = self.limits.sync_stall_timeout, self._slow_consumer
        pump = OnDemand(lambda: sync_step(ws, session, self.hub.syncs, stall, slow))
        session.on_sync = pump.set
        try:
            async for message in ws:
                if isinstance(message, str):
                    session.fail(CLOSE_UNSUPPORTED_DATA, ErrorCode.BAD_FRAME, binary)
                    break
                self.hub.receive(session, message)
                if session.close is not None or writer.done():
                    break
        except ConnectionClosed as exc:
            logger.info("connection from %s lost: %s", name, exc)
        finally:
            self.hub.close_session(session)
            self.connections.discard(ws)
            self.http.closed(ws)
            if session.close is not None and not writer.done():
                try:
                    await asyncio.wait_for(writer.join(), timeout=2)
                except TimeoutError:
                    logger.info("%s did not take its close frame in time; dropping it", name)
            await asyncio.gather(writer.stop(), pump.stop(), return_exceptions=True)
            if session.close is not None:
                await _close(ws, session.close.code, session.close.reason)
            logger.info(
                "connection from %s (replica %s) closed%s",
                name,
                session.replica_id,
                f": {session.close.reason}" if session.close else "",
            )
            if self.on_disconnect is not None:
                self.on_disconnect(session)

    def _output(
        self, ws: ServerConnection, session: RelaySession, wake: Callable[[], None]
    ) -> None:
        """The session queued frames: write them to the socket now, as websockets'
        ``broadcast()`` does (no task switch per delivery, which would cost more than
        the frame). The writer task takes over for the close, and whenever the
        connection is not plainly open.

        Backpressure: a client whose unsent bytes (the transport's buffer) exceed
        ``max_queued_bytes`` is closed as a slow consumer. Sync answers are not
        counted: they enter the buffer only when it has drained (at most about
        two pieces of them are ever in it; see :mod:`relay.pump`)."""
        if session.close is not None or ws.protocol.state is not State.OPEN:
            wake()
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
            logger.info("%s: write failed (%s); the connection is closing", peer(ws), exc)
            wake()
            return
        buffered = session.backlog = ws.transport.get_write_buffer_size()
        if buffered > self.limits.max_queued_bytes + 2 * self.limits.sync_piece_bytes:
            self._slow_consumer(
                ws,
                session,
                f"more than {self.limits.max_queued_bytes} bytes unsent; reconnect to resync",
            )

    def _sink(self, ws: ServerConnection, session: RelaySession) -> Callable[[bytes], bool] | None:
        """The fan-out's fast path for one connection (:attr:`RelaySession.sink`): the
        frame's websocket encoding, built once for every subscriber (a server's frames
        are not masked, so without compression they are the same bytes for all), is
        written straight to the socket. Connections that negotiated compression keep
        the per-connection path (websockets compresses each message itself).
        Backpressure as in :meth:`_output`."""
        protocol = ws.protocol
        if protocol.extensions:
            return None
        transport = ws.transport
        limit = self.limits.max_queued_bytes + 2 * self.limits.sync_piece_bytes
        framed = self._framed
        opened = State.OPEN

        def write(frame: bytes) -> bool:
            if protocol.state is not opened or transport.is_closing():
                return False  # queued: the writer task handles the close
            transport.write(framed(frame))
            buffered = session.backlog = transport.get_write_buffer_size()
            if buffered > limit:
                self._slow_consumer(
                    ws,
                    session,
                    f"more than {self.limits.max_queued_bytes} bytes unsent; reconnect to resync",
                )
            return True

        return write

    def _slow_consumer(self, ws: ServerConnection, session: RelaySession, message: str) -> None:
        """Close a client that is not reading. The close handshake cannot get through
        either, so ``_close`` gives up after its timeout and aborts the connection."""
        session.fail(CLOSE_POLICY, ErrorCode.SLOW_CONSUMER, message)
        assert session.close is not None
        self._spawn(_close(ws, session.close.code, session.close.reason), "slow consumer")

    async def _send(self, ws: ServerConnection, session: RelaySession) -> bool:
        """The connection's writer when :meth:`_output` hands over (an
        :class:`OnDemand` step): the session's frames, in order, then the close; True
        once closed."""
        try:
            frames = session.frames_to_send()
            if frames:
                # One write and one drain for the whole batch, as websockets'
                # broadcast does: the per-frame send() costs more than the frame.
                async with ws.send_context():
                    for frame in frames:
                        ws.protocol.send_binary(frame)
            if session.close is not None:
                await _close(ws, session.close.code, session.close.reason)
                return True
        except ConnectionClosed:
            return True
        return False

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _janitor_loop(self) -> None:
        loop = asyncio.get_running_loop()
        period = max(0.05, min(self.idle_timeout / 2, TICK))
        while True:
            self._trimmer.after_unload(len(self.hub.unload_idle(loop.time(), self.idle_timeout)))
            self.hub.expire_awareness(self.hub.clock())
            self.hub.tick()
            self._tick_floods()
            await asyncio.sleep(period)


async def _close(ws: ServerConnection, code: int, reason: str) -> None:
    try:
        await asyncio.wait_for(ws.close(code, reason), timeout=2)
    except TimeoutError:
        ws.transport.abort()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
