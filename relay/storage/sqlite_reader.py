"""Reading a relay's SQLite store from another process, without locking it: what
``crdtsync-relay admin`` uses for its read-only commands (list, info, export, verify).

A running relay holds its file with an exclusive lock (SQLite admits one
process while it writes), so a reader gets in only while no relay runs: it then
gets :class:`~crdtsync.errors.StoreLockedError` at once, never waits, and never
delays the relay. Otherwise it opens the file read-only (``mode=ro``,
``query_only``) and reads each document in one short read transaction; a relay
that starts meanwhile waits for that transaction (its open allows two seconds)
and locks the reader out from the next read on.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from crdtsync.errors import StoreError, StoreVersionError
from crdtsync.ids import DocId, check_doc_id
from crdtsync.store.sqlitefile import check_existing_file, identify, open_error, validate_read_only

from .base import Claim, StoredRoom
from .sqlite import SCHEMA_VERSION, TIME_COLUMNS, SQLiteStorage

__all__ = ["SQLiteReader"]


class SQLiteReader(SQLiteStorage):
    """A read-only :class:`SQLiteStorage` that takes no lock between reads.

    :meth:`append` and :meth:`compact` raise ``StoreError``. Opening a file that
    does not exist raises ``StoreError`` (nothing is created).
    """

    _timed = False
    """True if the file records write times (a relay of this version opened it)."""

    def _open(self) -> None:
        if not self.path.is_file() or not check_existing_file(self.path):
            raise StoreError(f"no relay store at {self.path}")
        validate_read_only(self.path, self._inspect)
        try:
            conn = sqlite3.connect(
                f"{self.path.absolute().as_uri()}?mode=ro",
                uri=True,
                timeout=0,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise open_error(self.path, exc) from exc
        try:
            conn.execute("PRAGMA query_only = 1")
            version = identify(conn)[1]
            if version != SCHEMA_VERSION:
                raise StoreVersionError(
                    f"{self.path} has relay schema version {version}: start a relay on it "
                    f"once to upgrade it to {SCHEMA_VERSION}"
                )
            (last_log,) = conn.execute("SELECT max(id) FROM log").fetchone()
            (last_upto,) = conn.execute("SELECT max(snapshot_upto) FROM docs").fetchone()
            self._timed = all(
                column in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                for table, column in TIME_COLUMNS.items()
            )
        except sqlite3.Error as exc:
            conn.close()
            raise open_error(self.path, exc) from exc
        except StoreError:
            conn.close()
            raise
        self._last_id = max(last_log or 0, last_upto or 0)
        self._conn = conn

    def _load(self, doc_id: DocId) -> StoredRoom:
        """One read transaction: the document as of one moment."""
        conn = self._db()
        try:
            conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise self._read_error(f"loading {doc_id!r}", exc) from exc
        try:
            return super()._load(doc_id)
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    async def last_write(self, doc_id: DocId) -> float | None:
        """When ``doc_id`` was last appended to (the relay's clock, seconds since the
        epoch), or None if never, or only before relays recorded write times
        (``admin info``)."""
        check_doc_id(doc_id)
        return await self._run(self._last_write, doc_id)

    def _last_write(self, doc_id: DocId) -> float | None:
        if not self._timed:
            return None
        conn = self._db()
        try:
            conn.execute("BEGIN")
            try:
                row = conn.execute(
                    "SELECT num, written_at FROM docs WHERE doc_id = ?", (doc_id,)
                ).fetchone()
                if row is None:
                    return None
                (logged,) = conn.execute(
                    "SELECT max(at) FROM log WHERE num = ?", (row[0],)
                ).fetchone()
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._read_error(f"reading {doc_id!r}", exc) from exc
        stamp = max(row[1] or 0, logged or 0)
        return stamp / 1000 if stamp else None

    async def append(
        self, batch: Sequence[tuple[DocId, bytes]], claims: Sequence[Claim] = ()
    ) -> list[int]:
        """Refused: the store is open read-only."""
        raise StoreError(f"{self.path} is open read-only")

    async def compact(self, doc_id: DocId, snapshot: bytes, upto: int) -> None:
        """Refused: the store is open read-only."""
        raise StoreError(f"{self.path} is open read-only")
