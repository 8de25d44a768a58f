"""The embedded default store: one SQLite file in WAL mode.

Layout and migrations: :mod:`crdtsync.store.sqliteschema` (version 2: the cache
bookkeeping of offline apps, :mod:`crdtsync.store.sqlitemeta`).

Log ids carry the document number in their high bits, so one document's log is
a contiguous rowid range: appending touches one B-tree page and reading a
document needs no secondary index. With 1 KiB pages and the exclusive lock (no
shared-memory WAL index), a durable one-edit commit costs about 5 µs here
against about 14 µs for a rowid table with a (doc, id) index (measured while
designing it; the end-to-end figures are in benchmarks/results/local.md).
Every blob carries a CRC-32 checked on read.

The file is opened with ``locking_mode=EXCLUSIVE``: a second process (or a
second store object) cannot open it while it is in use. Two writers would
reuse the same CRDT client ids for different changes, which breaks convergence.

Durability: ``"normal"`` is ``synchronous=NORMAL`` (a commit is in the WAL, in
the OS, when the call returns: survives a process crash); ``"full"`` is
``synchronous=FULL`` (the WAL is fsync'd at every commit: survives power loss).

A file that is not a crdtsync store (random bytes, truncated, another schema
version, a foreign SQLite database) raises a :class:`StoreError` subclass and is
never written to.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import time
import uuid
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Concatenate, Literal, ParamSpec, TypeVar

from ..errors import (
    StoreCorruptError,
    StoreError,
    StoreVersionError,
)
from ..ids import DocId, ReplicaId
from .base import (
    EMPTY_SNAPSHOT,
    DocumentInfo,
    EntryKind,
    LogEntry,
    NewEntry,
    OutboxEntry,
    StoredDocument,
    check_carry,
    check_entries,
)
from .sqlitefile import (
    REGISTRY_LOCK,
    REPLICA_APPLICATION_ID,
    OpenFiles,
    check_existing_file,
    describe,
    identify,
    open_error,
    read_error,
    validate_read_only,
    write_error,
)
from .sqlitemeta import SQLiteDocumentMeta
from .sqliteschema import ID_BITS, SCHEMA_VERSION, DocRow, check_schema, create, migrate

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

logger = logging.getLogger(__name__)

_ID_BITS = ID_BITS
_MAX_DOC_NUM = (1 << 23) - 1
_PAGE_SIZE = 1024  # small pages: a one-edit commit writes ~1 KiB to the WAL, not 4 KiB
_WAL_CHECKPOINT_PAGES = 8192
"""WAL frames (pages) after which a commit checkpoints the WAL into the file (SQLite's
default is 1000). Every one-edit commit appends at least one 1 KiB frame, and in
"normal" durability each checkpoint costs two fsyncs: checkpointing every 8 MiB
instead of every 1 MiB took a one-row insert loop from 8.6 to 6.9 us of CPU per
commit here (fewer fsync waits too). Durability is unchanged (a commit is in the WAL
either way); the WAL file grows to ~8 MiB before it is reused."""

Durability = Literal["normal", "full"]
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _reads(
    method: Callable[Concatenate[SQLiteStore, _P], _R],
) -> Callable[Concatenate[SQLiteStore, _P], _R]:
    """A read method whose SQLite errors become store errors (only StoreErrors escape)."""

    action = method.__name__.strip("_").replace("_", " ")

    def wrapper(self: SQLiteStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise read_error(self.path, action, exc) from exc

    functools.update_wrapper(wrapper, method)
    return wrapper


_Doc = DocRow

_crc = zlib.crc32
_KINDS = {int(kind): kind for kind in EntryKind}
_INSERT = "INSERT INTO log(id, kind, seq, data, crc) VALUES (?, ?, ?, ?, ?)"


def _runs(ids: list[int]) -> list[tuple[int, int]]:
    """Sorted ids as inclusive ``(first, last)`` runs of consecutive ids."""
    runs: list[tuple[int, int]] = []
    for entry_id in ids:
        if runs and runs[-1][1] == entry_id - 1:
            runs[-1] = (runs[-1][0], entry_id)
        else:
            runs.append((entry_id, entry_id))
    return runs


class SQLiteStore(SQLiteDocumentMeta):
    """A :class:`~crdtsync.store.Store` in one SQLite file.

    Use as a context manager or call :meth:`close`; an unclosed store warns with
    :class:`ResourceWarning` when garbage-collected.
    """

    def __init__(self, path: str | os.PathLike[str], durability: Durability = "normal") -> None:
        if durability not in ("normal", "full"):
            raise ValueError(f"durability must be 'normal' or 'full', not {durability!r}")
        self.path = Path(path)
        self.durability = durability
        self._docs: dict[DocId, _Doc] = {}
        self._conn: sqlite3.Connection | None = None
        self._append: sqlite3.Cursor | None = None
        """The cursor of one-entry appends, kept: ``Connection.execute`` makes (and
        frees) a new cursor per call, a third of the cost of a one-row insert."""
        self._key: tuple[int, int] | None = None
        self._unclean = False
        OpenFiles.check(self.path)
        try:
            exists = self._check_file()
        except OSError as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        if exists:
            # Validate on a read-only connection: closing a read-write one would
            # checkpoint a WAL into a file we are about to refuse.
            self._validate()
        uri = f"{self.path.absolute().as_uri()}?mode={'rw' if exists else 'rwc'}"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        try:
            self._open(conn, exists)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._append = conn.cursor()
        with REGISTRY_LOCK:
            self._key = OpenFiles.claim(self.path)
        try:
            self._replica_id = self._read_replica_id()
            self._start_session()
        except StoreError:
            self.close()
            raise
        logger.debug("opened store %s (durability=%s)", self.path, durability)

    # -- opening -------------------------------------------------------------

    def _check_file(self) -> bool:
        """Checks that need no SQLite. Returns True if the store exists already."""
        if not self.path.exists() and not self.path.parent.is_dir():
            raise StoreError(f"cannot create {self.path}: {self.path.parent} is not a directory")
        return check_existing_file(self.path)

    def _validate(self) -> None:
        """Check an existing file on a read-only connection; raise unless it is our store."""
        validate_read_only(self.path, self._inspect)

    def _inspect(self, conn: sqlite3.Connection) -> bool:
        identity = identify(conn)
        app, version, tables = identity
        if version == 0 and not tables:
            return False  # a valid but empty SQLite file: the store is created in it
        if app != REPLICA_APPLICATION_ID:
            raise StoreCorruptError(
                f"{self.path} is an SQLite database but not a crdtsync replica store "
                f"({describe(identity)})"
            )
        self._check_schema(version, tables)
        return True

    def _check_schema(self, version: int, tables: set[str]) -> None:
        check_schema(self.path, version, tables)

    def _open(self, conn: sqlite3.Connection, exists: bool) -> None:
        try:
            conn.execute("PRAGMA busy_timeout = 0")
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if not exists or version == 0:
                self._create(conn)
            elif not 1 <= version <= SCHEMA_VERSION:  # changed since validation
                raise StoreVersionError(f"{self.path} changed while it was being opened")
            elif version < SCHEMA_VERSION:
                migrate(conn, version)
                logger.info("%s migrated from schema version %d", self.path, version)
            elif conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            synchronous = "FULL" if self.durability == "full" else "NORMAL"
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {_WAL_CHECKPOINT_PAGES}")
            # Take the exclusive lock now, so a second opener fails at open, not mid-edit.
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise open_error(self.path, exc) from exc

    def _start_session(self) -> None:
        """Record, durably, that the store is open; see :attr:`unclean`.

        The marker is written with a full fsync, so a power loss can take later
        commits but not the marker: if the last session wrote in ``"normal"``
        durability and did not close cleanly, writes it reported durable may be lost.
        """
        conn = self._db
        row = conn.execute("SELECT value FROM meta WHERE key = 'session'").fetchone()
        self._unclean = row is not None and row[0] == "normal"
        if self._unclean:
            logger.warning(
                "%s was not closed cleanly in 'normal' durability: recent changes may have "
                "been lost in a power loss; documents will write under new client ids",
                self.path,
            )
        try:
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN IMMEDIATE")
            if self._unclean:
                # Every document, not only those opened in the next session (the
                # flag stays until each one has its new client id).
                conn.execute("UPDATE docs SET rotate = 1")
            conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('session', ?)",
                (self.durability,),
            )
            conn.execute("COMMIT")
            if self.durability == "normal":
                conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            self._rollback()
            raise self._write_error("starting a session", exc) from exc

    @property
    def unclean(self) -> bool:
        """True if the previous session wrote in ``"normal"`` durability and never closed."""
        return self._unclean

    def _create(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            create(conn)
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('replica_id', ?), ('created', ?)",
                (uuid.uuid4().hex, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"cannot create a store in {self.path}: {exc}") from exc

    @_reads
    def _read_replica_id(self) -> ReplicaId:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'replica_id'").fetchone()
        if row is None or not isinstance(row[0], str) or not row[0]:
            raise StoreCorruptError(f"{self.path} has no replica id")
        return ReplicaId(row[0])

    # -- helpers -------------------------------------------------------------

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"the store {self.path} is closed")
        return self._conn

    def _doc(self, doc_id: DocId) -> _Doc:
        doc = self._docs.get(doc_id)
        if doc is None:
            doc = self._load_doc_row(doc_id)
            if doc is None:
                raise KeyError(f"no document {doc_id!r} in {self.path}")
        return doc

    @_reads
    def _load_doc_row(self, doc_id: DocId) -> _Doc | None:
        row = self._db.execute(
            "SELECT num, client_id, acked_seq, seq_floor, snapshot_upto, rotate FROM docs"
            " WHERE doc_id = ?",
            (doc_id,),
        ).fetchone()
        if row is None:
            return None
        num, client_id, acked_seq, seq_floor, snapshot_upto, rotate = row
        lo, hi = num << _ID_BITS, (num << _ID_BITS) | ((1 << _ID_BITS) - 1)
        max_id, max_seq = self._db.execute(
            "SELECT max(id), max(seq) FROM log WHERE id BETWEEN ? AND ?", (lo, hi)
        ).fetchone()
        last_seq = max(seq_floor, max_seq or 0)
        # New ids continue above both the log and the snapshot: an entry at or below
        # snapshot_upto would be taken as already folded into the snapshot.
        highest = max(max_id or lo, snapshot_upto, lo)
        next_n = (highest & ((1 << _ID_BITS) - 1)) + 1
        doc = _Doc(num, client_id, acked_seq, last_seq, next_n, bool(rotate))
        self._docs[doc_id] = doc
        return doc

    @staticmethod
    def _info(doc_id: DocId, doc: _Doc) -> DocumentInfo:
        return DocumentInfo(doc_id, doc.client_id, doc.acked_seq, doc.last_seq, doc.rotate)

    def _write_error(self, action: str, exc: sqlite3.Error) -> StoreError:
        return write_error(self.path, action, exc)

    def _rollback(self) -> None:
        conn = self._db
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as exc:  # SQLite may have rolled back already
                logger.warning("rollback in %s failed: %s", self.path, exc)

    # -- the Store contract ----------------------------------------------------

    def replica_id(self) -> ReplicaId:
        self._db  # noqa: B018  (raises if closed)
        return self._replica_id

    @_reads
    def documents(self) -> list[DocId]:
        rows = self._db.execute("SELECT doc_id FROM docs ORDER BY doc_id").fetchall()
        return [DocId(row[0]) for row in rows]

    @_reads
    def document_info(self, doc_id: DocId) -> DocumentInfo | None:
        doc = self._docs.get(doc_id) or self._load_doc_row(doc_id)
        return None if doc is None else self._info(doc_id, doc)

    def create_document(self, doc_id: DocId, client_id: int) -> DocumentInfo:
        if self.document_info(doc_id) is not None:
            raise ValueError(f"document {doc_id!r} exists already")
        try:
            cursor = self._db.execute(
                "INSERT INTO docs(doc_id, client_id, snapshot, snapshot_crc) VALUES (?, ?, ?, ?)",
                (doc_id, client_id, EMPTY_SNAPSHOT, _crc(EMPTY_SNAPSHOT)),
            )
        except sqlite3.Error as exc:
            raise self._write_error(f"creating document {doc_id!r}", exc) from exc
        num = cursor.lastrowid
        if num is None or num > _MAX_DOC_NUM:
            raise StoreError(f"{self.path} holds too many documents")
        doc = self._docs[doc_id] = _Doc(num, client_id, 0, 0, 1)
        return self._info(doc_id, doc)

    @_reads
    def load_document(self, doc_id: DocId) -> StoredDocument | None:
        row = self._db.execute(
            "SELECT snapshot, snapshot_crc, snapshot_upto FROM docs WHERE doc_id = ?", (doc_id,)
        ).fetchone()
        if row is None:
            return None
        snapshot, snapshot_crc, upto = row
        if _crc(snapshot) != snapshot_crc:
            raise StoreCorruptError(f"{self.path}: the snapshot of {doc_id!r} fails its checksum")
        doc = self._doc(doc_id)
        entries = []
        for entry_id, kind, seq, data, crc in self._db.execute(
            "SELECT id, kind, seq, data, crc FROM log WHERE id BETWEEN ? AND ? ORDER BY id",
            (max(doc.first_id, upto + 1), doc.last_id),
        ):
            if _crc(data) != crc:
                raise StoreCorruptError(
                    f"{self.path}: log entry {entry_id & ((1 << _ID_BITS) - 1)} of "
                    f"{doc_id!r} fails its checksum"
                )
            entry_kind = _KINDS.get(kind)
            if entry_kind is None:
                raise StoreCorruptError(f"{self.path}: unknown log entry kind {kind}")
            entries.append(LogEntry(entry_id, entry_kind, seq, data))
        return StoredDocument(self._info(doc_id, doc), snapshot, upto, entries)

    def _rows(
        self, doc_id: DocId, doc: _Doc, entries: Sequence[NewEntry]
    ) -> tuple[list[tuple[int, int, int | None, bytes, int]], int]:
        """Validate ``entries``; return their rows and the last sequence number."""
        last_seq = check_entries(entries, doc.last_seq)
        rows = []
        n = doc.next_n
        for entry in entries:
            data = entry.data
            # int(): sqlite3 binds an exact int faster than an IntEnum (its adaptation path)
            rows.append((doc.first_id | n, int(entry.kind), entry.seq, data, _crc(data)))
            n += 1
        if n >= 1 << _ID_BITS:
            raise StoreError(f"document {doc_id!r} has exhausted its log ids")
        return rows, last_seq

    def append(self, doc_id: DocId, entries: Sequence[NewEntry]) -> list[int]:
        doc = self._docs.get(doc_id) or self._doc(doc_id)
        cursor = self._append
        if cursor is None:
            raise StoreError(f"the store {self.path} is closed")
        if len(entries) == 1:
            return [self._append_one(doc_id, doc, cursor, entries[0])]
        conn = cursor.connection
        rows, last_seq = self._rows(doc_id, doc, entries)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise self._write_error(f"appending to {doc_id!r}", exc) from exc
        doc.next_n += len(rows)
        doc.last_seq = last_seq
        return [row[0] for row in rows]

    def _append_one(self, doc_id: DocId, doc: _Doc, cursor: sqlite3.Cursor, entry: NewEntry) -> int:
        """One entry in one autocommit statement: every local edit comes here (its
        own durable transaction), so this is :meth:`append` without its lists."""
        kind, seq, data = entry.kind, entry.seq, entry.data
        if kind is EntryKind.LOCAL:
            if seq is None or seq <= doc.last_seq:
                raise ValueError(f"local entry needs a sequence number above {doc.last_seq}")
        elif seq is not None:
            raise ValueError("only local entries carry a sequence number")
        n = doc.next_n
        if n >= (1 << _ID_BITS) - 1:
            raise StoreError(f"document {doc_id!r} has exhausted its log ids")
        entry_id = doc.first_id | n
        try:
            # int(): sqlite3 binds an exact int faster than an IntEnum (its adaptation path)
            cursor.execute(_INSERT, (entry_id, int(kind), seq, data, _crc(data)))
        except sqlite3.Error as exc:
            self._rollback()
            raise self._write_error(f"appending to {doc_id!r}", exc) from exc
        doc.next_n = n + 1
        if seq is not None:
            doc.last_seq = seq
        return entry_id

    @_reads
    def outbox(self, doc_id: DocId) -> list[OutboxEntry]:
        doc = self._doc(doc_id)
        result = []
        for seq, data, crc in self._db.execute(
            "SELECT seq, data, crc FROM log WHERE id BETWEEN ? AND ? AND kind = ? AND seq > ?"
            " ORDER BY id",
            (doc.first_id, doc.last_id, int(EntryKind.LOCAL), doc.acked_seq),
        ):
            if _crc(data) != crc:
                raise StoreCorruptError(
                    f"{self.path}: outbox entry {seq} of {doc_id!r} fails its checksum"
                )
            result.append(OutboxEntry(seq, data))
        return result

    def acknowledge(self, doc_id: DocId, seq: int) -> DocumentInfo:
        doc = self._doc(doc_id)
        if seq > doc.last_seq:
            raise ValueError(f"sequence number {seq} was never issued (last: {doc.last_seq})")
        if seq > doc.acked_seq:
            conn = self._db
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("UPDATE docs SET acked_seq = ? WHERE num = ?", (seq, doc.num))
                # Acknowledged entries a snapshot already holds are needed no more.
                conn.execute(
                    "DELETE FROM log WHERE id BETWEEN ? AND (SELECT snapshot_upto FROM docs"
                    " WHERE num = ?) AND kind = ? AND seq <= ?",
                    (doc.first_id, doc.num, int(EntryKind.LOCAL), seq),
                )
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise self._write_error(f"acknowledging {doc_id!r}", exc) from exc
            doc.acked_seq = seq
        return self._info(doc_id, doc)

    def remove_entries(self, doc_id: DocId, ids: Sequence[int]) -> None:
        doc = self._doc(doc_id)
        if any(not doc.first_id <= entry_id <= doc.last_id for entry_id in ids):
            raise ValueError(f"an id to remove is not a log entry of {doc_id!r}")
        conn = self._db
        try:
            kinds = [
                conn.execute("SELECT kind FROM log WHERE id = ?", (i,)).fetchone() for i in ids
            ]
        except sqlite3.Error as exc:
            raise read_error(self.path, f"reading {doc_id!r}", exc) from exc
        if any(row is not None and row[0] == int(EntryKind.LOCAL) for row in kinds):
            raise ValueError("local entries cannot be removed")
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("DELETE FROM log WHERE id = ?", ((i,) for i in ids))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise self._write_error(f"removing entries of {doc_id!r}", exc) from exc

    def set_client_id(self, doc_id: DocId, client_id: int) -> DocumentInfo:
        doc = self._doc(doc_id)
        try:
            self._db.execute(
                "UPDATE docs SET client_id = ?, rotate = 0 WHERE num = ?", (client_id, doc.num)
            )
        except sqlite3.Error as exc:
            raise self._write_error(f"setting the client id of {doc_id!r}", exc) from exc
        doc.client_id = client_id
        doc.rotate = False
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
        if any(not doc.first_id <= entry_id <= doc.last_id for entry_id in drop):
            raise ValueError(f"an id to drop is not a log entry of {doc_id!r}")
        check_carry(carry, doc.last_seq)
        if upto >= (doc.first_id | doc.next_n):
            raise ValueError(f"log id {upto} does not exist yet")
        rows, _ = self._rows(doc_id, doc, carry)
        conn = self._db
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "UPDATE docs SET snapshot = ?, snapshot_crc = ?, snapshot_upto = ?,"
                " seq_floor = ? WHERE num = ?",
                (snapshot, _crc(snapshot), upto, doc.last_seq, doc.num),
            )
            conn.executemany("DELETE FROM log WHERE id BETWEEN ? AND ?", _runs(sorted(drop)))
            conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise self._write_error(f"compacting {doc_id!r}", exc) from exc
        doc.next_n += len(rows)

    def close(self) -> None:
        """Close the file (checkpointing the WAL). Calling it twice is harmless."""
        conn, self._conn = self._conn, None
        cursor, self._append = self._append, None
        if conn is not None:
            if cursor is not None:
                # Its statement would keep the file open (and locked) after conn.close()
                # while anything still references the cursor (a traceback's frame).
                cursor.close()
            try:
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('session', 'closed')")
            except sqlite3.Error as exc:  # the next open will then see an unclean session
                logger.warning("could not mark %s as cleanly closed: %s", self.path, exc)
            conn.close()
            if self._key is not None:
                OpenFiles.release(self._key)
            logger.debug("closed store %s", self.path)

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_conn", None) is not None:
            warnings.warn(f"unclosed store {self.path}", ResourceWarning, stacklevel=2)
            self.close()
