"""In-memory relay storage for tests and ephemeral relays (``memory://``)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

from crdtsync.errors import StoreError
from crdtsync.ids import DocId

from .base import RemoteCallback, StoredRoom, StoredUpdate

__all__ = ["MemoryData", "MemoryStorage"]

logger = logging.getLogger("relay.storage")


@dataclass
class MemoryData:
    """The content of a :class:`MemoryStorage`. Passing the same object to a new
    storage simulates a relay restart that keeps its data."""

    snapshots: dict[DocId, tuple[bytes, int]] = field(default_factory=dict)
    logs: dict[DocId, list[StoredUpdate]] = field(default_factory=dict)
    next_id: int = 1


class MemoryStorage:
    """Relay storage in dicts. Not durable; everything is lost with the process."""

    durable = False

    def __init__(self, data: MemoryData | None = None) -> None:
        self.url = "memory://"
        self.data = data if data is not None else MemoryData()
        self._state = "new"
        self._remote: list[RemoteCallback] = []

    def _check(self) -> None:
        if self._state != "open":
            raise StoreError(f"relay storage {self.url} is {self._state}, not open")

    async def open(self) -> None:
        if self._state == "closed":
            raise StoreError("relay storage is closed")
        self._state = "open"
        logger.info("relay storage %s opened", self.url)

    async def close(self) -> None:
        if self._state == "open":
            logger.info("relay storage %s closed", self.url)
        self._state = "closed"

    async def load(self, doc_id: DocId) -> StoredRoom:
        self._check()
        snapshot, upto = self.data.snapshots.get(doc_id, (None, 0))
        return StoredRoom(doc_id, snapshot, upto, list(self.data.logs.get(doc_id, [])))

    async def append(self, batch: Sequence[tuple[DocId, bytes]]) -> list[int]:
        self._check()
        ids = []
        for doc_id, update in batch:
            entry = StoredUpdate(self.data.next_id, bytes(update))
            self.data.logs.setdefault(doc_id, []).append(entry)
            ids.append(entry.id)
            self.data.next_id += 1
        return ids

    async def compact(self, doc_id: DocId, snapshot: bytes, upto: int) -> None:
        self._check()
        self.data.snapshots[doc_id] = (bytes(snapshot), upto)
        log = self.data.logs.get(doc_id, [])
        self.data.logs[doc_id] = [entry for entry in log if entry.id > upto]

    async def documents(self) -> list[DocId]:
        self._check()
        return sorted(set(self.data.logs) | set(self.data.snapshots))

    def on_remote(self, callback: RemoteCallback) -> None:
        self._remote.append(callback)

    def __del__(self) -> None:
        if getattr(self, "_state", "closed") == "open":
            warnings.warn("unclosed MemoryStorage", ResourceWarning, stacklevel=2)
