"""A replica document rebuilt from its store, and compaction of its log.

Compaction folds a document's log into a new snapshot: rebuild the document
from the store through a ``Doc`` (never ``merge_updates``: see DESIGN.md,
Storage), encode it, check that the snapshot alone rebuilds the same items and
deletions, and only then replace the folded entries. It works from the store,
not the live document: pycrdt forbids reading a document inside its own
observer (where automatic compaction runs), and the store is what must be kept.
Unacknowledged local entries stay in the log (the outbox survives compaction),
and so do received updates still waiting for their dependencies. Nothing here
does I/O beyond the :class:`~crdtsync.store.Store` calls.
"""

from __future__ import annotations

import logging
from typing import Any

import pycrdt

from .document import LiveDocument, SnapshotMismatchError, verified_snapshot
from .errors import StoreCorruptError
from .ids import DocId
from .store.base import EntryKind, NewEntry, Store, StoredDocument

__all__ = ["compact_document", "rebuild_document"]

logger = logging.getLogger("crdtsync.compaction")


def rebuild_document(stored: StoredDocument) -> tuple[LiveDocument, list[bytes]]:
    """The stored snapshot and log in a new document writing under the stored client id.

    Entries are applied in log order; PENDING entries are held until their
    dependencies are present, exactly as :meth:`crdtsync.Replica.apply_remote`
    does live. Returns the document and the held updates pycrdt rejected. Raises
    :class:`~crdtsync.errors.StoreCorruptError` if the stored content is unusable.
    """
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=stored.info.client_id)
    live = LiveDocument(doc, name=stored.info.doc_id)
    try:
        rejected = live.load(
            stored.snapshot,
            ((entry.data, entry.kind is EntryKind.PENDING) for entry in stored.entries),
        )
    except (ValueError, RuntimeError) as exc:
        raise StoreCorruptError(
            f"document {stored.info.doc_id!r} cannot be rebuilt from the store: {exc}"
        ) from exc
    return live, rejected


def compact_document(store: Store, doc_id: DocId) -> tuple[int, int]:
    """Fold ``doc_id``'s log into a new, verified snapshot in ``store``.

    Returns the snapshot's size and the bytes of log entries still in the log
    that a later compaction would fold (received updates still held). Raises
    :class:`~crdtsync.errors.StoreError` if the store cannot be written (nothing
    is lost then), :class:`~crdtsync.errors.StoreCorruptError` if the snapshot
    would not reproduce the document (nothing changed).
    """
    stored = store.load_document(doc_id)
    if stored is None:  # pragma: no cover - the document was created on open
        raise StoreCorruptError(f"document {doc_id!r} vanished from the store")
    live, _ = rebuild_document(stored)  # rejected held updates are simply not carried
    try:
        # Verified before anything is deleted: the snapshot alone must rebuild the
        # same items and deletions (state vector and delete set).
        snapshot = verified_snapshot(live.doc)
    except SnapshotMismatchError as exc:
        raise StoreCorruptError(
            f"compaction of {doc_id!r} did not reproduce the document; nothing changed"
        ) from exc
    drop: list[int] = []
    carry: list[NewEntry] = []
    still_held = {held.update for held in live.held}
    for entry in stored.entries:
        if entry.kind is EntryKind.LOCAL:
            if entry.seq is None or entry.seq <= stored.info.acked_seq:
                drop.append(entry.id)
            # else: still in the outbox; it stays in the log (the snapshot holds it too)
        else:
            drop.append(entry.id)
            if entry.kind is EntryKind.PENDING and entry.data in still_held:
                # Still waiting for dependencies: the snapshot cannot hold it.
                carry.append(NewEntry(EntryKind.PENDING, entry.data))
                still_held.discard(entry.data)
    upto = stored.entries[-1].id if stored.entries else stored.snapshot_upto
    store.replace_snapshot(doc_id, snapshot, upto, drop, carry)
    logger.debug(
        "compacted %r: %d entries folded into a %d-byte snapshot, %d carried",
        doc_id,
        len(drop),
        len(snapshot),
        len(carry),
    )
    return len(snapshot), sum(len(entry.data) for entry in carry)
