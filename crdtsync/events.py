"""Events a :class:`crdtsync.Replica` reports to its observers.

Events are frozen dataclasses; an observer is a plain callable registered with
:meth:`crdtsync.Replica.observe`, called synchronously after the change it
reports is stored. An observer that raises is logged and does not affect the
replica or the other observers.

Like pycrdt's own observers, an event caused by an edit is delivered while
pycrdt is still committing that edit's transaction: the observer must not read
or change the document then (pycrdt raises "Already borrowed"). Update a
counter or a label, or schedule the work (``loop.call_soon``) instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from .ids import DocId

__all__ = ["PendingChanged", "ReplicaEvent"]


@dataclass(frozen=True, slots=True)
class PendingChanged:
    """A document's count of unacknowledged local updates changed.

    ``pending > 0``: "saved on this device, will upload"; ``pending == 0``:
    every local change was acknowledged by a relay ("uploaded").
    """

    doc_id: DocId
    pending: int


ReplicaEvent = PendingChanged
"""Every event type a replica reports (a union as more kinds are added)."""
