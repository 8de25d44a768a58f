"""An in-memory store: the ``"memory"`` durability mode and a test double with real semantics.

Nothing survives the process. :class:`MemoryStore` can be "reopened" over the
same :class:`MemoryData` to model a restart that keeps the store.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import StoreError, StoreLockedError
from ..ids import DocId, ReplicaId
from .base import (
    EMPTY_SNAPSHOT,
    DocumentInfo,
    DocumentUsage,
    EntryKind,
    LogEntry,
    NewEntry,
    OutboxEntry,
    StoredDocument,
    check_carry,
    check_entries,
)

__all__ = ["MemoryData", "MemoryStore"]


@dataclass(slots=True)
class _MemoryDocument:
    client_id: int
    snapshot: bytes = EMPTY_SNAPSHOT
    snapshot_upto: int = 0
    acked_seq: int = 0
    last_seq: int = 0
    next_id: int = 1
    entries: list[LogEntry] = field(default_factory=list)
    rotate: bool = False
    opened_at: float | None = None
    fetched_at: float | None = None
    synced_at: float | None = None


@dataclass(slots=True)
class MemoryData:
    """The content of a :class:`MemoryStore`, kept apart so a store can be reopened."""

    replica_id: ReplicaId = field(default_factory=lambda: ReplicaId(uuid.uuid4().hex))
    documents: dict[DocId, _MemoryDocument] = field(default_factory=dict)
    in_use: bool = False
    crashed: bool = False
    meta: dict[str, str] = field(default_factory=dict)

    def crash(self) -> None:
        """Model a crash of the process using it: the store is released without
        closing, so the next :class:`MemoryStore` over this data opens unclean."""
        self.in_use = False
        self.crashed = True


class MemoryStore:
    """A :class:`~crdtsync.store.Store` kept in process memory."""

    def __init__(self, data: MemoryData | None = None) -> None:
        self.data = data if data is not None else MemoryData()
        if self.data.in_use:
            raise StoreLockedError("this in-memory store is already open")
        self.data.in_use = True
        self._closed = False
        self._unclean = self.data.crashed
        if self._unclean:
            for doc in self.data.documents.values():
                doc.rotate = True
        self.data.crashed = False

    def _doc(self, doc_id: DocId) -> _MemoryDocument:
        self._check_open()
        try:
            return self.data.documents[doc_id]
        except KeyError:
            raise KeyError(f"no document {doc_id!r} in the store") from None

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    @staticmethod
    def _info(doc_id: DocId, doc: _MemoryDocument) -> DocumentInfo:
        return DocumentInfo(doc_id, doc.client_id, doc.acked_seq, doc.last_seq, doc.rotate)

    def replica_id(self) -> ReplicaId:
        self._check_open()
        return self.data.replica_id

    def documents(self) -> list[DocId]:
        self._check_open()
        return sorted(self.data.documents)

    def document_info(self, doc_id: DocId) -> DocumentInfo | None:
        self._check_open()
        doc = self.data.documents.get(doc_id)
        return None if doc is None else self._info(doc_id, doc)

    def create_document(self, doc_id: DocId, client_id: int) -> DocumentInfo:
        self._check_open()
        if doc_id in self.data.documents:
            raise ValueError(f"document {doc_id!r} exists already")
        doc = self.data.documents[doc_id] = _MemoryDocument(client_id)
        return self._info(doc_id, doc)

    def load_document(self, doc_id: DocId) -> StoredDocument | None:
        self._check_open()
        doc = self.data.documents.get(doc_id)
        if doc is None:
            return None
        entries = [e for e in doc.entries if e.id > doc.snapshot_upto]
        return StoredDocument(self._info(doc_id, doc), doc.snapshot, doc.snapshot_upto, entries)

    @property
    def unclean(self) -> bool:
        return self._unclean  # only after MemoryData.crash(): nothing outlives the process

    def append(self, doc_id: DocId, entries: Sequence[NewEntry]) -> list[int]:
        doc = self._doc(doc_id)
        last_seq = check_entries(entries, doc.last_seq)
        ids = []
        for entry in entries:
            doc.entries.append(LogEntry(doc.next_id, entry.kind, entry.seq, bytes(entry.data)))
            ids.append(doc.next_id)
            doc.next_id += 1
        doc.last_seq = last_seq
        return ids

    def outbox(self, doc_id: DocId) -> list[OutboxEntry]:
        doc = self._doc(doc_id)
        return [
            OutboxEntry(e.seq, e.data)
            for e in doc.entries
            if e.kind is EntryKind.LOCAL and e.seq is not None and e.seq > doc.acked_seq
        ]

    def acknowledge(self, doc_id: DocId, seq: int) -> DocumentInfo:
        doc = self._doc(doc_id)
        if seq > doc.last_seq:
            raise ValueError(f"sequence number {seq} was never issued (last: {doc.last_seq})")
        if seq > doc.acked_seq:
            doc.acked_seq = seq
            doc.entries = [
                e
                for e in doc.entries
                if not (
                    e.kind is EntryKind.LOCAL
                    and e.id <= doc.snapshot_upto
                    and e.seq is not None
                    and e.seq <= seq
                )
            ]
        return self._info(doc_id, doc)

    def replace_snapshot(
        self,
        doc_id: DocId,
        snapshot: bytes,
        upto: int,
        drop: Sequence[int],
        carry: Sequence[NewEntry] = (),
    ) -> None:
        doc = self._doc(doc_id)
        check_carry(carry, doc.last_seq)
        if upto >= doc.next_id:
            raise ValueError(f"log id {upto} does not exist yet")
        dropped = set(drop)
        doc.snapshot = bytes(snapshot)
        doc.snapshot_upto = upto
        doc.entries = [e for e in doc.entries if e.id not in dropped]
        self.append(doc_id, carry)

    def remove_entries(self, doc_id: DocId, ids: Sequence[int]) -> None:
        doc = self._doc(doc_id)
        removed = set(ids)
        if any(e.kind is EntryKind.LOCAL for e in doc.entries if e.id in removed):
            raise ValueError("local entries cannot be removed")
        doc.entries = [e for e in doc.entries if e.id not in removed]

    def set_client_id(self, doc_id: DocId, client_id: int) -> DocumentInfo:
        doc = self._doc(doc_id)
        doc.client_id = client_id
        doc.rotate = False
        return self._info(doc_id, doc)

    def touch(
        self,
        doc_id: DocId,
        *,
        opened_at: float | None = None,
        fetched_at: float | None = None,
        synced_at: float | None = None,
    ) -> None:
        doc = self._doc(doc_id)
        doc.opened_at = doc.opened_at if opened_at is None else opened_at
        doc.fetched_at = doc.fetched_at if fetched_at is None else fetched_at
        doc.synced_at = doc.synced_at if synced_at is None else synced_at

    def usage(self) -> list[DocumentUsage]:
        self._check_open()
        return [
            DocumentUsage(
                doc_id,
                len(doc.snapshot) + sum(len(e.data) for e in doc.entries),
                doc.last_seq - doc.acked_seq,
                doc.opened_at,
                doc.fetched_at,
                doc.synced_at,
            )
            for doc_id, doc in sorted(self.data.documents.items())
        ]

    def remove_document(self, doc_id: DocId) -> None:
        self._check_open()
        self.data.documents.pop(doc_id, None)

    def reset_document(self, doc_id: DocId, snapshot: bytes, client_id: int) -> DocumentInfo:
        doc = self._doc(doc_id)
        doc.snapshot = bytes(snapshot)
        doc.snapshot_upto = doc.next_id - 1
        doc.entries = []
        doc.acked_seq = doc.last_seq
        doc.client_id = client_id
        doc.rotate = False
        return self._info(doc_id, doc)

    def meta_value(self, key: str) -> str | None:
        self._check_open()
        return self.data.meta.get(key)

    def set_meta_value(self, key: str, value: str) -> None:
        self._check_open()
        self.data.meta[key] = value

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.data.in_use = False
