"""The contract every local store implements.

A store keeps, per document: a compacted *snapshot* (an encoded pycrdt state),
an append-only *log* of updates recorded since (local and remote), and the
*outbox* bookkeeping: local updates carry a per-document sequence number, and
the highest sequence number a relay acknowledged is kept with the document.
The snapshot records the highest log id it contains (``snapshot_upto``): a
document is rebuilt from the snapshot and the entries after it. Entries at or
below it stay only while they are still in the outbox.
The replica-wide *replica id* is created on first open and never changes.

Order of calls, as :class:`crdtsync.Replica` makes them::

    store.replica_id()
    store.create_document(doc_id, client_id)      # once per document
    store.load_document(doc_id)                   # snapshot + log, to rebuild a Doc
    store.append(doc_id, entries)                 # atomically, before the edit returns
    store.acknowledge(doc_id, seq)
    store.replace_snapshot(doc_id, snapshot, upto, drop, carry)   # compaction
    store.remove_entries(doc_id, ids)             # a received update found unusable
    store.set_client_id(doc_id, client_id)        # when info.rotate (after an unclean shutdown)
    store.touch(doc_id, opened_at=..., ...)       # cache bookkeeping (offline apps)
    store.usage(); store.remove_document(doc_id); store.reset_document(doc_id, ...)
    store.close()

Stores never interpret update bytes: CRDT logic lives in the replica. Every
method either completes fully or changes nothing (one transaction), and raises
only :class:`crdtsync.errors.StoreError` subclasses for storage failures.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..ids import DocId, ReplicaId

__all__ = [
    "EMPTY_SNAPSHOT",
    "DocumentInfo",
    "DocumentUsage",
    "EntryKind",
    "LogEntry",
    "NewEntry",
    "OutboxEntry",
    "Store",
    "StoredDocument",
    "check_carry",
    "check_entries",
]

EMPTY_SNAPSHOT = b"\x00\x00"
"""The encoded state of an empty document (no structs, empty delete set)."""


class EntryKind(enum.IntEnum):
    """What a log entry holds."""

    LOCAL = 0
    """A change made on this replica; also an outbox entry until acknowledged."""
    REMOTE = 1
    """A change received from elsewhere, as far as the document integrated it."""
    PENDING = 2
    """A received update whose dependencies had not arrived yet (kept verbatim)."""


@dataclass(frozen=True, slots=True)
class NewEntry:
    """A log entry to append. ``seq`` is set for :attr:`EntryKind.LOCAL` only."""

    kind: EntryKind
    data: bytes
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class LogEntry:
    """A stored log entry. ``id`` orders entries within their document."""

    id: int
    kind: EntryKind
    seq: int | None
    data: bytes


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A local update not yet acknowledged by a relay."""

    seq: int
    data: bytes


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """A document's bookkeeping, without its content."""

    doc_id: DocId
    client_id: int
    acked_seq: int
    last_seq: int
    """The highest outbox sequence number ever issued for this document (0: none)."""
    rotate: bool = False
    """The document must write under a new client id before its next change: the
    store was not closed cleanly since it last wrote (see :attr:`Store.unclean`).
    Set for every document at once; :meth:`Store.set_client_id` clears it."""

    @property
    def pending(self) -> int:
        """Local updates not yet acknowledged."""
        return self.last_seq - self.acked_seq


@dataclass(frozen=True, slots=True)
class DocumentUsage:
    """A document's footprint and cache bookkeeping (times: seconds since the epoch)."""

    doc_id: DocId
    bytes: int
    """Stored bytes: the snapshot and the log."""
    pending: int
    """Local updates not yet acknowledged."""
    opened_at: float | None
    """When it was last opened (None: never, since it was created or fetched)."""
    fetched_at: float | None
    """When its data last came from a relay."""
    synced_at: float | None
    """When every local change of it was last acknowledged."""

    @property
    def last_used(self) -> float | None:
        """The later of :attr:`opened_at` and :attr:`fetched_at`."""
        times = [t for t in (self.opened_at, self.fetched_at) if t is not None]
        return max(times) if times else None


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """Everything needed to rebuild a document: the snapshot, then ``entries`` in order.

    ``entries`` are the log entries after the snapshot (``id > snapshot_upto``).
    """

    info: DocumentInfo
    snapshot: bytes
    snapshot_upto: int
    entries: list[LogEntry]


def check_entries(entries: Sequence[NewEntry], last_seq: int) -> int:
    """Validate entries to append after ``last_seq``; return the new last sequence number.

    Local entries need increasing sequence numbers above ``last_seq``; other
    entries carry none. Raises ``ValueError``. Shared by every store, so that
    they all refuse the same things, before changing anything.
    """
    for entry in entries:
        if entry.kind is EntryKind.LOCAL:
            if entry.seq is None or entry.seq <= last_seq:
                raise ValueError(f"local entry needs a sequence number above {last_seq}")
            last_seq = entry.seq
        elif entry.seq is not None:
            raise ValueError("only local entries carry a sequence number")
    return last_seq


def check_carry(carry: Sequence[NewEntry], last_seq: int) -> None:
    """Validate the entries compaction carries past its snapshot (received updates
    still held): never local ones. Raises ``ValueError``."""
    if any(entry.kind is EntryKind.LOCAL for entry in carry):
        raise ValueError("local entries cannot be carried")
    check_entries(carry, last_seq)


@runtime_checkable
class Store(Protocol):
    """Local persistence for one replica. See the module docstring for the call order."""

    def replica_id(self) -> ReplicaId:
        """The replica's stable id, created when the store was first created."""
        ...

    @property
    def unclean(self) -> bool:
        """True if writes this store reported durable may have been lost since.

        That is the case after a power loss or OS crash in ``"normal"``
        durability (the WAL is not fsync'd at every commit). A replica must not
        then reuse its client ids: a change it sent could be gone from the store
        while peers keep it, and a new change would reuse its clock.
        """
        ...

    def documents(self) -> list[DocId]:
        """Ids of every document in the store, sorted."""
        ...

    def document_info(self, doc_id: DocId) -> DocumentInfo | None:
        """The document's bookkeeping, or None if the store has no such document."""
        ...

    def create_document(self, doc_id: DocId, client_id: int) -> DocumentInfo:
        """Create an empty document that writes under ``client_id``.

        Raises ``ValueError`` if the document exists already.
        """
        ...

    def load_document(self, doc_id: DocId) -> StoredDocument | None:
        """The snapshot and the log entries after it (ordered by id), or None.

        Raises :class:`~crdtsync.errors.StoreCorruptError` on a checksum mismatch.
        """
        ...

    def append(self, doc_id: DocId, entries: Sequence[NewEntry]) -> list[int]:
        """Durably append ``entries`` in one transaction; return their ids.

        Local entries must carry increasing sequence numbers above the document's
        ``last_seq``. When this returns, the entries survive a process crash
        (and, in ``"full"`` durability, a power loss).
        Raises :class:`~crdtsync.errors.StoreWriteError` if nothing could be written.
        """
        ...

    def outbox(self, doc_id: DocId) -> list[OutboxEntry]:
        """Local entries with a sequence number above ``acked_seq``, in order."""
        ...

    def acknowledge(self, doc_id: DocId, seq: int) -> DocumentInfo:
        """Record that a relay durably stored every local update up to ``seq``.

        Those entries leave the outbox; the ones a snapshot already holds are
        deleted. Acknowledging a lower ``seq`` than already acknowledged changes
        nothing. Raises ``ValueError`` if ``seq`` was never issued.
        """
        ...

    def remove_entries(self, doc_id: DocId, ids: Sequence[int]) -> None:
        """Delete the received (non-local) entries ``ids``; local entries are refused."""
        ...

    def set_client_id(self, doc_id: DocId, client_id: int) -> DocumentInfo:
        """Make the document write under a new client id from now on (clears
        :attr:`DocumentInfo.rotate`)."""
        ...

    # -- cache bookkeeping (offline apps; schema version 2 of the SQLite store) ----------

    def touch(
        self,
        doc_id: DocId,
        *,
        opened_at: float | None = None,
        fetched_at: float | None = None,
        synced_at: float | None = None,
    ) -> None:
        """Record when the document was opened, fetched or fully acknowledged (the
        times given; None leaves a time as it is). ``KeyError`` for an unknown one."""
        ...

    def usage(self) -> list[DocumentUsage]:
        """Every document's footprint and bookkeeping, sorted by id."""
        ...

    def remove_document(self, doc_id: DocId) -> None:
        """Delete the document, its log and its outbox, in one transaction
        (unknown ids are ignored). The caller checks that nothing pending is lost."""
        ...

    def reset_document(self, doc_id: DocId, snapshot: bytes, client_id: int) -> DocumentInfo:
        """In one transaction: make ``snapshot`` the whole document (the log and the
        outbox are dropped: ``acked_seq`` becomes ``last_seq``; sequence numbers are
        never issued again) and write under ``client_id`` from now on."""
        ...

    def meta_value(self, key: str) -> str | None:
        """A replica-wide value stored with :meth:`set_meta_value` (None if unset)."""
        ...

    def set_meta_value(self, key: str, value: str) -> None:
        """Store a replica-wide value (such as when everything was last synced)."""
        ...

    def replace_snapshot(
        self,
        doc_id: DocId,
        snapshot: bytes,
        upto: int,
        drop: Sequence[int],
        carry: Sequence[NewEntry] = (),
    ) -> None:
        """Compaction, in one transaction: store ``snapshot`` as holding every entry
        with ``id <= upto``, delete the entries ``drop``, and append ``carry``
        (non-local entries the snapshot could not hold) after ``upto``.

        The caller guarantees that ``snapshot`` contains every entry up to
        ``upto`` except those it carries. Sequence numbers already issued are
        never issued again.
        """
        ...

    def close(self) -> None:
        """Release the store. Further calls raise :class:`~crdtsync.errors.StoreError`."""
        ...
