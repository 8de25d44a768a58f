"""Relay storage in dicts (``memory://``): for tests and throwaway relays.

Same semantics as the SQLite backend, ids included, except that nothing survives
the process (``durable`` is False).

Restarts in tests: the content lives in a :class:`MemoryData` object, apart from
the storage. Closing a storage and opening a new one on the same object models a
relay restart that keeps its data::

    data = MemoryData()
    async with MemoryStorage(data) as storage:
        await storage.append([(DocId("d"), b"...")])
    async with MemoryStorage(data) as storage:   # "after the restart"
        room = await storage.load(DocId("d"))     # still there

Every call completes before it returns, so closing is also what a crash looks
like. As with a file, only one open storage may use a :class:`MemoryData` at a
time (:class:`~crdtsync.errors.StoreLockedError` otherwise): a "restarted" relay
must not share its data with the one it replaced. Setting
:attr:`MemoryData.disk_full` makes writes fail as on a full disk.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from crdtsync.errors import StoreError, StoreLockedError, StoreWriteError
from crdtsync.ids import DocId, check_doc_id

from .base import (
    Claim,
    RemoteCallback,
    SingleProcess,
    StorageContext,
    StoredRoom,
    StoredUpdate,
    check_batch,
    check_claims,
    check_compact,
    stale_compaction,
)

__all__ = ["MemoryData", "MemoryStorage"]

logger = logging.getLogger("relay.storage")

_State = Literal["new", "open", "closed"]


@dataclass(eq=False)
class MemoryData:
    """The content of a :class:`MemoryStorage`, kept apart from it so that a test can
    "restart" the relay by opening a new storage on the same object."""

    snapshots: dict[DocId, tuple[bytes, int]] = field(default_factory=dict)
    """Per document: ``(snapshot, snapshot_upto)``."""
    logs: dict[DocId, list[StoredUpdate]] = field(default_factory=dict)
    """Per document: the log entries after its snapshot, in append order."""
    last_id: int = 0
    """The last id assigned; ids are never reused."""
    claims: dict[DocId, dict[int, str]] = field(default_factory=dict)
    """Per document: client id -> owner (authorship)."""
    disk_full: bool = False
    """While True, :meth:`~MemoryStorage.append` and :meth:`~MemoryStorage.compact`
    raise :class:`~crdtsync.errors.StoreWriteError` and change nothing."""
    in_use: bool = False
    """True while a storage has this data open."""


class MemoryStorage(SingleProcess, StorageContext):
    """A :class:`~relay.storage.RelayStorage` in memory. Not durable.

    ``data`` is the content to use (a new, empty :class:`MemoryData` if omitted);
    see the module docstring for restarts. Use ``async with`` or call
    :meth:`open` and :meth:`close`; an opened storage that is never closed warns
    with :class:`ResourceWarning` when garbage-collected.
    """

    durable = False
    """Memory storage loses everything with the process."""

    def __init__(self, data: MemoryData | None = None) -> None:
        self.url = "memory://"
        self.data = data if data is not None else MemoryData()
        self._state: _State = "new"
        self._callbacks: list[RemoteCallback] = []

    def _check_open(self) -> None:
        if self._state != "open":
            raise StoreError(
                f"relay storage {self.url} is closed"
                if self._state == "closed"
                else f"relay storage {self.url} is not open: call open() first"
            )

    # -- life cycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Take the data for this storage. Does nothing if already open.

        Raises :class:`~crdtsync.errors.StoreLockedError` if another open storage
        uses the same :class:`MemoryData`, and ``StoreError`` after :meth:`close`.
        """
        if self._state == "open":
            return
        if self._state == "closed":
            raise StoreError(f"relay storage {self.url} is closed")
        if self.data.in_use:
            raise StoreLockedError(
                f"relay storage {self.url}: this MemoryData is in use by another storage"
            )
        self.data.in_use = True
        self._state = "open"
        logger.info(
            "relay storage %s opened (%d documents, last id %d)",
            self.url,
            len(self.data.logs.keys() | self.data.snapshots.keys()),
            self.data.last_id,
        )

    async def close(self) -> None:
        """Release the data (it stays in the :class:`MemoryData`). Idempotent; every
        later call raises ``StoreError``."""
        if self._state == "open":
            self.data.in_use = False
            logger.info("relay storage %s closed", self.url)
        self._state = "closed"

    def __del__(self) -> None:
        if getattr(self, "_state", "closed") == "open":
            warnings.warn(f"unclosed relay storage {self.url}", ResourceWarning, stacklevel=2)
            self._state = "closed"
            self.data.in_use = False

    # -- reads ----------------------------------------------------------------------------

    async def load(self, doc_id: DocId, *, follow: bool = False) -> StoredRoom:
        """Everything stored for ``doc_id``; an empty room for an unknown document."""
        self._check_open()
        check_doc_id(doc_id)
        snapshot, upto = self.data.snapshots.get(doc_id, (None, 0))
        return StoredRoom(
            doc_id,
            snapshot,
            upto,
            list(self.data.logs.get(doc_id, ())),
            dict(self.data.claims.get(doc_id, {})),
        )

    async def documents(self) -> list[DocId]:
        """Every document with a log entry or a snapshot, sorted."""
        self._check_open()
        return sorted(self.data.logs.keys() | self.data.snapshots.keys())

    # -- writes ---------------------------------------------------------------------------

    def _check_disk_space(self, action: str) -> None:
        """Fail the write as a full disk would, when the test data says it is full."""
        if self.data.disk_full:
            logger.warning("relay storage %s: %s failed: disk full (simulated)", self.url, action)
            raise StoreWriteError(f"relay storage {self.url}: {action} failed: disk full")

    async def append(
        self, batch: Sequence[tuple[DocId, bytes]], claims: Sequence[Claim] = ()
    ) -> list[int]:
        """Append ``batch`` (and ``claims``) all at once and return the ids assigned,
        in batch order.

        See :meth:`relay.storage.RelayStorage.append`.
        """
        self._check_open()
        checked = check_batch(batch)
        owners = check_claims(claims)
        if not checked and not owners:
            return []
        self._check_disk_space(f"storing {len(checked)} update(s)")
        data = self.data
        for doc_id, client, owner in owners:
            data.claims.setdefault(doc_id, {}).setdefault(client, owner)
        first = data.last_id + 1
        for entry_id, (doc_id, update) in enumerate(checked, first):
            data.logs.setdefault(doc_id, []).append(StoredUpdate(entry_id, update))
        data.last_id += len(checked)
        return list(range(first, data.last_id + 1))

    async def compact(self, doc_id: DocId, snapshot: bytes, upto: int) -> None:
        """Store ``snapshot`` and drop the log entries of ``doc_id`` up to ``upto``.

        See :meth:`relay.storage.RelayStorage.compact`.
        """
        self._check_open()
        doc_id, snapshot, upto = check_compact(doc_id, snapshot, upto)
        data = self.data
        current = data.snapshots.get(doc_id, (None, 0))[1]
        problem = stale_compaction(doc_id, upto, current, data.last_id)
        if problem is not None:
            raise ValueError(problem)
        self._check_disk_space(f"compacting {doc_id!r}")
        data.snapshots[doc_id] = (snapshot, upto)
        kept = [entry for entry in data.logs.pop(doc_id, ()) if entry.id > upto]
        if kept:
            data.logs[doc_id] = kept
