"""The relay's storage contract: a per-document append-only update log plus a
snapshot, behind a small async interface that every backend implements.

Backends: :class:`~relay.storage.sqlite.SQLiteStorage` (the default) and
:class:`~relay.storage.memory.MemoryStorage` (tests). A shared backend (Redis)
serving several relay processes also reports updates other processes appended,
through :meth:`RelayStorage.on_remote`; single-process backends never call it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from crdtsync.ids import DocId

__all__ = ["RelayStorage", "RemoteCallback", "StoredRoom", "StoredUpdate"]

RemoteCallback = Callable[[DocId, bytes], None]


@dataclass(frozen=True, slots=True)
class StoredUpdate:
    """One log entry: ``id`` increases in append order within one storage."""

    id: int
    update: bytes


@dataclass(frozen=True, slots=True)
class StoredRoom:
    """Everything stored for one document."""

    doc_id: DocId
    snapshot: bytes | None
    """The last compacted state (a Yjs v1 update); None if never compacted."""
    snapshot_upto: int
    """Id of the last log entry folded into the snapshot (0 if none)."""
    updates: list[StoredUpdate]
    """Log entries after the snapshot, in append order."""

    @property
    def log_bytes(self) -> int:
        """Total size of the log entries."""
        return sum(len(entry.update) for entry in self.updates)


@runtime_checkable
class RelayStorage(Protocol):
    """Async persistence of the relay. Every method may raise
    :class:`~crdtsync.errors.StoreError` (or a subclass)."""

    url: str
    durable: bool
    """True when data survives ``kill -9`` once :meth:`append` returned."""

    async def open(self) -> None:
        """Create or validate the storage; must be called first."""
        ...

    async def close(self) -> None:
        """Release everything; idempotent. Later calls raise ``StoreError``."""
        ...

    async def load(self, doc_id: DocId) -> StoredRoom:
        """Everything stored for ``doc_id`` (empty for an unknown document)."""
        ...

    async def append(self, batch: Sequence[tuple[DocId, bytes]]) -> list[int]:
        """Append ``batch`` in ONE commit, all or nothing; return the ids assigned in
        batch order. Durable (per :attr:`durable`) when it returns. On failure raises
        :class:`~crdtsync.errors.StoreWriteError` and nothing of the batch is stored."""
        ...

    async def compact(self, doc_id: DocId, snapshot: bytes, upto: int) -> None:
        """Atomically store ``snapshot`` for ``doc_id`` and delete its log entries with
        ``id <= upto`` (the caller verified the snapshot); later entries stay."""
        ...

    async def documents(self) -> list[DocId]:
        """Every document with stored content."""
        ...

    def on_remote(self, callback: RemoteCallback) -> None:
        """Call ``callback(doc_id, update)`` for updates another relay process
        appended to shared storage. Single-process backends never call it."""
        ...
