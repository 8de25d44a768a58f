"""Relay storage in one SQLite file (``sqlite:///relay-data/relay.db``), the default.

Layout (``PRAGMA application_id`` :data:`APPLICATION_ID`, ``PRAGMA user_version``
:data:`SCHEMA_VERSION`)::

    docs(num, doc_id UNIQUE, snapshot_upto, snapshot_crc, snapshot)
        index docs_by_upto(snapshot_upto)
    log(id, num, crc, data)                 id: INTEGER PRIMARY KEY, the StoredUpdate id
        index log_by_doc(num, id)
    claims(num, client, owner)              authorship; primary key (num, client)

Schema version 1 (before ``claims``) is migrated in place when opened: the
table is added and ``user_version`` set to 2 in one transaction.

A document id is stored once, in ``docs``; the log refers to it by number. Loading
one document is a range scan of ``log_by_doc``; an append adds rows at the end of
``log`` (ids only grow). Ids are never reused: every id ever assigned is either
still in the log or at most some ``snapshot_upto`` (compaction deletes only ids
up to it), so on open the next id continues above both maxima (each an index
lookup). Every blob carries a CRC-32 checked on every read.

Durability: WAL journal. ``synchronous="full"`` (the default) fsyncs the WAL at
every commit, so an ACK sent after :meth:`SQLiteStorage.append` returned survives
a power loss; group commit (one append per batch) amortises the fsync.
``"normal"`` survives a crash of the process (``kill -9``) but may lose the last
commits in a power loss. Both are ``durable`` in the sense of the contract.

Threads: every SQLite call runs on one worker thread the storage owns (a
:class:`~relay.storage.worker.SerialWorker`), never on the event loop. Calls
therefore run one at a time, in the order they were made.

Locking and foreign files, as in the replica store (:mod:`crdtsync.store.sqlite`):
the file is opened with ``locking_mode=EXCLUSIVE``, so a second process cannot
open it, and this process refuses a second opener of the same file (replica
store included) before touching it, because closing any descriptor of a file
drops all of the process's POSIX locks on it. An existing file is validated on
a read-only connection before anything is written: a file that is not a relay
store (a replica's store, another SQLite database, random bytes), has another
schema version, or is damaged raises a :class:`~crdtsync.errors.StoreError`
subclass and is left unchanged.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
import warnings
import zlib
from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path
from typing import Literal, ParamSpec, TypeVar

from crdtsync.errors import (
    StoreCorruptError,
    StoreError,
    StoreVersionError,
)
from crdtsync.ids import DocId, check_doc_id

# The registry of files open in this process is shared with the replica store on
# purpose: a relay storage and a replica store must not open the same file either.
from crdtsync.store.sqlitefile import (
    REGISTRY_LOCK,
    RELAY_APPLICATION_ID,
    OpenFiles,
    check_existing_file,
    describe,
    identify,
    open_error,
    read_error,
    validate_read_only,
    write_error,
)

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
from .worker import SerialWorker

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "TIME_COLUMNS", "SQLiteStorage", "Synchronous"]

logger = logging.getLogger("relay.storage")

APPLICATION_ID = RELAY_APPLICATION_ID
"""``PRAGMA application_id`` of a relay store: ASCII "crsy" (a replica store's is
0), so neither opens the other's file."""

SCHEMA_VERSION = 2
"""``PRAGMA user_version`` of the layout this code reads and writes."""
_MIGRATABLE = {1}
"""Older versions this code upgrades in place when it opens them."""

Synchronous = Literal["full", "normal"]
"""``"full"``: fsync the WAL at every commit; ``"normal"``: leave it to the OS."""

_SCHEMA = (
    """CREATE TABLE docs (
        num           INTEGER PRIMARY KEY,
        doc_id        TEXT NOT NULL UNIQUE,
        snapshot_upto INTEGER NOT NULL DEFAULT 0,
        snapshot_crc  INTEGER,
        snapshot      BLOB,
        written_at    INTEGER
    )""",
    "CREATE INDEX docs_by_upto ON docs (snapshot_upto)",
    """CREATE TABLE log (
        id   INTEGER PRIMARY KEY,
        num  INTEGER NOT NULL,
        crc  INTEGER NOT NULL,
        data BLOB NOT NULL,
        at   INTEGER
    )""",
    "CREATE INDEX log_by_doc ON log (num, id)",
    _CLAIMS := """CREATE TABLE claims (
        num    INTEGER NOT NULL,
        client INTEGER NOT NULL,
        owner  TEXT NOT NULL,
        PRIMARY KEY (num, client)
    ) WITHOUT ROWID""",
)
_TABLES = {"docs", "log"}
_V2_TABLES = {"claims"}
_INSERT = "INSERT INTO log (id, num, crc, data, at) VALUES (?, ?, ?, ?, ?)"
TIME_COLUMNS = {"log": "at", "docs": "written_at"}
"""Columns of write times (ms since the epoch; NULL before they existed), added to
older files of the same version in place: ``at`` of each log entry, ``written_at``
the last write a compaction folded into the snapshot (``admin info``'s last write)."""
_OPEN_BUSY_MS = 2000  # how long open waits for a reader's read lock before it refuses
_NUM_CACHE_LIMIT = 100_000  # document numbers remembered; forgotten all at once beyond

_State = Literal["new", "open", "closed"]
_P = ParamSpec("_P")
_T = TypeVar("_T")
_crc = zlib.crc32


class SQLiteStorage(SingleProcess, StorageContext):
    """A :class:`~relay.storage.RelayStorage` in one SQLite file.

    ``path`` is the file (created, with missing parent directories, on
    :meth:`open`); ``synchronous`` is ``"full"`` (fsync per commit) or
    ``"normal"``, see the module docstring. Use ``async with`` or call
    :meth:`open` and :meth:`close`; an opened storage that is never closed warns
    with :class:`ResourceWarning` when garbage-collected.
    """

    durable = True
    """A commit is in the file (``"full"``: on disk) when :meth:`append` returns."""

    def __init__(self, path: str | PathLike[str], synchronous: Synchronous = "full") -> None:
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous must be 'full' or 'normal', not {synchronous!r}")
        self.path = Path(path)
        self.synchronous: Synchronous = synchronous
        self.url = f"sqlite:///{self.path}" + (
            "" if synchronous == "full" else "?synchronous=normal"
        )
        self._state: _State = "new"
        self._life = asyncio.Lock()  # open() and close() one at a time
        self._executor: SerialWorker | None = None
        # Used on the worker thread only (and by __del__, when no call can be running):
        self._conn: sqlite3.Connection | None = None
        self._key: tuple[int, int] | None = None
        self._nums: dict[DocId, int] = {}
        self._last_id = 0
        self._callbacks: list[RemoteCallback] = []

    # -- running on the worker thread --------------------------------------------------------

    async def _run(self, function: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run ``function`` on the worker thread, after every call made before."""
        executor = self._executor
        if self._state != "open" or executor is None:
            raise self._not_open()
        return await executor.run(functools.partial(function, *args, **kwargs))

    def _check_open(self) -> None:
        if self._state != "open":
            raise self._not_open()

    def _not_open(self) -> StoreError:
        if self._state == "closed":
            return StoreError(f"relay storage {self.path} is closed")
        return StoreError(f"relay storage {self.path} is not open: call open() first")

    def _db(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            raise StoreError(f"relay storage {self.path} is closed")
        return conn

    # -- life cycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the file (and missing parent directories) or validate it, then lock it.

        Does nothing if already open. Raises :class:`~crdtsync.errors.StoreLockedError`
        if the file is open elsewhere, ``StoreCorruptError`` or ``StoreVersionError``
        for a file this code must not write to (left unchanged), ``StoreError`` for
        other failures (the open may be retried) and after :meth:`close`.
        """
        async with self._life:
            if self._state == "open":
                return
            if self._state == "closed":
                raise StoreError(f"relay storage {self.path} is closed")
            executor = SerialWorker("relay-storage")
            try:
                await executor.run(self._open)
            except StoreError as exc:
                logger.warning("relay storage %s not opened: %s", self.path, exc)
                executor.shutdown()
                raise
            except BaseException:
                # Cancelled: the worker may still finish opening; undo that there.
                executor.submit(self._close)
                executor.shutdown()
                raise
            self._executor = executor
            self._state = "open"
        logger.info(
            "relay storage %s opened (synchronous=%s, last id %d)",
            self.path,
            self.synchronous,
            self._last_id,
        )

    def _open(self) -> None:
        with REGISTRY_LOCK:
            try:
                OpenFiles.check(self.path)
                exists = self._check_file()
                if exists:
                    self._validate()
                uri = f"{self.path.absolute().as_uri()}?mode={'rw' if exists else 'rwc'}"
                conn = sqlite3.connect(
                    uri, uri=True, timeout=0, isolation_level=None, check_same_thread=False
                )
            except OSError as exc:
                raise StoreError(f"cannot open {self.path}: {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open {self.path}: {exc}") from exc
            try:
                self._last_id = self._prepare(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            self._key = OpenFiles.claim(self.path)

    def _check_file(self) -> bool:
        """Checks that need no SQLite. True if the file holds a database already."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return check_existing_file(self.path)

    def _validate(self) -> None:
        """Raise unless the existing file is an undamaged relay store of this schema
        version. Never writes to the file."""
        validate_read_only(self.path, self._inspect)

    def _inspect(self, conn: sqlite3.Connection) -> bool:
        identity = identify(conn)
        app, version, tables = identity
        if app == 0 and version == 0 and not tables:
            return False  # a valid but empty SQLite file: the store is created in it
        if app != APPLICATION_ID:
            raise StoreCorruptError(
                f"{self.path} is an SQLite database but not a crdtsync relay store "
                f"({describe(identity)})"
            )
        if version != SCHEMA_VERSION and version not in _MIGRATABLE:
            raise StoreVersionError(
                f"{self.path} has relay schema version {version}; this relay reads "
                f"version {SCHEMA_VERSION}"
            )
        needed = _TABLES | (_V2_TABLES if version >= 2 else set())
        if not tables >= needed:
            raise StoreCorruptError(
                f"{self.path} is missing tables: {', '.join(sorted(needed - tables))}"
            )
        return True

    def _prepare(self, conn: sqlite3.Connection) -> int:
        """Lock the file, create the schema if it is new, set the pragmas; return the
        last id ever assigned."""
        try:
            # A reader (the admin tool) may hold a read lock for a moment: wait for it
            # rather than refuse to start. Once locked, no other process gets in.
            conn.execute(f"PRAGMA busy_timeout = {_OPEN_BUSY_MS}")
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
            app, version, tables = identify(conn)
            if app == 0 and version == 0 and not tables:
                self._create(conn)
            elif app != APPLICATION_ID or not tables >= _TABLES:
                raise StoreCorruptError(f"{self.path} changed while it was being opened")
            else:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                if version in _MIGRATABLE:
                    self._migrate(conn, version)
                elif version != SCHEMA_VERSION:
                    raise StoreCorruptError(f"{self.path} changed while it was being opened")
                for table, column in TIME_COLUMNS.items():
                    if column not in {
                        row[1] for row in conn.execute(f"PRAGMA table_info({table})")
                    }:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER")
            # Take the exclusive lock now, so a second opener fails at open, not mid-write.
            conn.execute("BEGIN IMMEDIATE")
            (last_log,) = conn.execute("SELECT max(id) FROM log").fetchone()
            (last_upto,) = conn.execute("SELECT max(snapshot_upto) FROM docs").fetchone()
            conn.execute("COMMIT")
            conn.execute("PRAGMA busy_timeout = 0")
        except sqlite3.Error as exc:
            raise open_error(self.path, exc) from exc
        return max(last_log or 0, last_upto or 0)

    def _migrate(self, conn: sqlite3.Connection, version: int) -> None:
        """Upgrade schema version 1 to 2 (add ``claims``) in one transaction."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_CLAIMS)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        logger.info(
            "relay storage %s upgraded from schema version %d to %d",
            self.path,
            version,
            SCHEMA_VERSION,
        )

    def _create(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"cannot create a relay store in {self.path}: {exc}") from exc
        logger.info("relay storage %s created (schema version %d)", self.path, SCHEMA_VERSION)

    async def close(self) -> None:
        """Let the calls already made finish, then close the file (checkpointing the WAL)
        and unlock it. Idempotent; every later call raises ``StoreError``."""
        async with self._life:
            if self._state == "closed":
                return
            was_open = self._state == "open"
            self._state = "closed"
            executor, self._executor = self._executor, None
            if executor is None:
                return
            try:
                await executor.run(self._close)
            finally:
                executor.shutdown()  # idle now (or finishing _close if cancelled)
        if was_open:
            logger.info("relay storage %s closed", self.path)

    def _close(self) -> None:
        with REGISTRY_LOCK:
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error as exc:
                    logger.warning("relay storage %s: closing failed: %s", self.path, exc)
            OpenFiles.release(self._key)
            self._key = None
            self._nums.clear()

    def __del__(self) -> None:
        if getattr(self, "_state", "closed") == "open":
            warnings.warn(f"unclosed relay storage {self.path}", ResourceWarning, stacklevel=2)
            self._state = "closed"
            # No call is running: a queued call would hold a reference to self.
            self._close()
            if self._executor is not None:
                self._executor.shutdown()
                self._executor = None

    # -- errors ---------------------------------------------------------------------------------

    def _read_error(self, action: str, exc: sqlite3.Error) -> StoreError:
        return self._logged(read_error(self.path, action, exc))

    def _write_error(self, action: str, exc: sqlite3.Error) -> StoreError:
        return self._logged(write_error(self.path, action, exc))

    @staticmethod
    def _logged(error: StoreError) -> StoreError:
        log = logger.error if isinstance(error, StoreCorruptError) else logger.warning
        log("relay storage: %s", error)
        return error

    def _corrupt(self, message: str) -> StoreCorruptError:
        logger.error("relay storage %s: %s", self.path, message)
        return StoreCorruptError(f"{self.path}: {message}")

    def _rollback(self, created: list[DocId]) -> None:
        """Undo a failed write: the transaction and the numbers of documents it created."""
        for doc_id in created:
            self._nums.pop(doc_id, None)
        conn = self._db()
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as exc:  # SQLite may have rolled back already
                logger.warning("relay storage %s: rollback failed: %s", self.path, exc)

    # -- reads ----------------------------------------------------------------------------------

    async def load(self, doc_id: DocId, *, follow: bool = False) -> StoredRoom:
        """Everything stored for ``doc_id``, every blob checked against its CRC-32
        (:class:`~crdtsync.errors.StoreCorruptError` on a mismatch); an empty room for
        an unknown document."""
        self._check_open()
        check_doc_id(doc_id)
        return await self._run(self._load, doc_id)

    def _load(self, doc_id: DocId) -> StoredRoom:
        conn = self._db()
        try:
            row = conn.execute(
                "SELECT num, snapshot_upto, snapshot_crc, snapshot FROM docs WHERE doc_id = ?",
                (doc_id,),
            ).fetchone()
            if row is None:
                return StoredRoom(doc_id, None, 0, [])
            num, upto, snapshot_crc, snapshot = row
            rows = conn.execute(
                "SELECT id, crc, data FROM log WHERE num = ? AND id > ? ORDER BY id", (num, upto)
            ).fetchall()
            claims = dict(
                conn.execute("SELECT client, owner FROM claims WHERE num = ?", (num,)).fetchall()
            )
        except sqlite3.Error as exc:
            raise self._read_error(f"loading {doc_id!r}", exc) from exc
        self._remember(doc_id, num)
        if snapshot is not None and (type(snapshot) is not bytes or _crc(snapshot) != snapshot_crc):
            raise self._corrupt(f"the snapshot of {doc_id!r} fails its checksum")
        updates = []
        for entry_id, crc, data in rows:
            if type(data) is not bytes or _crc(data) != crc:
                raise self._corrupt(f"log entry {entry_id} of {doc_id!r} fails its checksum")
            updates.append(StoredUpdate(entry_id, data))
        return StoredRoom(doc_id, snapshot, upto, updates, claims)

    async def documents(self) -> list[DocId]:
        """Every document with a log entry or a snapshot, sorted."""
        return await self._run(self._documents)

    def _documents(self) -> list[DocId]:
        try:
            rows = self._db().execute("SELECT doc_id FROM docs ORDER BY doc_id").fetchall()
        except sqlite3.Error as exc:
            raise self._read_error("listing documents", exc) from exc
        return [DocId(row[0]) for row in rows]

    def _remember(self, doc_id: DocId, num: int) -> None:
        if len(self._nums) >= _NUM_CACHE_LIMIT:
            self._nums.clear()
        self._nums[doc_id] = num

    def _num(self, conn: sqlite3.Connection, doc_id: DocId, created: list[DocId]) -> int:
        """The number of ``doc_id``; inside a write transaction, which creates it if new
        (and lists it in ``created``, to forget on rollback)."""
        row = conn.execute("SELECT num FROM docs WHERE doc_id = ?", (doc_id,)).fetchone()
        if row is not None:
            num: int = row[0]
        else:
            cursor = conn.execute("INSERT INTO docs (doc_id) VALUES (?)", (doc_id,))
            if cursor.lastrowid is None:  # pragma: no cover - SQLite always sets it here
                raise sqlite3.OperationalError("no row id for a new document")
            num = cursor.lastrowid
            created.append(doc_id)
        self._remember(doc_id, num)
        return num

    # -- writes ---------------------------------------------------------------------------------

    async def append(
        self, batch: Sequence[tuple[DocId, bytes]], claims: Sequence[Claim] = ()
    ) -> list[int]:
        """Append ``batch`` (and ``claims``) in one transaction (one ``executemany``)
        and return the ids assigned, in batch order. See
        :meth:`relay.storage.RelayStorage.append`."""
        self._check_open()
        checked = check_batch(batch)
        owners = check_claims(claims)
        if not checked and not owners:
            return []
        return await self._run(self._append, checked, owners)

    def _append(self, batch: list[tuple[DocId, bytes]], claims: list[Claim]) -> list[int]:
        conn = self._db()
        nums = self._nums
        created: list[DocId] = []
        first = entry_id = self._last_id + 1
        rows = []
        at = int(time.time() * 1000)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for doc_id, update in batch:
                num = nums.get(doc_id)
                if num is None:
                    num = self._num(conn, doc_id, created)
                rows.append((entry_id, num, _crc(update), update, at))
                entry_id += 1
            conn.executemany(_INSERT, rows)
            if claims:
                conn.executemany(
                    "INSERT OR IGNORE INTO claims (num, client, owner) VALUES (?, ?, ?)",
                    [
                        (nums.get(doc_id) or self._num(conn, doc_id, created), client, owner)
                        for doc_id, client, owner in claims
                    ],
                )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(created)
            raise self._write_error(f"storing {len(batch)} update(s)", exc) from exc
        self._last_id = entry_id - 1
        return list(range(first, entry_id))

    async def compact(self, doc_id: DocId, snapshot: bytes, upto: int) -> None:
        """Store ``snapshot`` and delete the log entries of ``doc_id`` up to ``upto``, in
        one transaction. See :meth:`relay.storage.RelayStorage.compact`."""
        self._check_open()
        doc_id, snapshot, upto = check_compact(doc_id, snapshot, upto)
        await self._run(self._compact, doc_id, snapshot, upto)

    def _compact(self, doc_id: DocId, snapshot: bytes, upto: int) -> None:
        conn = self._db()
        try:
            row = conn.execute(
                "SELECT num, snapshot_upto FROM docs WHERE doc_id = ?", (doc_id,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise self._read_error(f"compacting {doc_id!r}", exc) from exc
        problem = stale_compaction(doc_id, upto, 0 if row is None else row[1], self._last_id)
        if problem is not None:
            raise ValueError(problem)
        created: list[DocId] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            num = self._num(conn, doc_id, created) if row is None else row[0]
            conn.execute(
                "UPDATE docs SET snapshot_upto = ?1, snapshot_crc = ?2, snapshot = ?3, written_at "
                "= max(coalesce(written_at, 0), coalesce((SELECT max(at) FROM log "
                "WHERE num = ?4 AND id <= ?1), 0)) WHERE num = ?4",
                (upto, _crc(snapshot), snapshot, num),
            )
            conn.execute("DELETE FROM log WHERE num = ? AND id <= ?", (num, upto))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(created)
            raise self._write_error(f"compacting {doc_id!r}", exc) from exc
