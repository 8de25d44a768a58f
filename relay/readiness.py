"""Whether a relay takes work (``GET /readyz``), and the log line when that changes.

A relay is ready while it is started and not shutting down, its storage is
reachable (:attr:`relay.storage.RelayStorage.ready`: Redis answers its health
pings and the feed is subscribed) and the writer is not waiting for storage to
come back. A load balancer sends new clients only to ready relays; clients
already connected stay (their updates are kept and acknowledged once stored).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .persistence import Persistence

__all__ = ["Readiness"]

logger = logging.getLogger("relay.readiness")


class Readiness:
    """The readiness of one relay: :meth:`reason` says why it is not ready (None
    when it is); :meth:`watch` logs every change and wakes :meth:`wait`."""

    def __init__(
        self,
        relay_id: str,
        persistence: Persistence,
        stopping: Callable[[], bool],
        *,
        interval: float = 0.25,
    ) -> None:
        self.relay_id = relay_id
        self.persistence = persistence
        self.stopping = stopping
        self.interval = interval
        self.started = False
        self._changed = asyncio.Event()
        self._last: str | None = "starting"

    def reason(self) -> str | None:
        """Why the relay does not take work now, or None when it does."""
        if not self.started:
            return "not started"
        if self.stopping():
            return "shutting down"
        if not self.persistence.storage.ready:
            return "storage unreachable"
        if self.persistence.unavailable:
            return "storage writes failing (retrying)"
        return None

    @property
    def ready(self) -> bool:
        """True while the relay takes work."""
        return self.reason() is None

    async def watch(self) -> None:
        """Check every ``interval`` seconds until cancelled; log each change."""
        while True:
            self.check()
            await asyncio.sleep(self.interval)

    def check(self) -> None:
        """Look now; log and wake :meth:`wait` if it changed."""
        reason = self.reason()
        if reason == self._last:
            return
        if reason is None:
            logger.info("relay %s ready", self.relay_id)
        else:
            logger.warning("relay %s not ready: %s", self.relay_id, reason)
        self._last = reason
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, ready: bool = True) -> None:
        """Return once the relay is (or, with ``ready=False``, is not) ready, as
        :meth:`watch` sees it."""
        while (self._last is None) != ready:
            await self._changed.wait()
