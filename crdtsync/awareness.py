"""Presence (cursors, user names) shared through the relay with pycrdt's Awareness.

:meth:`crdtsync.Replica.awareness` returns a document's ``pycrdt.Awareness``.
Set the local state there (``set_local_state`` / ``set_local_state_field``);
remote clients' states appear in ``states`` and are reported to ``observe``
callbacks, with origin ``"remote"``. The y-protocols awareness update format is
what travels (in native AWARENESS frames), so Python replicas and Yjs clients
on the relay's ``/yjs`` path see each other.

What this module adds to pycrdt's object: local changes are sent while the
document is live on a connection; the local state is announced again (with a
new clock) every time the document goes live, since the relay forgets a
client when its connection ends; remote states are dropped when the
connection is lost (the relay sends the current ones again on resubscribe);
and while connected, pycrdt's own timer renews the local state every 15 s and
drops remote states not renewed for 30 s. Presence is never stored.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import pycrdt

from .events import DocumentLive, ReplicaEvent, StatusChanged, SyncStatus
from .ids import DocId

if TYPE_CHECKING:
    from .client import Connector

__all__ = ["AwarenessLink"]

logger = logging.getLogger("crdtsync.awareness")

LOCAL = "local"
REMOTE = "remote"


class AwarenessLink:
    """The awareness objects of one replica and their link to its connector."""

    def __init__(self) -> None:
        self._awareness: dict[DocId, pycrdt.Awareness] = {}
        self._claimed: set[DocId] = set()
        self._connector: Connector | None = None
        self._timers: dict[DocId, asyncio.Task[None]] = {}

    def get(self, doc_id: DocId, doc: pycrdt.Doc[Any], *, claim: bool = True) -> pycrdt.Awareness:
        """The awareness of ``doc_id``, created on first use.

        ``claim``: the application asked for it. An awareness created only because
        remote states arrived has no local state (this replica is not announced)
        until the application first asks for it; then it starts as ``{}``, as
        pycrdt's does.
        """
        awareness = self._awareness.get(doc_id)
        if awareness is None:
            awareness = pycrdt.Awareness(doc)
            if not claim:
                awareness.set_local_state(None)
            self._awareness[doc_id] = awareness
            awareness.observe(lambda topic, event: self._changed(doc_id, topic, event))
            if self._connector is not None:
                self._start_timer(doc_id, awareness)
        if claim and doc_id not in self._claimed:
            self._claimed.add(doc_id)
            if awareness.get_local_state() is None:
                awareness.set_local_state({})
        return awareness

    # -- connector wiring ----------------------------------------------------------------

    def attach(self, connector: Connector) -> None:
        """Start exchanging presence through ``connector``."""
        self._connector = connector
        for doc_id, awareness in self._awareness.items():
            self._start_timer(doc_id, awareness)

    async def detach(self) -> None:
        """Stop: cancel the timers and forget remote states."""
        self._connector = None
        timers, self._timers = self._timers, {}
        for doc_id, task in timers.items():
            try:
                await self._awareness[doc_id].stop()
            except RuntimeError:  # its task did not get to start
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._forget_remote("disconnected")

    def received(self, doc_id: DocId, payload: bytes, doc: pycrdt.Doc[Any]) -> None:
        """An awareness update from the relay."""
        awareness = self.get(doc_id, doc, claim=False)
        try:
            awareness.apply_awareness_update(payload, REMOTE)
        except (ValueError, RuntimeError) as exc:  # pycrdt: JSON errors, "Y protocol error"
            logger.warning("dropped a malformed awareness update for %r: %s", doc_id, exc)
            return
        # Forget the clock of clients that left, as the relay does: a client that
        # comes back announces itself with the clock it left with (y-websocket
        # does), which pycrdt would otherwise ignore until its next renewal.
        meta = awareness.meta
        for client in [c for c in meta if c not in awareness.states and c != awareness.client_id]:
            del meta[client]

    def on_event(self, event: ReplicaEvent) -> None:
        """Replica events (registered with ``Replica.observe`` while connected)."""
        if isinstance(event, DocumentLive):
            awareness = self._awareness.get(event.doc_id)
            if awareness is not None and awareness.get_local_state() is not None:
                # A new clock, so that every client takes it even though the relay
                # told them this client left when the last connection ended.
                awareness.set_local_state(awareness.get_local_state())
        elif isinstance(event, StatusChanged) and event.status in (
            SyncStatus.OFFLINE,
            SyncStatus.CONNECTING,
        ):
            self._forget_remote("connection lost")

    # -- internals ---------------------------------------------------------------------------

    def _changed(self, doc_id: DocId, topic: str, event: tuple[dict[str, Any], Any]) -> None:
        changes, origin = event
        if topic != "update" or origin != LOCAL or self._connector is None:
            return
        awareness = self._awareness[doc_id]
        clients = [*changes["added"], *changes["updated"], *changes["removed"]]
        if awareness.client_id in clients:
            payload = awareness.encode_awareness_update([awareness.client_id])
            self._connector.send_awareness(doc_id, payload)

    def _forget_remote(self, origin: str) -> None:
        for awareness in self._awareness.values():
            remote = [c for c in awareness.states if c != awareness.client_id]
            if remote:
                awareness.remove_awareness_states(remote, origin)

    def _start_timer(self, doc_id: DocId, awareness: pycrdt.Awareness) -> None:
        if doc_id in self._timers:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # attach() starts it from the connector's loop
        self._timers[doc_id] = loop.create_task(awareness.start(), name=f"awareness {doc_id}")
