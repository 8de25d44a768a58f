"""The relay's listening socket: its open-file limit, and accept() failures.

- :func:`raise_open_file_limit`: at start the relay raises its soft limit of
  open files to the hard limit (each connection is one descriptor) and logs
  both figures.
- :func:`listen` makes the listening socket, a :class:`Listener`: when
  ``accept()`` fails for lack of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM),
  asyncio stops accepting for a second and tries again; the listener makes
  sure that happens once per failure (asyncio 3.11-3.13 otherwise retries up
  to 100 times in the same tick, each one scheduling another retry, and logs a
  traceback every time) and logs one line per interval with a count instead.
- :func:`quiet_accept_errors` keeps asyncio's own report of those failures
  (with its traceback) out of the log while the relay runs.
- :class:`FloodLog`: one log line per interval for events that come in floods.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["FloodLog", "Listener", "listen", "quiet_accept_errors", "raise_open_file_limit"]

logger = logging.getLogger("relay.listener")

RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
"""accept() failures after which asyncio pauses accepting (and so do we)."""
ACCEPT_PAUSE = 1.0
"""Seconds asyncio waits before accepting again after such a failure."""
_ASYNCIO_MESSAGE = "socket.accept() out of system resource"


class FloodLog:
    """Counts one kind of event and logs it at most once per ``interval`` seconds:
    ``message % (count, seconds, *args)``, with the count since the last line."""

    def __init__(
        self,
        log: Callable[..., None],
        message: str,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._message = message
        self._interval = interval
        self._clock = clock
        self._count = 0
        self._since = clock()
        self._last: float | None = None
        self._args: tuple[object, ...] = ()
        self.total = 0
        """Events counted since the start."""

    def __call__(self, *args: object) -> None:
        """One more event; log the tally if the interval has passed."""
        self._count += 1
        self.total += 1
        self._args = args
        self.tick()

    def tick(self) -> None:
        """Log what was counted if the interval has passed (call now and then, so
        the last events of a flood are reported too)."""
        now = self._clock()
        if self._count and (self._last is None or now - self._last >= self._interval):
            self._log(self._message, self._count, now - self._since, *self._args)
            self._count = 0
            self._since = self._last = now


def raise_open_file_limit() -> tuple[int, int] | None:
    """Raise this process's soft limit of open files to its hard limit; return
    ``(soft, hard)`` as they are now (None where there is no such limit)."""
    if sys.platform == "win32":  # pragma: no cover - no RLIMIT_NOFILE there
        return None
    import resource  # noqa: PLC0415 - POSIX only

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and (hard == resource.RLIM_INFINITY or soft < hard):
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
        else:
            logger.info("raised the open-file limit from %d to %d (the hard limit)", soft, target)
            soft = target
    else:
        logger.info("open-file limit: %d (the hard limit)", soft)
    return soft, hard


class Listener(socket.socket):
    """A listening socket whose ``accept()`` lets asyncio see each lack of
    resources once, then reports "nothing to accept" until asyncio's pause is
    over, and counts the failures in one log line per interval."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._paused_until = 0.0
        self.failures = FloodLog(
            logger.warning,
            "accept() failed for lack of resources %d time(s) in the last %.0f s (%s); "
            "accepting again in 1 s",
            interval=10.0,
        )

    def accept(self) -> tuple[socket.socket, Any]:
        if time.monotonic() < self._paused_until:
            raise BlockingIOError(errno.EAGAIN, "accepting is paused")
        try:
            return super().accept()
        except OSError as exc:
            if exc.errno not in RESOURCE_ERRORS:
                raise
            self._paused_until = time.monotonic() + ACCEPT_PAUSE / 2
            self.failures(exc.strerror or str(exc))
            raise  # asyncio stops accepting and tries again in ACCEPT_PAUSE


def listen(host: str, port: int, backlog: int = 1024) -> Listener:
    """A :class:`Listener` bound to ``host:port`` (the first address ``host``
    resolves to), listening. Raises ``OSError`` if it cannot bind."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = Listener(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, sock: Listener) -> Callable[[], None]:
    """Keep asyncio's report of ``sock``'s accept() failures (a traceback each)
    out of the log: the listener logs them, counted. Other reports go where
    they went before. Returns a function that restores the previous handler."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        reported = context.get("socket")
        if (
            context.get("message") == _ASYNCIO_MESSAGE
            and reported is not None
            and reported.fileno() == sock.fileno()
        ):
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)

    def restore() -> None:
        if loop.get_exception_handler() is handler:
            loop.set_exception_handler(previous)

    return restore
