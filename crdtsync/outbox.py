"""The outbox sent as few updates as fit a frame, in batches that never wait for
each other.

A replica's outbox is its unacknowledged local updates, one entry per
transaction, in order (:class:`~crdtsync.store.OutboxEntry`). When the diff
against what a relay lacks is too big for one frame, the sync session sends the
outbox instead, merged into :class:`PendingBatch` es: acknowledging a batch's
``last_seq`` acknowledges all of it. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import pycrdt

from .statevector import decode_state_vector
from .store.base import OutboxEntry
from .update import summarize_update

__all__ = ["MERGE_GROUP", "PendingBatch", "merge_outbox"]

MERGE_GROUP: Final = 1000
"""Most entries merged into one batch (``merge_updates`` is quadratic)."""


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """Consecutive outbox entries merged into one update, for sending.

    Acknowledging ``last_seq`` acknowledges the whole batch.
    """

    first_seq: int
    last_seq: int
    update: bytes

    @property
    def count(self) -> int:
        """How many outbox entries the batch holds."""
        return self.last_seq - self.first_seq + 1


def merge_outbox(
    entries: Iterable[OutboxEntry], max_bytes: int, state_vector: bytes | None = None
) -> list[PendingBatch]:
    """``entries`` merged into as few updates as fit ``max_bytes`` each.

    Consecutive entries are merged with ``pycrdt.merge_updates`` in groups of at
    most :data:`MERGE_GROUP`. An entry larger than ``max_bytes`` on its own forms
    its own batch.

    ``state_vector``: the state vector of the peer the batches are for. An entry
    that needs items the peer lacks and no earlier entry carries (another
    replica's changes the relay lost in a crash) then starts a new batch. A
    merged batch spans a stretch of time: a change another replica made within it
    can depend on the batch's start while the batch's end depends on that change,
    and a peer that applies an update only once all it needs is there (the relay
    and replicas do) would then wait for each of the two forever. Entries are
    single transactions, so such a dependency can only point back in time: with
    the rule above, no two batches can wait for each other.
    """
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    have = None if state_vector is None else decode_state_vector(state_vector)
    batches: list[PendingBatch] = []
    group: list[OutboxEntry] = []
    size = 0

    def flush_group() -> None:
        data = [entry.data for entry in group]
        update = data[0] if len(data) == 1 else pycrdt.merge_updates(*data)
        batches.append(PendingBatch(group[0].seq, group[-1].seq, update))

    for entry in entries:
        waits = False
        if have is not None:
            summary = summarize_update(entry.data)
            waits = bool(summary.missing(have))
            have = summary.reach(have)
        if group and (waits or size + len(entry.data) > max_bytes or len(group) >= MERGE_GROUP):
            flush_group()
            group, size = [], 0
        group.append(entry)
        size += len(entry.data)
    if group:
        flush_group()
    return batches
