"""The contract between a replica and the sync package, and the replica's
network-facing methods.

A :class:`~crdtsync.Replica` works with no network at all and imports nothing
network-related. :meth:`Connectable.connect` asks the factory registered with
:func:`register_sync` for a :class:`SyncLink` and delegates ``status``,
``wait_synced`` and ``disconnect`` to it. The ``crdtsync`` package registers
:class:`crdtsync.sync.client.Connector`, imported (with ``websockets``) only
when an app first connects.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

import pycrdt

from .errors import SyncError
from .events import SyncStatus
from .ids import DocId, check_doc_id

__all__ = ["Connectable", "LinkFactory", "SyncLink", "Token", "register_sync"]

logger = logging.getLogger("crdtsync.link")

Token: TypeAlias = str | Callable[[], str | Awaitable[str]] | None
"""A token for the relay: a string, or a callable (plain or async) returning a
fresh one, called before every connection and when the relay says the current
one is about to expire."""


class SyncLink(Protocol):
    """A replica's connection to a relay, as :meth:`Replica.connect` makes it
    (:class:`crdtsync.sync.client.Connector` is the one the package registers)."""

    @property
    def url(self) -> str:
        """The address of the relay in use (or tried next)."""
        ...

    @property
    def urls(self) -> list[str]:
        """Every relay address, in the order they are tried."""
        ...

    @property
    def running(self) -> bool:
        """True until stopped, or until a fatal error ended it."""
        ...

    @property
    def status(self) -> SyncStatus:
        """The current sync status."""
        ...

    def start(self) -> None:
        """Start connecting in the background."""
        ...

    async def wait_first_attempt(self, timeout: float) -> None:
        """Wait for the first attempt's outcome; raise a fatal refusal."""
        ...

    async def stop(self) -> None:
        """Close the connection and stop reconnecting."""
        ...

    def cancel(self) -> None:
        """Stop without waiting."""
        ...

    async def wait_synced(self, doc_id: DocId, timeout: float | None) -> None:
        """Wait until ``doc_id`` is caught up and has nothing pending."""
        ...

    async def wait_status(self, status: SyncStatus, timeout: float | None = None) -> None:
        """Wait until the status is ``status``."""
        ...


LinkFactory = Callable[..., SyncLink]
"""``factory(replica, urls, *, token=..., **options)`` makes a :class:`SyncLink`
(``urls``: a non-empty list of relay addresses)."""


@dataclass(slots=True)
class _Registry:
    link_factory: LinkFactory | None = None


_SYNC = _Registry()


def register_sync(factory: LinkFactory) -> None:
    """Tell :meth:`Replica.connect` how to make a connection. The ``crdtsync``
    package registers :mod:`crdtsync.sync`'s connector when it is imported (the
    sync package itself, and ``websockets``, load only on the first connect)."""
    _SYNC.link_factory = factory


class Connectable:
    """The network-facing methods of :class:`~crdtsync.Replica` (a base class of
    it): they delegate to the :class:`SyncLink` made by the registered factory."""

    _link: SyncLink | None = None
    _failed_link: SyncLink | None = None
    """The link whose first attempt failed for good in :meth:`connect` (its error
    stays in ``sync_state.last_error`` until the next ``connect``)."""

    def _check_open(self) -> None:  # pragma: no cover - Replica's
        raise NotImplementedError

    def open(self, doc_id: str) -> pycrdt.Doc[Any]:  # pragma: no cover - Replica's
        """Open a document (see :meth:`crdtsync.Replica.open`)."""
        raise NotImplementedError

    async def connect(
        self,
        url: str | Sequence[str],
        *,
        token: Token = None,
        max_frame: int | None = None,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        first_attempt_timeout: float = 2.0,
    ) -> None:
        """Start syncing every open document (and every one opened later) with the
        relay at ``url`` (``ws://host:port`` or ``wss://...``), or with one of the
        relays of a list (``["ws://relay-a:8765", "ws://relay-b:8765"]``: relays
        sharing one store, see the README's "Running several relays on Redis").

        The connection is made, and remade after any failure with capped
        exponential backoff, in the background until :meth:`disconnect`. With a
        list, each attempt after a failure goes to the next relay (in order,
        wrapping), after the same backoff; a relay that closes the connection
        because it restarts (close code 1012) is left for the next one at once.
        :attr:`status` and :meth:`wait_synced` work the same either way. Watch
        :attr:`status`, or await :meth:`wait_synced`. Half-open connections are
        detected with websocket pings every ``ping_interval`` seconds.
        ``max_frame``: the largest frame sent (default: the protocol's, lowered to
        the relay's limit when it says so).

        ``token``: the relay's access token, or a callable (plain or async)
        returning a fresh one; it is called before each connection and when the
        relay warns that the current token expires (the new one is sent on the
        open connection; nothing pending is lost).

        Waits up to ``first_attempt_timeout`` seconds for the first attempt, so a
        relay that refuses the token makes this raise
        :class:`~crdtsync.errors.AuthError` (fatal: no retry loop). Offline or
        slow networks do not raise: syncing carries on in the background.
        Raises ``RuntimeError`` if already connected, ``ValueError`` for an empty
        list of URLs.
        """
        self._check_open()
        urls = [url] if isinstance(url, str) else list(url)
        if not urls or not all(isinstance(one, str) and one for one in urls):
            raise ValueError(f"connect() needs a relay URL or a non-empty list of them: {url!r}")
        if self._link is not None and self._link.running:
            raise RuntimeError(f"already connected to {self._link.url}")
        factory = _SYNC.link_factory
        if factory is None:
            raise RuntimeError("no sync package registered (import crdtsync, not its submodules)")
        options: dict[str, Any] = {
            "token": token,
            "ping_interval": ping_interval,
            "ping_timeout": ping_timeout,
        }
        if max_frame is not None:
            options["max_frame"] = max_frame
        link = factory(self, urls, **options)
        self._link, self._failed_link = link, None
        link.start()
        try:
            await link.wait_first_attempt(first_attempt_timeout)
        except SyncError:
            await self.disconnect()
            self._failed_link = link
            raise

    async def disconnect(self) -> None:
        """Close the connection to the relay and stop reconnecting. Unacknowledged
        changes stay in the outbox for the next :meth:`connect`. Harmless if not
        connected."""
        link, self._link = self._link, None
        if link is not None:
            await link.stop()

    async def wait_synced(self, doc_id: str, timeout: float | None = None) -> None:
        """Wait until ``doc_id`` has nothing pending and is caught up with the relay.

        Opens the document if it is not open. Raises ``TimeoutError`` after
        ``timeout`` seconds, ``RuntimeError`` if not connected, or the
        :class:`~crdtsync.errors.SyncError` that stopped syncing for good.
        """
        key = check_doc_id(doc_id)
        self.open(key)
        if self._link is None:
            raise RuntimeError("not connected: call connect() first")
        await self._link.wait_synced(key, timeout)

    @property
    def status(self) -> SyncStatus:
        """The sync status: OFFLINE, CONNECTING, SYNCING or SYNCED."""
        if self._link is None:
            return SyncStatus.OFFLINE
        return self._link.status

    @property
    def connector(self) -> SyncLink | None:
        """The connection to the relay (None when not connected)."""
        return self._link
