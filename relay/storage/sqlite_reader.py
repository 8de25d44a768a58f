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
from crdtsync.ids import DocId
from crdtsync.store.sqlitefile import check_existing_file, identify, open_error, validate_read_only

from .base import Claim, StoredRoom
from .sqlite import SCHEMA_VERSION, SQLiteStorage

__all__ = ["SQLiteReader"]


class SQLiteReader(SQLiteStorage):
    """A read-only :class:`SQLiteStorage` that takes no lock between reads.

    :meth:`append` and :meth:`compact` raise ``StoreError``. Opening a file that
    does not exist raises ``StoreError`` (nothing is created).
    """

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

    async def append(
        self, batch: Sequence[tuple[DocId, bytes]], claims: Sequence[Claim] = ()
    ) -> list[int]:
        """Refused: the store is open read-only."""
        raise StoreError(f"{self.path} is open read-only")

    async def compact(self, doc_id: DocId, snapshot: bytes, upto: int) -> None:
        """Refused: the store is open read-only."""
        raise StoreError(f"{self.path} is open read-only")
