"""The replica store's SQLite schema: its versions, creation and in-place migration.

Layout (schema version 2, kept in ``PRAGMA user_version``)::

    meta(key, value)                       replica id, creation time, session, synced_at
    docs(num, doc_id, client_id, snapshot, snapshot_crc, snapshot_upto, acked_seq, seq_floor,
         opened_at, fetched_at, synced_at, rotate)
    log(id, kind, seq, data, crc)          id = num << 40 | n

Version 2 (offline apps) added the cache bookkeeping columns of ``docs``: when
a document was last opened, last fetched from a relay and last fully
acknowledged (seconds since the epoch), and ``rotate``: the document must write
under a new client id before its next change (set for every document after an
unclean shutdown). A version-1 store is migrated in place when opened, in one
transaction; existing documents count as opened at migration time, so none
looks unused the moment the app upgrades.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ..errors import StoreCorruptError, StoreVersionError

__all__ = ["ID_BITS", "SCHEMA_VERSION", "TABLES", "DocRow", "check_schema", "create", "migrate"]

SCHEMA_VERSION: Final = 2
ID_BITS: Final = 40

_SCHEMA_V1: Final = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE docs (
    num          INTEGER PRIMARY KEY,
    doc_id       TEXT NOT NULL UNIQUE,
    client_id    INTEGER NOT NULL,
    snapshot     BLOB NOT NULL,
    snapshot_crc INTEGER NOT NULL,
    snapshot_upto INTEGER NOT NULL DEFAULT 0,
    acked_seq    INTEGER NOT NULL DEFAULT 0,
    seq_floor    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE log (
    id   INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,
    seq  INTEGER,
    data BLOB NOT NULL,
    crc  INTEGER NOT NULL
);
"""
_V2: Final = (
    "ALTER TABLE docs ADD COLUMN opened_at REAL",
    "ALTER TABLE docs ADD COLUMN fetched_at REAL",
    "ALTER TABLE docs ADD COLUMN synced_at REAL",
    "ALTER TABLE docs ADD COLUMN rotate INTEGER NOT NULL DEFAULT 0",
)
TABLES: Final = frozenset({"meta", "docs", "log"})


@dataclass(slots=True)
class DocRow:
    """What the store keeps in memory about one document."""

    num: int
    client_id: int
    acked_seq: int
    last_seq: int
    next_n: int
    rotate: bool = False
    first_id: int = 0
    last_id: int = 0

    def __post_init__(self) -> None:
        self.first_id = self.num << ID_BITS
        self.last_id = self.first_id | ((1 << ID_BITS) - 1)


def create(conn: sqlite3.Connection) -> None:
    """Create every table of the newest schema (inside the caller's transaction)."""
    for statement in _SCHEMA_V1.split(";"):
        if statement.strip():
            conn.execute(statement)
    _upgrade(conn, 1, now=None)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _upgrade(conn: sqlite3.Connection, version: int, now: float | None) -> None:
    if version < 2:
        for statement in _V2:
            conn.execute(statement)
        if now is not None:
            conn.execute("UPDATE docs SET opened_at = ?", (now,))


def migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a store of an older schema ``version`` to :data:`SCHEMA_VERSION` in one
    transaction (nothing changes if it fails). Raises ``sqlite3.Error``."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        _upgrade(conn, version, now=time.time())
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def check_schema(path: Path, version: int, tables: set[str]) -> None:
    """Raise unless ``version`` and ``tables`` are a replica store this code reads
    (the current version, or an older one it migrates)."""
    if not 1 <= version <= SCHEMA_VERSION:
        if version == 0:
            raise StoreCorruptError(
                f"{path} is an SQLite database but not a crdtsync store "
                f"(tables: {', '.join(sorted(tables))})"
            )
        raise StoreVersionError(
            f"{path} has store schema version {version}; this crdtsync "
            f"reads versions 1 to {SCHEMA_VERSION}"
        )
    if not tables >= TABLES:
        raise StoreCorruptError(f"{path} is missing tables: {', '.join(sorted(TABLES - tables))}")
