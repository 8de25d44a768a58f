"""Presence (cursors, user names) of a replica's documents, with pycrdt's Awareness.

:meth:`crdtsync.Replica.awareness` returns a document's ``pycrdt.Awareness``.
Set the local state there (``set_local_state`` / ``set_local_state_field``);
remote clients' states appear in ``states`` and are reported to ``observe``
callbacks, with origin ``"remote"``. The y-protocols awareness update format is
what travels (in native AWARENESS frames), so Python replicas and Yjs clients
on the relay's ``/yjs`` path see each other. Presence is never stored.

This module is the offline half: the awareness objects, created on first use,
and what to do with updates received and connections lost. Exchanging them
with a relay (sending local changes, renewing the local state on a timer) is
:mod:`crdtsync.sync.presence`, attached while the replica is connected. No I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pycrdt

from .ids import DocId

__all__ = ["LOCAL", "REMOTE", "AwarenessBook"]

logger = logging.getLogger("crdtsync.awareness")

LOCAL = "local"
"""Origin of changes made by this replica."""
REMOTE = "remote"
"""Origin of changes received from the relay."""


class AwarenessBook:
    """The ``pycrdt.Awareness`` objects of one replica's documents.

    While connected, the sync layer sets :attr:`on_created` (to start each
    object's renewal timer) and :attr:`on_local_change` (to send the local
    state when it changes).
    """

    def __init__(self) -> None:
        self._awareness: dict[DocId, pycrdt.Awareness] = {}
        self._claimed: set[DocId] = set()
        self.on_created: Callable[[DocId, pycrdt.Awareness], None] | None = None
        """Called with every awareness object created from now on."""
        self.on_local_change: Callable[[DocId, bytes], None] | None = None
        """Called with the encoded update when this replica's state changes."""

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
            if self.on_created is not None:
                self.on_created(doc_id, awareness)
        if claim and doc_id not in self._claimed:
            self._claimed.add(doc_id)
            if awareness.get_local_state() is None:
                awareness.set_local_state({})
        return awareness

    def items(self) -> list[tuple[DocId, pycrdt.Awareness]]:
        """Every awareness object created so far."""
        return list(self._awareness.items())

    def received(self, doc_id: DocId, payload: bytes, doc: pycrdt.Doc[Any]) -> None:
        """An awareness update from the relay; a malformed one is logged and dropped."""
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

    def announce(self, doc_id: DocId) -> None:
        """Announce the local state of ``doc_id`` again, with a new clock, so that every
        client takes it even though the relay told them this client left when its
        last connection ended."""
        awareness = self._awareness.get(doc_id)
        if awareness is not None and awareness.get_local_state() is not None:
            awareness.set_local_state(awareness.get_local_state())

    def forget_remote(self, origin: str) -> None:
        """Drop every remote state (the connection that brought them is gone)."""
        for awareness in self._awareness.values():
            remote = [c for c in awareness.states if c != awareness.client_id]
            if remote:
                awareness.remove_awareness_states(remote, origin)

    def _changed(self, doc_id: DocId, topic: str, event: tuple[dict[str, Any], Any]) -> None:
        changes, origin = event
        if topic != "update" or origin != LOCAL or self.on_local_change is None:
            return
        awareness = self._awareness[doc_id]
        clients = [*changes["added"], *changes["updated"], *changes["removed"]]
        if awareness.client_id in clients:
            self.on_local_change(doc_id, awareness.encode_awareness_update([awareness.client_id]))
