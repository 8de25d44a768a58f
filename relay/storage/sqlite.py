"""Relay storage in one SQLite file (the default: ``sqlite:///relay-data/relay.db``).

Layout (``PRAGMA application_id`` 0x63727379 "crsy", ``PRAGMA user_version`` 1)::

    docs(num INTEGER PRIMARY KEY, doc_id TEXT UNIQUE,
         snapshot BLOB, snapshot_crc INTEGER, snapshot_upto INTEGER)
    log(id INTEGER PRIMARY KEY, num INTEGER, data BLOB, crc INTEGER)
        index log_by_doc(num, id)

Every blob carries a CRC-32 checked on every read. WAL journal; ``synchronous``
FULL by default (an ACK promises the update survives a power loss; group commit
amortises the fsync), NORMAL on request (survives a process crash). All SQLite
calls run on one worker thread owned by the storage, never on the event loop.
An existing file is validated before anything is written; a file that is not a
relay store (a replica's store, random bytes, another schema version) is refused
with a :class:`~crdtsync.errors.StoreError` subclass and left unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import warnings
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, TypeVar

from crdtsync.errors import (
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    StoreVersionError,
    StoreWriteError,
)
from crdtsync.ids import DocId
from crdtsync.store.sqlite import _OPEN_FILES, _file_key, check_sqlite_header

from .base import RemoteCallback, StoredRoom, StoredUpdate

__all__ = ["SQLiteStorage"]

logger = logging.getLogger("relay.storage")

APPLICATION_ID = 0x63727379
SCHEMA_VERSION = 1
Synchronous = Literal["full", "normal"]
_T = TypeVar("_T")

_SCHEMA = (
    """CREATE TABLE docs (
        num INTEGER PRIMARY KEY,
        doc_id TEXT NOT NULL UNIQUE,
        snapshot BLOB,
        snapshot_crc INTEGER,
        snapshot_upto INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE log (
        id INTEGER PRIMARY KEY,
        num INTEGER NOT NULL,
        data BLOB NOT NULL,
        crc INTEGER NOT NULL
    )""",
    "CREATE INDEX log_by_doc ON log (num, id)",
)


class SQLiteStorage:
    """:class:`~relay.storage.RelayStorage` in one SQLite file."""

    durable = True

    def __init__(self, path: str | Path, synchronous: Synchronous = "full") -> None:
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous must be 'full' or 'normal', not {synchronous!r}")
        self.path = Path(path)
        self.synchronous: Synchronous = synchronous
        self.url = f"sqlite:///{self.path}" + (
            "" if synchronous == "full" else "?synchronous=normal"
        )
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._key: tuple[int, int] | None = None
        self._nums: dict[DocId, int] = {}
        self._state = "new"
        self._remote: list[RemoteCallback] = []

    # -- running on the worker thread ---------------------------------------------------------

    async def _run(self, function: Callable[..., _T], *args: object) -> _T:
        if self._state != "open" or self._executor is None:
            raise StoreError(f"relay storage {self.path} is {self._state}, not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _db(self) -> sqlite3.Connection:
        assert self._conn is not None
        return self._conn

    # -- life cycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the file (and missing parent directories) or validate it, then lock it."""
        if self._state == "open":
            return
        if self._state == "closed":
            raise StoreError(f"relay storage {self.path} is closed")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-sqlite")
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, self._open)
        except BaseException:
            executor.shutdown(wait=True)
            raise
        self._executor = executor
        self._state = "open"
        logger.info("relay storage %s opened (synchronous=%s)", self.path, self.synchronous)

    def _open(self) -> None:
        key = _file_key(self.path)
        if key is not None and key in _OPEN_FILES:
            raise StoreLockedError(f"{self.path} is in use: already open in this process")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            exists = self.path.exists() and self.path.stat().st_size > 0
            if exists:
                check_sqlite_header(self.path)
                self._validate()
        except OSError as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        try:
            conn.execute("PRAGMA busy_timeout = 0")
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            if not exists:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            elif conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
            conn.execute("BEGIN IMMEDIATE")  # take the exclusive lock now
            self._nums = {
                DocId(doc_id): num for num, doc_id in conn.execute("SELECT num, doc_id FROM docs")
            }
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            conn.close()
            if "locked" in str(exc):
                raise StoreLockedError(f"{self.path} is in use by another process") from exc
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreCorruptError(f"{self.path} cannot be read: {exc}") from exc
        self._conn = conn
        self._key = _file_key(self.path)
        if self._key is not None:
            _OPEN_FILES.add(self._key)

    def _validate(self) -> None:
        """Refuse (without writing) a file that is not a relay store of our version."""
        sides = [self.path.with_name(self.path.name + suffix) for suffix in ("-wal", "-shm")]
        created = [side for side in sides if not side.exists()]
        try:
            conn = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True, timeout=0)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        try:
            app = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if app != APPLICATION_ID:
                raise StoreCorruptError(
                    f"{self.path} is an SQLite database but not a crdtsync relay store"
                )
            if version != SCHEMA_VERSION:
                raise StoreVersionError(
                    f"{self.path} has relay schema version {version}; this relay reads "
                    f"version {SCHEMA_VERSION}"
                )
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise StoreCorruptError(f"{self.path} is damaged: {'; '.join(problems[:3])}")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                raise StoreLockedError(f"{self.path} is in use by another process") from exc
            raise StoreCorruptError(f"{self.path} cannot be read: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise StoreCorruptError(f"{self.path} is damaged: {exc}") from exc
        finally:
            conn.close()
            for side in created:
                if side.exists() and (side.name.endswith("-shm") or side.stat().st_size == 0):
                    side.unlink()

    async def close(self) -> None:
        """Close the file (idempotent)."""
        if self._state != "open":
            self._state = "closed"
            return
        self._state = "closing"
        executor = self._executor
        assert executor is not None
        await asyncio.get_running_loop().run_in_executor(executor, self._close)
        executor.shutdown(wait=True)
        self._executor = None
        self._state = "closed"
        logger.info("relay storage %s closed", self.path)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._key is not None:
            _OPEN_FILES.discard(self._key)
            self._key = None

    def __del__(self) -> None:
        if getattr(self, "_state", "closed") == "open":
            warnings.warn(f"unclosed SQLiteStorage {self.path}", ResourceWarning, stacklevel=2)

    # -- reads ------------------------------------------------------------------------------------

    async def load(self, doc_id: DocId) -> StoredRoom:
        return await self._run(self._load, doc_id)

    def _load(self, doc_id: DocId) -> StoredRoom:
        num = self._nums.get(doc_id)
        if num is None:
            return StoredRoom(doc_id, None, 0, [])
        db = self._db()
        try:
            snapshot, snapshot_crc, upto = db.execute(
                "SELECT snapshot, snapshot_crc, snapshot_upto FROM docs WHERE num = ?", (num,)
            ).fetchone()
            rows = db.execute(
                "SELECT id, data, crc FROM log WHERE num = ? ORDER BY id", (num,)
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreCorruptError(f"{self.path}: cannot read {doc_id!r}: {exc}") from exc
        if snapshot is not None and zlib.crc32(snapshot) != snapshot_crc:
            raise StoreCorruptError(f"{self.path}: snapshot of {doc_id!r} fails its checksum")
        updates = []
        for entry_id, data, crc in rows:
            if zlib.crc32(data) != crc:
                raise StoreCorruptError(
                    f"{self.path}: log entry {entry_id} of {doc_id!r} fails its checksum"
                )
            updates.append(StoredUpdate(entry_id, data))
        return StoredRoom(doc_id, snapshot, upto, updates)

    async def documents(self) -> list[DocId]:
        return await self._run(self._documents)

    def _documents(self) -> list[DocId]:
        return sorted(self._nums)

    # -- writes -----------------------------------------------------------------------------------

    async def append(self, batch: Sequence[tuple[DocId, bytes]]) -> list[int]:
        if not batch:
            return []
        return await self._run(self._append, list(batch))

    def _append(self, batch: list[tuple[DocId, bytes]]) -> list[int]:
        db = self._db()
        new_docs: list[DocId] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            rows = []
            for doc_id, update in batch:
                num = self._nums.get(doc_id)
                if num is None:
                    cursor = db.execute("INSERT INTO docs (doc_id) VALUES (?)", (doc_id,))
                    assert cursor.lastrowid is not None
                    num = self._nums[doc_id] = cursor.lastrowid
                    new_docs.append(doc_id)
                rows.append((num, update, zlib.crc32(update)))
            first = db.execute("SELECT coalesce(max(id), 0) + 1 FROM log").fetchone()[0]
            ids = list(range(first, first + len(rows)))
            db.executemany(
                "INSERT INTO log (id, num, data, crc) VALUES (?, ?, ?, ?)",
                [(entry_id, *row) for entry_id, row in zip(ids, rows, strict=True)],
            )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(new_docs)
            raise StoreWriteError(
                f"{self.path}: could not store {len(batch)} update(s): {exc}"
            ) from exc
        return ids

    def _rollback(self, new_docs: list[DocId]) -> None:
        for doc_id in new_docs:
            self._nums.pop(doc_id, None)
        db = self._db()
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error as exc:  # SQLite rolled back already (e.g. disk full)
                logger.warning("%s: rollback after a failed write: %s", self.path, exc)

    async def compact(self, doc_id: DocId, snapshot: bytes, upto: int) -> None:
        await self._run(self._compact, doc_id, bytes(snapshot), upto)

    def _compact(self, doc_id: DocId, snapshot: bytes, upto: int) -> None:
        db = self._db()
        new_docs: list[DocId] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            num = self._nums.get(doc_id)
            if num is None:
                cursor = db.execute("INSERT INTO docs (doc_id) VALUES (?)", (doc_id,))
                assert cursor.lastrowid is not None
                num = self._nums[doc_id] = cursor.lastrowid
                new_docs.append(doc_id)
            db.execute(
                "UPDATE docs SET snapshot = ?, snapshot_crc = ?, snapshot_upto = ? WHERE num = ?",
                (snapshot, zlib.crc32(snapshot), upto, num),
            )
            db.execute("DELETE FROM log WHERE num = ? AND id <= ?", (num, upto))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(new_docs)
            raise StoreWriteError(f"{self.path}: could not compact {doc_id!r}: {exc}") from exc

    def on_remote(self, callback: RemoteCallback) -> None:
        """Stored and never called: one SQLite file serves one relay process."""
        self._remote.append(callback)
