"""How the connector reports its retries: what ``sync_state`` shows (attempts, the
next attempt, the last error as a :class:`~crdtsync.errors.CrdtsyncError`), a
backoff wait that ``retry_now()`` cuts short, and logs that say what happened
once: one WARNING when the relay becomes unreachable, one INFO when it is back,
not a line per attempt. Failures that retrying cannot fix become
:class:`~crdtsync.errors.SyncError` subclasses naming the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
from collections.abc import Callable

from websockets.exceptions import ConnectionClosed, InvalidStatus

from ..errors import CrdtsyncError, RelayEndpointError, RelayRefusedError, RelayUnreachableError

__all__ = ["RetryState", "check_ws_url", "describe", "endpoint_error", "fatal_error"]

logger = logging.getLogger("crdtsync.sync.client")


def check_ws_url(url: str) -> None:
    """``ValueError`` unless ``url`` is ``ws://host[:port][/path]`` or ``wss://...``;
    :class:`RelayEndpointError` for a y-websocket path (``/yjs/...``)."""
    if not isinstance(url, str):
        raise TypeError(f"the relay URL must be a str, not {type(url).__name__}")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(
            f"relay URL {url!r}: connect() needs ws://host:port or wss://host:port "
            "(http:// and https:// are for prefetch(url=...))"
        )
    if parts.path.startswith("/yjs/"):
        raise endpoint_error(url, "is the relay's y-websocket path for Yjs clients")


def endpoint_error(url: str, what: str) -> RelayEndpointError:
    """The URL leads somewhere that does not speak crdtsync's native protocol."""
    parts = urllib.parse.urlsplit(url)
    root = urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/", "", ""))
    return RelayEndpointError(
        f"{url} {what}, not crdtsync's native protocol: connect replicas to the relay's "
        f"root, {root}"
    )


def describe(exc: BaseException) -> str:
    """A failure in words, never ending in an empty reason."""
    if isinstance(exc, ConnectionClosed):
        frame = exc.rcvd
        if frame is not None:
            reason = f" {frame.reason}" if frame.reason else ""
            return f"closed by the relay (code {frame.code}{reason})"
        return "the connection closed without a close frame"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def fatal_error(exc: BaseException, url: str) -> BaseException:
    """The error ``connect()`` raises for a failure retrying cannot fix: an HTTP 404
    becomes :class:`RelayEndpointError`, another refused handshake
    :class:`RelayRefusedError`; errors already in the tree stay as they are."""
    if isinstance(exc, CrdtsyncError):
        return exc
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status == 404:
            return endpoint_error(url, "answered HTTP 404 (no websocket endpoint there)")
        body = bytes(exc.response.body).decode("utf-8", "replace").strip()
        return RelayRefusedError(f"http_{status}", body or f"HTTP {status}")
    return RelayRefusedError("connection_refused", describe(exc))


class RetryState:
    """The connector's retries, as :class:`crdtsync.state.RetryInfo` reports them.

    The connector calls :meth:`attempt` before each connection, :meth:`failed`
    when one fails, :meth:`connected` once welcomed, and :meth:`wait` for the
    backoff delay. ``notify()`` is called after every change (the replica's sync
    state then emits ``SyncStateChanged``).
    """

    def __init__(
        self,
        url: Callable[[], str],
        notify: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = url
        self.attempts = 0
        self.next_attempt_at: float | None = None
        self.last_error: Exception | None = None
        self._notify = notify
        self._clock = clock
        self._unreachable = False
        self._wake = asyncio.Event()
        self._also: list[Callable[[], None]] = []

    @property
    def url(self) -> str:
        """The relay being tried (the connector's current URL, after failovers)."""
        return self._url()

    def attempt(self) -> None:
        """A connection attempt starts."""
        self.attempts += 1
        self.next_attempt_at = None
        self._notify()

    def failed(self, exc: BaseException) -> None:
        """The attempt (or the connection) failed; it will be retried."""
        reason = describe(exc)
        error = RelayUnreachableError(f"relay {self.url} unreachable: {reason}")
        error.__cause__ = exc
        self.last_error = error
        if not self._unreachable:
            self._unreachable = True
            logger.warning(
                "relay %s unreachable (%s); retrying in the background", self.url, reason
            )
        else:
            logger.debug("attempt %d to reach %s failed: %s", self.attempts, self.url, reason)
        self._notify()

    def note(self, error: Exception) -> None:
        """Something else failed while connected (an attachment the relay refused)."""
        self.last_error = error
        self._notify()

    def cleared(self, error: Exception) -> None:
        """What :meth:`note` reported is over (the upload went through after all)."""
        if self.last_error is error:
            self.last_error = None
            self._notify()

    def stopped(self, error: BaseException) -> None:
        """Syncing stopped for good with ``error``."""
        self.last_error = error if isinstance(error, Exception) else None
        self.next_attempt_at = None
        self._notify()

    def connected(self) -> None:
        """The relay welcomed us: the retries are over."""
        if self._unreachable:
            logger.info("relay %s reachable again (after %d attempts)", self.url, self.attempts)
        self._unreachable = False
        self.attempts = 0
        self.next_attempt_at = None
        if isinstance(self.last_error, RelayUnreachableError):
            # Only the connection's own failure is over: a refusal noted meanwhile
            # (an attachment the relay refused) still stands.
            self.last_error = None
        self._notify()

    async def wait(self, delay: float) -> None:
        """Sleep ``delay`` seconds before the next attempt, or until :meth:`retry_now`."""
        self.next_attempt_at = self._clock() + delay
        self._wake.clear()
        self._notify()
        with contextlib.suppress(TimeoutError):  # the delay is over
            await asyncio.wait_for(self._wake.wait(), delay)
        self.next_attempt_at = None

    def retry_now(self) -> None:
        """Cut the current backoff wait short (and those of :meth:`also_wake`'s)."""
        self._wake.set()
        for wake in self._also:
            wake()

    def also_wake(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` on :meth:`retry_now` too (the attachment uploader's backoff)."""
        self._also.append(wake)
