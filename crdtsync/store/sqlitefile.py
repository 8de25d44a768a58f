"""What every crdtsync SQLite file shares: checks before opening, the registry of
files open in this process, and SQLite errors mapped to the store error tree.

The replica store (:mod:`crdtsync.store.sqlite`) and the relay's storage
(``relay.storage.sqlite``) both open existing files through these functions, so
neither ever writes to a file that is not its own (another kind of crdtsync
store, another SQLite database, random bytes): :func:`check_existing_file` and
:func:`validate_read_only` look first, on a read-only connection, and
:func:`describe` names what was found. The kinds are told apart by
``PRAGMA application_id``: each store kind registers its own here.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Final

from ..errors import StoreCorruptError, StoreError, StoreLockedError, StoreWriteError

__all__ = [
    "REGISTRY_LOCK",
    "RELAY_APPLICATION_ID",
    "REPLICA_APPLICATION_ID",
    "OpenFiles",
    "check_existing_file",
    "check_sqlite_header",
    "describe",
    "identify",
    "open_error",
    "read_error",
    "validate_read_only",
    "write_error",
]

logger = logging.getLogger("crdtsync.store")

SQLITE_MAGIC: Final = b"SQLite format 3\x00"

REPLICA_APPLICATION_ID: Final = 0
"""``PRAGMA application_id`` of a replica store (SQLite's default: the first
replica stores were written without one)."""
RELAY_APPLICATION_ID: Final = 0x63727379
"""``PRAGMA application_id`` of a relay store: ASCII "crsy"."""
_KINDS: Final = {
    REPLICA_APPLICATION_ID: ("a crdtsync replica store", frozenset({"meta", "docs", "log"})),
    RELAY_APPLICATION_ID: ("a crdtsync relay store", frozenset({"docs", "log"})),
}
"""Each kind of crdtsync file: its name, and tables that every version of it has."""

Identity = tuple[int, int, set[str]]
"""``(application_id, user_version, table names)`` of a database."""


def identify(conn: sqlite3.Connection) -> Identity:
    """``(application_id, user_version, table names)`` of an open database."""
    (app,) = conn.execute("PRAGMA application_id").fetchone()
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return app, version, tables


def describe(identity: Identity) -> str:
    """What kind of file ``identity`` is, for error messages."""
    app, _, tables = identity
    kind = _KINDS.get(app)
    if kind is not None and tables >= kind[1]:
        return kind[0]
    return f"application id {app:#x}, tables: {', '.join(sorted(tables)) or 'none'}"


def check_sqlite_header(path: Path) -> None:
    """Raise :class:`StoreCorruptError` unless ``path`` starts like a whole SQLite file.

    Reads the 100-byte header only; never writes.
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        header = fh.read(100)
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise StoreCorruptError(f"{path} is not a crdtsync store (not an SQLite database)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise StoreCorruptError(f"{path} has an invalid SQLite header (page size {page_size})")
    change_counter = int.from_bytes(header[24:28], "big")
    page_count = int.from_bytes(header[28:32], "big")
    valid_for = int.from_bytes(header[92:96], "big")
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        # A crash during a checkpoint can leave the file shorter than its header
        # says while the pages are still in the WAL: SQLite recovers it, and
        # quick_check judges the result.
        return
    if valid_for == change_counter and size < page_count * page_size:
        raise StoreCorruptError(
            f"{path} is truncated: {size} bytes where its header says {page_count * page_size}"
        )


def check_existing_file(path: Path) -> bool:
    """Checks of a store file that need no SQLite (never writes). True if ``path``
    holds a database; False if it is missing or empty (a store is created in it).

    Raises :class:`StoreCorruptError` for an empty file beside a non-empty WAL or
    journal, or a file that does not start like a whole SQLite database.
    """
    if not path.exists():
        return False
    if not path.is_file():
        raise StoreError(f"cannot open {path}: not a regular file")
    if path.stat().st_size == 0:
        for suffix in ("-wal", "-journal"):
            side = path.with_name(path.name + suffix)
            if side.exists() and side.stat().st_size > 0:
                raise StoreCorruptError(
                    f"{path} is empty but {side.name} holds data: refusing to "
                    "start a new store over it"
                )
        return False  # created and never written: start a new store in it
    check_sqlite_header(path)
    return True


def validate_read_only(path: Path, inspect: Callable[[sqlite3.Connection], bool]) -> None:
    """Look at an existing database on a read-only connection, never writing to it.

    ``inspect(conn)`` raises a :class:`StoreError` subclass unless the file is the
    expected kind of store, and returns False for an empty database (nothing more
    to check); then ``PRAGMA quick_check`` runs. SQLite errors become
    :class:`StoreLockedError` or :class:`StoreCorruptError`. A read-only
    connection never checkpoints a WAL into a file about to be refused, and side
    files it created are removed.
    """
    sides = [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]
    created = [side for side in sides if not side.exists()]
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=0)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}") from exc
    try:
        if not inspect(conn):
            return
        problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise StoreCorruptError(f"{path} is damaged: {'; '.join(problems[:3])}")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            raise StoreLockedError(f"{path} is in use by another process") from exc
        raise StoreCorruptError(f"{path} cannot be read: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise StoreCorruptError(f"{path} is damaged: {exc}") from exc
    finally:
        conn.close()
        for side in created:
            if side.exists() and (side.name.endswith("-shm") or side.stat().st_size == 0):
                side.unlink()


REGISTRY_LOCK: Final = threading.RLock()
"""Held while a store checks, opens or releases a file, so that two stores opening
the same new file at once cannot both pass the registry check (reentrant: a
garbage-collected store may release inside it)."""


class OpenFiles:
    """The crdtsync SQLite files open in this process, by (device, inode).

    SQLite's exclusive lock is a POSIX lock, and POSIX drops all of a process's
    locks on a file when *any* descriptor of that file is closed: a second open
    attempt from this process (replica store or relay storage) must be refused
    before it touches the file, or it would silently unlock the first.
    """

    _open: ClassVar[set[tuple[int, int]]] = set()

    @staticmethod
    def key(path: Path) -> tuple[int, int] | None:
        """The file's (device, inode), or None if it does not exist."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_dev, stat.st_ino)

    @classmethod
    def check(cls, path: Path) -> None:
        """Raise :class:`StoreLockedError` if ``path`` is open in this process."""
        key = cls.key(path)
        if key is not None and key in cls._open:
            raise StoreLockedError(f"{path} is in use: already open in this process")

    @classmethod
    def claim(cls, path: Path) -> tuple[int, int] | None:
        """Record ``path`` as open (after opening it); return the key to release."""
        key = cls.key(path)
        if key is not None:
            cls._open.add(key)
        return key

    @classmethod
    def release(cls, key: tuple[int, int] | None) -> None:
        """Forget a file :meth:`claim` recorded."""
        if key is not None:
            cls._open.discard(key)


def open_error(path: Path, exc: sqlite3.Error) -> StoreError:
    """A store error for SQLite's ``exc`` while opening (and locking) a store:
    :class:`StoreLockedError` if another process holds it, :class:`StoreCorruptError`
    if it cannot be read, :class:`StoreError` otherwise (the open may be retried)."""
    if isinstance(exc, sqlite3.OperationalError):
        if "locked" in str(exc):
            return StoreLockedError(f"{path} is in use by another process")
        return StoreError(f"cannot open {path}: {exc}")
    if isinstance(exc, sqlite3.DatabaseError):
        return StoreCorruptError(f"{path} cannot be read: {exc}")
    return StoreError(f"cannot open {path}: {exc}")


def read_error(path: Path, action: str, exc: sqlite3.Error) -> StoreError:
    """A store error for SQLite's ``exc`` while reading: damage is
    :class:`StoreCorruptError`, anything else (I/O, locks) :class:`StoreError`."""
    if isinstance(exc, sqlite3.ProgrammingError):
        return StoreError(f"{action} in {path}: {exc} (a store belongs to one thread)")
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return StoreCorruptError(f"{action} in {path} failed: {exc}")
    return StoreError(f"{action} in {path} failed: {exc}")


def write_error(path: Path, action: str, exc: sqlite3.Error) -> StoreError:
    """A store error for SQLite's ``exc`` while writing: damage is
    :class:`StoreCorruptError`, a lock :class:`StoreLockedError`, anything else
    (disk full, I/O) :class:`StoreWriteError` (the write can be retried)."""
    if getattr(exc, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        return StoreCorruptError(f"{action} in {path} failed: {exc}")
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return StoreLockedError(f"{action} in {path}: {exc}")
    if isinstance(exc, sqlite3.ProgrammingError):
        return StoreError(f"{action} in {path}: {exc} (a store belongs to one thread)")
    return StoreWriteError(f"{action} in {path} failed: {exc}")
