"""The SQLite store's cache bookkeeping (schema version 2): when each document was
opened, fetched and fully acknowledged, its footprint, and whole-document removal
and reset. A base class of :class:`~crdtsync.store.sqlite.SQLiteStore`; the
methods are those of the :class:`~crdtsync.store.Store` contract's "cache
bookkeeping" part, each one transaction.
"""

from __future__ import annotations

import logging
import sqlite3
import zlib
from pathlib import Path

from ..errors import StoreError
from ..ids import DocId
from .base import DocumentInfo, DocumentUsage
from .sqlitefile import read_error, write_error
from .sqliteschema import ID_BITS, DocRow

__all__ = ["SQLiteDocumentMeta"]

logger = logging.getLogger("crdtsync.store")

_USAGE = f"""
SELECT d.doc_id, length(d.snapshot), d.acked_seq, d.seq_floor, d.opened_at, d.fetched_at,
       d.synced_at,
       (SELECT coalesce(sum(length(l.data)), 0) FROM log l
         WHERE l.id BETWEEN d.num << {ID_BITS} AND ((d.num + 1) << {ID_BITS}) - 1),
       (SELECT max(l.seq) FROM log l
         WHERE l.id BETWEEN d.num << {ID_BITS} AND ((d.num + 1) << {ID_BITS}) - 1)
FROM docs d ORDER BY d.doc_id
"""


class SQLiteDocumentMeta:
    """Cache bookkeeping over the store's connection (see the module docstring)."""

    path: Path
    _docs: dict[DocId, DocRow]
    _conn: sqlite3.Connection | None

    def _doc(self, doc_id: DocId) -> DocRow:  # pragma: no cover - SQLiteStore's
        raise NotImplementedError

    def _rollback(self) -> None:  # pragma: no cover - SQLiteStore's
        raise NotImplementedError

    @property
    def _meta_db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"the store {self.path} is closed")
        return self._conn

    def touch(
        self,
        doc_id: DocId,
        *,
        opened_at: float | None = None,
        fetched_at: float | None = None,
        synced_at: float | None = None,
    ) -> None:
        doc = self._doc(doc_id)
        try:
            self._meta_db.execute(
                "UPDATE docs SET opened_at = coalesce(?, opened_at),"
                " fetched_at = coalesce(?, fetched_at), synced_at = coalesce(?, synced_at)"
                " WHERE num = ?",
                (opened_at, fetched_at, synced_at, doc.num),
            )
        except sqlite3.Error as exc:
            raise write_error(self.path, f"recording the use of {doc_id!r}", exc) from exc

    def usage(self) -> list[DocumentUsage]:
        try:
            rows = self._meta_db.execute(_USAGE).fetchall()
        except sqlite3.Error as exc:
            raise read_error(self.path, "reading usage", exc) from exc
        result = []
        for doc_id, snap, acked, floor, opened, fetched, synced, log_bytes, max_seq in rows:
            last_seq = max(floor, max_seq or 0)
            result.append(
                DocumentUsage(
                    DocId(doc_id), snap + log_bytes, last_seq - acked, opened, fetched, synced
                )
            )
        return result

    def remove_document(self, doc_id: DocId) -> None:
        try:
            doc = self._doc(doc_id)
        except KeyError:
            return
        conn = self._meta_db
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM log WHERE id BETWEEN ? AND ?", (doc.first_id, doc.last_id))
            conn.execute("DELETE FROM docs WHERE num = ?", (doc.num,))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise write_error(self.path, f"removing {doc_id!r}", exc) from exc
        self._docs.pop(doc_id, None)
        logger.debug("removed %r from %s", doc_id, self.path)

    def reset_document(self, doc_id: DocId, snapshot: bytes, client_id: int) -> DocumentInfo:
        doc = self._doc(doc_id)
        conn = self._meta_db
        # The snapshot must hold every id issued so far: new entries go above it.
        upto = doc.first_id | max(doc.next_n - 1, 0)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "UPDATE docs SET snapshot = ?, snapshot_crc = ?, snapshot_upto = ?,"
                " acked_seq = ?, seq_floor = ?, client_id = ?, rotate = 0 WHERE num = ?",
                (
                    snapshot,
                    zlib.crc32(snapshot),
                    upto,
                    doc.last_seq,
                    doc.last_seq,
                    client_id,
                    doc.num,
                ),
            )
            conn.execute("DELETE FROM log WHERE id BETWEEN ? AND ?", (doc.first_id, doc.last_id))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise write_error(self.path, f"resetting {doc_id!r}", exc) from exc
        doc.acked_seq = doc.last_seq
        doc.client_id = client_id
        doc.rotate = False
        return DocumentInfo(doc_id, client_id, doc.acked_seq, doc.last_seq)

    def meta_value(self, key: str) -> str | None:
        try:
            row = self._meta_db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise read_error(self.path, f"reading {key!r}", exc) from exc
        return None if row is None else str(row[0])

    def set_meta_value(self, key: str, value: str) -> None:
        try:
            self._meta_db.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value)
            )
        except sqlite3.Error as exc:
            raise write_error(self.path, f"writing {key!r}", exc) from exc
