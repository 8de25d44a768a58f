"""Presence through the relay: the connected half of :mod:`crdtsync.awareness`.

While a replica is connected, a :class:`PresenceLink` sends its local
awareness changes while the document is live on the connection, announces the
local state again (with a new clock) every time the document goes live, since
the relay forgets a client when its connection ends; drops remote states when
the connection is lost (the relay sends the current ones again on
resubscribe); and runs pycrdt's own timer, which renews the local state every
15 s and drops remote states not renewed for 30 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pycrdt

from ..awareness import AwarenessBook
from ..events import DocumentLive, ReplicaEvent, StatusChanged, SyncStatus
from ..ids import DocId

__all__ = ["PresenceLink"]


class PresenceLink:
    """Links a replica's :class:`~crdtsync.awareness.AwarenessBook` to a connection.

    ``send(doc_id, payload)`` sends a local awareness update (the connector drops
    it unless the document is live).
    """

    def __init__(self, book: AwarenessBook, send: Callable[[DocId, bytes], None]) -> None:
        self._book = book
        self._send = send
        self._timers: dict[DocId, asyncio.Task[None]] = {}

    def attach(self) -> None:
        """Start exchanging presence (on the running event loop)."""
        self._book.on_created = self._start_timer
        self._book.on_local_change = self._send
        for doc_id, awareness in self._book.items():
            self._start_timer(doc_id, awareness)

    async def detach(self) -> None:
        """Stop: cancel the timers and forget remote states."""
        self._book.on_created = None
        self._book.on_local_change = None
        timers, self._timers = self._timers, {}
        awareness = dict(self._book.items())
        for doc_id, task in timers.items():
            try:
                await awareness[doc_id].stop()
            except RuntimeError:  # its task did not get to start
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._book.forget_remote("disconnected")

    def on_event(self, event: ReplicaEvent) -> None:
        """Replica events, while connected."""
        if isinstance(event, DocumentLive):
            self._book.announce(event.doc_id)
        elif isinstance(event, StatusChanged) and event.status in (
            SyncStatus.OFFLINE,
            SyncStatus.CONNECTING,
        ):
            self._book.forget_remote("connection lost")

    def _start_timer(self, doc_id: DocId, awareness: pycrdt.Awareness) -> None:
        if doc_id in self._timers:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # attach() starts it from the connector's loop
        self._timers[doc_id] = loop.create_task(awareness.start(), name=f"awareness {doc_id}")
