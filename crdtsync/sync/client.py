"""The asyncio websocket connector: moves bytes between a relay and a
:class:`~crdtsync.sync.session.ClientSession`, reconnects, and reports status.

All protocol decisions are in the session; this module only dials, reads,
writes, waits and decides which failures are worth retrying. Apps use it
through :meth:`crdtsync.Replica.connect` (the ``crdtsync`` package registers
:class:`Connector` as the replica's :class:`~crdtsync.replica.SyncLink`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Final

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from ..errors import (
    AuthError,
    ProtocolError,
    RelayRefusedError,
    StoreError,
    SyncError,
    TooManyDocumentsError,
)
from ..events import (
    AwarenessReceived,
    DocumentFetched,
    DocumentLive,
    DocumentOpened,
    DocumentOverLimit,
    DocumentRestricted,
    DocumentSynced,
    LocalUpdate,
    RelayErrorReceived,
    SessionEvent,
    StatusChanged,
    SyncStatus,
)
from ..ids import DocId
from ..link import Token
from ..replica import Replica
from .fetch import token_value
from .presence import PresenceLink
from .protocol import DEFAULT_MAX_FRAME, TOKEN_REFUSALS, ErrorCode
from .retry import RetryState, check_ws_url, endpoint_error, fatal_error
from .session import ClientSession
from .uploads import AttachmentUploader

__all__ = ["Connector", "backoff", "is_retryable"]

logger = logging.getLogger("crdtsync.sync.client")

CLOSE_SERVICE_RESTART: Final = 1012
"""Websocket close code of a relay that restarts (RFC 6455 registry): go elsewhere."""

# Relay errors that reconnecting cannot fix.
_FATAL_CODES = frozenset({ErrorCode.UNSUPPORTED_VERSION})
# Token refusals: fatal (AuthError), except an expiry on a live connection when the
# token comes from a callable (the next connection asks it for a fresh one).
_AUTH_CODES = TOKEN_REFUSALS | {ErrorCode.PERMISSION_DENIED}


def backoff(
    initial: float = 0.25,
    maximum: float = 30.0,
    factor: float = 2.0,
    rng: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Delays (seconds) before each reconnection attempt: capped exponential
    backoff with full jitter. Pure: no clock, no sleeping; ``rng`` returns [0, 1).

    The n-th delay is uniform in ``[ceiling / 2, ceiling]`` where ``ceiling`` is
    ``min(maximum, initial * factor ** n)``, so a fleet of clients that lost the
    same relay does not come back in lockstep.
    """
    if initial <= 0 or maximum < initial or factor < 1:
        raise ValueError("need 0 < initial <= maximum and factor >= 1")
    ceiling = initial
    while True:
        yield ceiling / 2 + rng() * ceiling / 2
        ceiling = min(maximum, ceiling * factor)


def is_retryable(exc: BaseException) -> bool:
    """Whether a failure to connect or stay connected is worth retrying.

    Network errors, timeouts, closed connections, protocol violations by the
    relay, 5xx/429 handshake answers and local store failures (a full disk: the
    changes stay in memory and are stored on a later try) are transient. A bad URL, a 4xx answer
    and a fatal refusal by the relay (:class:`~crdtsync.errors.SyncError`) are not.
    """
    if isinstance(exc, SyncError | InvalidURI):
        return False
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        return status >= 500 or status in (408, 429)
    return isinstance(
        exc,
        OSError | TimeoutError | ConnectionClosed | InvalidHandshake | ProtocolError | StoreError,
    )


class Connector:
    """Keeps one replica connected to a relay until :meth:`stop`.

    Created by :meth:`crdtsync.Replica.connect`. ``url`` is one relay's address
    or a list of relays sharing a store: after a failure the next attempt goes
    to the next address (in order, wrapping), after the usual backoff, or at
    once when the relay closed with 1012 (it restarts). Syncs every document the
    replica has open (and every document opened later): from :meth:`start` to
    :meth:`stop` it observes the replica's events (local changes are sent as
    soon as they are stored) and links its presence to the connection.
    """

    def __init__(
        self,
        replica: Replica,
        url: str | Sequence[str],
        *,
        token: Token = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        open_timeout: float | None = 10.0,
        delays: Callable[[], Iterator[float]] = backoff,
    ) -> None:
        self._urls = [url] if isinstance(url, str) else list(url)
        if not self._urls:
            raise ValueError("no relay URL")
        for each in self._urls:
            check_ws_url(each)  # ValueError (not ws/wss), RelayEndpointError (a /yjs/ path)
        self._next_url = 0  # index of the URL the next attempt uses
        self._replica = replica
        self._token = token
        self._session = ClientSession(
            replica,
            replica.replica_id,
            token=token if isinstance(token, str) else None,
            max_frame=max_frame,
        )
        self._attempted = asyncio.Event()  # the first connection attempt has an outcome
        self._refresh: asyncio.Task[None] | None = None
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._open_timeout = open_timeout
        self._delays = delays
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._wake = asyncio.Event()
        self._synced: dict[DocId, asyncio.Event] = {}
        self._status_changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._healthy = False  # the current connection reached SYNCED
        self._refused: RelayRefusedError | None = None
        self._stopping = False
        self._stopped = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._presence = PresenceLink(replica.presence, self.send_awareness)
        self._unobserve: list[Callable[[], None]] = []
        self.error: BaseException | None = None
        """The fatal error that stopped the connector, if any."""
        # Offline apps (crdtsync.offline): retries as sync_state shows them, uploads.
        self.retry = RetryState(lambda: self.url, replica._sync_state_changed)
        self._uploads = AttachmentUploader(
            replica, lambda: self.url, token, report=self.retry.note, cleared=self.retry.cleared
        )
        self.retry.also_wake(self._uploads.retry_now)

    # -- public -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The address of the relay in use (or tried next)."""
        return self._urls[self._next_url]

    @property
    def urls(self) -> list[str]:
        """Every relay address, in the order they are tried."""
        return list(self._urls)

    @property
    def status(self) -> SyncStatus:
        """The current :class:`SyncStatus`."""
        return self._session.status

    @property
    def session(self) -> ClientSession:
        """The sans-I/O session this connector drives."""
        return self._session

    @property
    def running(self) -> bool:
        """True until :meth:`stop`, or until a fatal error ended the connector."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start syncing the replica's open documents, connecting in the background
        (returns at once)."""
        if self._task is not None:
            return
        # Open documents, and every stored one with pending work or prefetched.
        for doc_id in self._replica._documents_to_sync():
            self.add_document(doc_id)
        self._unobserve = [
            self._replica.observe(self.on_replica_event),
            self._replica.observe(self._presence.on_event),
        ]
        self._presence.attach()
        self._task = self._loop.create_task(self._run(), name=f"crdtsync-sync {self.url}")
        self._replica._remember_relay(self.url, self._token)
        self._uploads.start()

    async def stop(self) -> None:
        """Close the connection (code 1000) and stop reconnecting."""
        task, self._task = self._task, None
        self._stopping = True
        for unobserve in self._unobserve:
            unobserve()
        self._unobserve = []
        await self._uploads.stop()
        await self._presence.detach()
        ws = self._ws
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(1000, "replica disconnected"), timeout=2)
            except TimeoutError:
                logger.warning("relay did not acknowledge the close in time")
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
        self._session.connection_lost()
        self._dispatch(self._session.events())
        self._stopped.set()
        self._wake_waiters()

    def cancel(self) -> None:
        """Stop without waiting (used when the replica is closed while connected)."""
        if self._task is not None:
            self._task.cancel()
        self._uploads.cancel()

    def on_replica_event(self, event: object) -> None:
        """Replica observer: send local changes as soon as they are stored."""
        if isinstance(event, LocalUpdate):
            self.local_update(event.doc_id, event.seq, event.update)
        elif isinstance(event, DocumentOpened | DocumentFetched):
            self.add_document(event.doc_id)

    def forget_document(self, doc_id: DocId) -> None:
        """Stop syncing ``doc_id`` (removed from the replica)."""
        self._session.remove_document(doc_id)
        self._synced.pop(doc_id, None)
        self._flush()

    def resync_document(self, doc_id: DocId) -> None:
        """Subscribe ``doc_id`` again, from its current (reset) state."""
        self._session.remove_document(doc_id)
        self._add_document(doc_id)

    def add_document(self, doc_id: DocId) -> None:
        """Sync ``doc_id`` too (called by the replica when a document is opened)."""
        self._call(self._add_document, doc_id)

    def _add_document(self, doc_id: DocId) -> None:
        self._synced.setdefault(doc_id, asyncio.Event())
        self._session.add_document(doc_id)
        self._flush()

    def local_update(self, doc_id: DocId, seq: int, update: bytes) -> None:
        """The replica stored local change ``seq``: send it (from any thread)."""
        self._call(self._local_update, doc_id, seq, update)

    def _local_update(self, doc_id: DocId, seq: int, update: bytes) -> None:
        self._session.local_update(doc_id, seq, update)
        self._flush()

    def send_awareness(self, doc_id: DocId, payload: bytes) -> None:
        """Send presence for ``doc_id`` if it is live on the current connection."""
        self._call(self._send_awareness, doc_id, payload)

    def _send_awareness(self, doc_id: DocId, payload: bytes) -> None:
        if self._session.send_awareness(doc_id, payload):
            self._flush()

    async def wait_synced(self, doc_id: DocId, timeout: float | None) -> None:
        """Wait until ``doc_id`` is caught up with the relay and nothing of it is
        pending. Raises ``TimeoutError`` after ``timeout`` seconds; if the
        connector stops first, the error that stopped it (a
        :class:`~crdtsync.errors.SyncError` for a disconnect or a refusal);
        :class:`~crdtsync.errors.AuthError` if the relay denies access to the
        document, or allows only reading while local changes are pending;
        :class:`~crdtsync.errors.TooManyDocumentsError` if it is beyond the relay's
        documents per connection (the message says how to raise the limit)."""
        self._add_document(doc_id)
        event = self._synced[doc_id]
        async with asyncio.timeout(timeout):
            while not self._session.is_synced(doc_id):
                self._raise_if_stopped()
                restriction = self._session.restriction(doc_id)
                if restriction is not None:
                    grants = "read-only" if restriction == ErrorCode.READ_ONLY else "no"
                    raise AuthError(
                        restriction,
                        f"the token grants {grants} access to {doc_id!r}; "
                        "local changes stay stored and pending",
                    )
                beyond = self._session.over_limit(doc_id)
                if beyond is not None:
                    raise TooManyDocumentsError(doc_id, beyond.limit, beyond.message)
                event.clear()
                await self._first(event)

    async def wait_first_attempt(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) for the first connection attempt to be
        welcomed or to fail; raise the error if the relay refused us for good
        (:class:`~crdtsync.errors.AuthError` for a token it rejects). Other failures
        are retried in the background and not raised."""
        try:
            async with asyncio.timeout(timeout):
                await self._first(self._attempted)
        except TimeoutError:
            return
        if self._stopped.is_set() and self.error is not None:
            raise self.error

    async def wait_status(self, status: SyncStatus, timeout: float | None = None) -> None:
        """Wait until :attr:`status` is ``status`` (``TimeoutError`` after ``timeout``;
        the stopping error if the connector stops first and ``status`` is not OFFLINE)."""
        async with asyncio.timeout(timeout):
            while self._session.status is not status:
                self._raise_if_stopped()
                self._status_changed.clear()
                await self._first(self._status_changed)

    def _raise_if_stopped(self) -> None:
        if self._stopped.is_set():
            raise self.error or SyncError(f"disconnected from {self.url}")

    async def _first(self, event: asyncio.Event) -> None:
        """Wait for ``event`` or for the connector to stop, whichever comes first."""
        waiters = {
            self._loop.create_task(event.wait()),
            self._loop.create_task(self._stopped.wait()),
        }
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    # -- the connection loop ------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._reconnect_forever()
        except Exception as exc:  # a bug must stop syncing visibly, not silently
            logger.exception("sync with %s stopped by an unexpected error", self.url)
            self.error = exc
        finally:
            self._stopped.set()
            self._wake_waiters()

    async def _reconnect_forever(self) -> None:
        delays = self._delays()
        skipped = False  # the last wait was skipped (a restarting relay): never twice in a row
        while True:
            self._healthy = False
            restarting = False
            try:
                await self._connect_once()
            except (
                OSError,
                TimeoutError,
                ConnectionClosed,
                InvalidHandshake,
                InvalidURI,
                ProtocolError,
                SyncError,
                StoreError,
            ) as exc:
                self._session.connection_lost()
                self._dispatch(self._session.events())
                if self._stopping:
                    return
                if not is_retryable(exc):
                    self.error = fatal_error(exc, self.url)
                    logger.error("sync with %s stopped: %s", self.url, self.error)
                    self.retry.stopped(self.error)
                    return
                self._attempted.set()
                self.retry.failed(exc)  # one WARNING when unreachable, not one per attempt
                restarting = _closed_for_restart(exc)
            if self._healthy:
                delays = self._delays()  # a connection that got in sync resets the backoff
            if len(self._urls) > 1:
                self._next_url = (self._next_url + 1) % len(self._urls)
                if restarting and not skipped:
                    # The relay restarts (1012): another relay serves the same store now.
                    logger.info("relay restarting; connecting to %s at once", self.url)
                    skipped = True
                    continue
            skipped = False
            delay = next(delays)
            logger.debug("reconnecting to %s in %.2f s", self.url, delay)
            await self.retry.wait(delay)  # retry_now() cuts it short

    async def _connect_once(self) -> None:
        """One connection, until it ends; always raises (ConnectionClosed when the
        relay closed it cleanly)."""
        self._refused = None
        self.retry.attempt()
        self._session.connecting()
        self._dispatch(self._session.events())
        if callable(self._token):
            try:
                self._session.token = await self._fresh_token()
            except TypeError as exc:
                raise SyncError(str(exc)) from exc
        async with websockets.connect(
            self.url,
            max_size=self._session.max_receive,
            ping_interval=self._ping_interval,
            ping_timeout=self._ping_timeout,
            open_timeout=self._open_timeout,
            # A peer that stopped answering pings will not answer a close either.
            close_timeout=min(self._ping_timeout or 10.0, 10.0),
            compression=None,
        ) as ws:
            logger.info("connected to %s", self.url)
            self._ws = ws
            writer = self._loop.create_task(self._write(ws))
            try:
                self._session.connected()
                self._flush()
                while True:
                    message = await ws.recv()  # raises ConnectionClosed when it ends
                    if isinstance(message, str):
                        raise ProtocolError("the relay sent a text message")
                    try:
                        self._session.receive(message)
                    except ProtocolError as exc:
                        if self._session.relay_id is None:  # not a native relay at all
                            raise endpoint_error(self.url, "does not speak it") from exc
                        raise
                    self._flush()
                    if self._refused is not None:
                        raise self._refused
                    if writer.done():
                        writer.result()  # raises the write error
            finally:
                self._ws = None
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
                self._session.connection_lost()
                self._session.relay_id = None
                self._dispatch(self._session.events())

    async def _write(self, ws: ClientConnection) -> None:
        """The connection's only writer: sends the session's frames in order."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            for frame in self._session.frames_to_send():
                await ws.send(frame)

    def _flush(self) -> None:
        """Dispatch the session's events and wake the writer."""
        self._dispatch(self._session.events())
        self._wake.set()

    def _dispatch(self, events: list[SessionEvent]) -> None:
        for event in events:
            if isinstance(event, DocumentSynced):
                flag = self._synced.setdefault(event.doc_id, asyncio.Event())
                if event.synced:
                    flag.set()
                else:
                    flag.clear()
                self._replica.events.emit(event)
            elif isinstance(event, StatusChanged):
                # INFO once connected; each retry's connecting/offline only at DEBUG.
                connected = event.status in (SyncStatus.SYNCING, SyncStatus.SYNCED)
                (logger.info if connected else logger.debug)("sync status: %s", event.status.value)
                if event.status in (SyncStatus.SYNCING, SyncStatus.SYNCED):
                    self._attempted.set()
                    self.retry.connected()
                self._healthy = self._healthy or event.status is SyncStatus.SYNCED
                self._status_changed.set()
                # The event carries the whole sync state (the replica builds it).
                replica = self._replica
                replica.events.emit(
                    event if replica.closed else replica._status_event(event.status)
                )
            elif isinstance(event, DocumentLive):
                self._replica.events.emit(event)
            elif isinstance(event, DocumentOverLimit):
                self._synced.setdefault(event.doc_id, asyncio.Event()).set()  # wake waiters
                self._replica.events.emit(event)
            elif isinstance(event, DocumentRestricted):
                logger.warning("relay restricts %r: %s", event.doc_id, event.message)
                self._synced.setdefault(event.doc_id, asyncio.Event()).set()  # wake waiters
                self._replica.events.emit(event)
            elif isinstance(event, RelayErrorReceived):
                self._replica.events.emit(event)
                code = event.error.code
                if event.error.fatal and code in _FATAL_CODES:
                    self._refused = RelayRefusedError(code, event.error.message)
                elif event.error.fatal and code in _AUTH_CODES:
                    renewable = code == ErrorCode.TOKEN_EXPIRED and callable(self._token)
                    if not (renewable and self._session.relay_id is not None):
                        self._refused = AuthError(code, event.error.message)
                elif code == ErrorCode.TOKEN_EXPIRED:
                    self._renew_token()
            elif isinstance(event, AwarenessReceived) and not self._replica.closed:
                replica = self._replica
                replica.presence.received(event.doc_id, event.payload, replica.open(event.doc_id))

    def _renew_token(self) -> None:
        """The relay says the token is about to expire: send a fresh one (AUTH)."""
        if not callable(self._token):
            logger.warning("the token expires soon and is a plain string; pass a callable")
            return
        if self._refresh is None or self._refresh.done():
            self._refresh = self._loop.create_task(self._send_fresh_token())

    async def _send_fresh_token(self) -> None:
        try:
            token = await self._fresh_token()
        except Exception:  # an app's token callable must not break syncing
            logger.exception("the token callable failed; the relay will close the connection")
            return
        if token is not None and self._session.send_auth(token):
            self._flush()
            logger.info("sent a fresh token to %s", self.url)

    async def _fresh_token(self) -> str | None:
        """The token for the next HELLO (or AUTH): the string, or the callable's answer."""
        return await token_value(self._token)

    def _wake_waiters(self) -> None:
        for event in self._synced.values():
            event.set()
        self._status_changed.set()

    def _call(self, function: Callable[..., None], *args: object) -> None:
        """Run ``function`` on the connector's loop, now if we are on its thread."""
        if threading.get_ident() == self._thread:
            function(*args)
        else:
            self._loop.call_soon_threadsafe(function, *args)


def _closed_for_restart(exc: BaseException) -> bool:
    """True if the relay closed the connection with 1012 (service restart)."""
    return (
        isinstance(exc, ConnectionClosed)
        and exc.rcvd is not None
        and exc.rcvd.code == CLOSE_SERVICE_RESTART
    )
