"""One open document of a replica, and how its changes are recorded.

Every transaction on the document reaches :meth:`OpenDocument.on_transaction`
(a ``Doc.observe`` callback) and is written to the store, with its outbox
entry for a local change, before the Python call that made it returns
(DESIGN.md guarantee 2). A write that fails keeps the change in memory
(*unsaved*) and raises; it is written with the next change or by
:meth:`OpenDocument.flush`, and never sent before it is stored (guarantee 4).
Received updates go through :meth:`OpenDocument.apply_remote`, which stores
them as remote changes, or holds (and stores as PENDING) those whose
dependencies are missing. The log is folded into a snapshot when it outgrew it
(:mod:`crdtsync.compaction`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pycrdt

from .compaction import compact_document
from .document import EMPTY_UPDATE, LiveDocument, compact_threshold
from .errors import InvalidUpdateError, ReplicaClosedError, StoreError, store_error_in
from .events import EventBus, LocalUpdate, PendingChanged
from .ids import DocId
from .store.base import DocumentInfo, EntryKind, NewEntry, Store

__all__ = ["OpenDocument"]

logger = logging.getLogger("crdtsync.replica")


@dataclass(slots=True, eq=False)
class _Unsaved:
    kind: EntryKind
    data: bytes


class OpenDocument:
    """A document a replica has open: its live document, and its recording.

    Created by :meth:`crdtsync.Replica.open` from the stored document; it then
    observes the document. ``compact_min_bytes``: see
    :func:`crdtsync.document.compact_threshold`.
    """

    __slots__ = (
        "_events",
        "_store",
        "acked_seq",
        "closed",
        "compact_at",
        "compact_min_bytes",
        "doc",
        "doc_id",
        "last_seq",
        "live",
        "log_bytes",
        "remote",
        "settle",
        "stored",
        "unsaved",
    )

    def __init__(
        self,
        live: LiveDocument,
        info: DocumentInfo,
        store: Store,
        events: EventBus,
        *,
        log_bytes: int,
        snapshot_bytes: int,
        compact_min_bytes: int,
    ) -> None:
        self.doc_id: DocId = info.doc_id
        self.live = live
        self.doc: pycrdt.Doc[Any] = live.doc
        self._store = store
        self._events = events
        self.last_seq = info.last_seq
        self.acked_seq = info.acked_seq
        self.log_bytes = log_bytes
        """Bytes appended since the last compaction (what compaction would fold)."""
        self.compact_min_bytes = compact_min_bytes
        self.compact_at = compact_threshold(snapshot_bytes, compact_min_bytes)
        """Log bytes above which the next automatic compaction runs."""
        self.remote = False
        """True while :meth:`apply_remote` applies an update."""
        self.unsaved: list[_Unsaved] = []
        """Changes the document holds that a failed write could not store yet."""
        self.stored = 0
        """Entries stored since the document was opened."""
        self.closed = False
        """Set when the replica closes: changes can no longer be stored."""
        self.settle: Callable[[bool], None] | None = None
        """Called before (with True) and after (False) each received update is
        applied, once the document can be read: a records collection reports what
        changed (:mod:`crdtsync.records`). None for other documents."""
        live.integrate_with(self._integrate_remote)
        live.doc.observe(self.on_transaction)

    @property
    def pending(self) -> int:
        """Local changes not acknowledged by a relay (stored or not)."""
        local_unsaved = sum(1 for u in self.unsaved if u.kind is EntryKind.LOCAL)
        return self.last_seq - self.acked_seq + local_unsaved

    # -- recording changes ---------------------------------------------------------------

    def on_transaction(self, event: pycrdt.TransactionEvent) -> None:
        """pycrdt calls this at the end of every transaction that changed the doc.

        This is the hot path of every local edit: keep it lean.
        """
        update = event.update
        if update == EMPTY_UPDATE:
            return
        kind = EntryKind.REMOTE if self.remote else EntryKind.LOCAL
        if self.closed:
            self.unsaved.append(_Unsaved(kind, update))
            raise ReplicaClosedError(
                f"the replica is closed: this change to {self.doc_id!r} was not stored"
            )
        if self.unsaved:
            self._write([*self.unsaved, _Unsaved(kind, update)])
            return
        # One entry, nothing unsaved before it: the common case (every local edit), so
        # _write and _after_write inlined, and events built only for observers.
        seq = self.last_seq + 1 if kind is EntryKind.LOCAL else None
        try:
            self._store.append(self.doc_id, (NewEntry(kind, update, seq),))
        except StoreError:
            self._keep_unsaved([_Unsaved(kind, update)])
            raise
        self.stored += 1
        self.log_bytes += len(update)
        if seq is not None:
            self.last_seq = seq
            if self._events:
                self._events.emit(PendingChanged(self.doc_id, self.pending))
                self._events.emit(LocalUpdate(self.doc_id, seq, update))
        if self.log_bytes > self.compact_at:
            self.auto_compact()

    def _write(self, items: list[_Unsaved]) -> None:
        """Store ``items`` in one transaction, or keep them all as unsaved and raise."""
        entries = []
        seq = self.last_seq
        for item in items:
            if item.kind is EntryKind.LOCAL:
                seq += 1
                entries.append(NewEntry(item.kind, item.data, seq))
            else:
                entries.append(NewEntry(item.kind, item.data))
        try:
            self._store.append(self.doc_id, entries)
        except StoreError:
            self._keep_unsaved(items)
            raise
        self.unsaved = []
        written = sum(len(item.data) for item in items)
        self._after_write(len(items), written, None if seq == self.last_seq else seq)
        if self._events:
            for entry in entries:
                if entry.seq is not None:
                    self._events.emit(LocalUpdate(self.doc_id, entry.seq, entry.data))

    def _after_write(self, count: int, size: int, seq: int | None) -> None:
        """Bookkeeping once ``count`` entries (``size`` bytes) are stored; ``seq`` is the
        new last outbox sequence number if local changes were among them."""
        self.stored += count
        self.log_bytes += size
        if seq is not None:
            self.last_seq = seq
            if self._events:
                self._events.emit(PendingChanged(self.doc_id, self.pending))
        if self.log_bytes > self.compact_at:
            self.auto_compact()

    def _keep_unsaved(self, items: list[_Unsaved]) -> None:
        self.unsaved = items
        logger.error(
            "could not store %d change(s) to %r; kept in memory until the next write",
            len(items),
            self.doc_id,
        )

    def flush(self) -> None:
        """Store the changes an earlier failed write left in memory (no-op if none);
        raises :class:`~crdtsync.errors.StoreWriteError` if the store still fails."""
        if self.unsaved:
            self._write(self.unsaved)

    # -- received updates ----------------------------------------------------------------

    def apply_remote(self, update: bytes) -> bool:
        """See :meth:`crdtsync.Replica.apply_remote`."""
        if self.settle is None:
            return self._apply_remote(update)
        self.settle(True)
        try:
            return self._apply_remote(update)
        finally:
            self.settle(False)

    def _apply_remote(self, update: bytes) -> bool:
        live = self.live
        summary = live.summarize(update)
        before = self.stored
        if live.waits(summary):
            if live.is_held(update):
                return False
            live.check_hold(update)
            self._write([*self.unsaved, _Unsaved(EntryKind.PENDING, update)])
            live.hold(update, summary)
            logger.debug("holding an update for %r until its dependencies arrive", self.doc_id)
            return True
        _, error = live.integrate(update, summary)  # the observer stores what it takes
        if error is not None:
            raise InvalidUpdateError(f"update for {self.doc_id!r} {error}")
        release = live.release()
        self.discard([held.update for held, _ in release.refused])
        return self.stored != before

    def _integrate_remote(self, doc: pycrdt.Doc[Any], update: bytes) -> None:
        """Apply a remote update whose dependencies are all present, marked remote so
        that the observer stores it as such. A store failure raised from the observer
        comes out of pycrdt in an ExceptionGroup: raise the StoreError itself."""
        self.remote = True
        try:
            doc.apply_update(update)
        except ExceptionGroup as group:
            error = store_error_in(group)
            if error is None:
                raise
            raise error from group
        finally:
            self.remote = False

    def discard(self, rejected: Sequence[bytes]) -> None:
        """Forget held updates pycrdt refused once their dependencies arrived.

        Whatever part of them pycrdt integrated before failing was stored by the
        observer; the rest can never apply, so its PENDING entry is removed
        rather than left to fail every rebuild.
        """
        if not rejected:
            return
        bad = set(rejected)
        stored = self._store.load_document(self.doc_id)
        ids = (
            []
            if stored is None
            else [e.id for e in stored.entries if e.kind is EntryKind.PENDING and e.data in bad]
        )
        self._store.remove_entries(self.doc_id, ids)
        for update in rejected:
            logger.warning(
                "discarded a held update for %r that pycrdt rejected: %s",
                self.doc_id,
                update[:64].hex(),
            )

    # -- compaction ----------------------------------------------------------------------

    def compact(self) -> None:
        """Fold the log into a verified snapshot now (:mod:`crdtsync.compaction`)."""
        snapshot_bytes, self.log_bytes = compact_document(self._store, self.doc_id)
        self.compact_at = compact_threshold(snapshot_bytes, self.compact_min_bytes)

    def auto_compact(self) -> None:
        """Compact if the log outgrew the snapshot. A failure here is not the caller's:
        the change that triggered it is stored, so it is logged and retried later."""
        if self.log_bytes <= self.compact_at:
            return
        try:
            self.compact()
        except StoreError as exc:
            self.compact_at = self.log_bytes * 2  # retry later, not at every edit
            logger.warning("automatic compaction of %r failed (will retry): %s", self.doc_id, exc)
