"""SQLiteStore against the shared store contract, plus SQLite-specific settings."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from crdtsync import StoreError
from crdtsync.store import SCHEMA_VERSION, SQLiteStore, Store
from crdtsync.store.sqlitefile import OpenFiles

from .store_contract import StoreContract


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        store = SQLiteStore(tmp_path / "store.db")
        yield store
        store.close()

    def reopen(self, store: Store) -> Store:
        assert isinstance(store, SQLiteStore)
        store.close()
        return SQLiteStore(store.path, store.durability)

    def crash_reopen(self, store: Store) -> Store:
        """As a killed process: the connection goes without the clean-close marker."""
        assert isinstance(store, SQLiteStore)
        conn, store._conn = store._conn, None
        assert conn is not None
        conn.close()
        OpenFiles.release(store._key)
        return SQLiteStore(store.path, store.durability)


@pytest.mark.parametrize(("durability", "synchronous"), [("normal", 1), ("full", 2)])
def test_file_settings(tmp_path: Path, durability: str, synchronous: int) -> None:
    """WAL, synchronous per durability, schema version in user_version, and the WAL
    checkpointed every 8 MiB of 1 KiB pages (two fsyncs per 8,192 one-edit commits)."""
    path = tmp_path / "s.db"
    store = SQLiteStore(path, durability)  # type: ignore[arg-type]
    try:
        conn = store._conn
        assert conn is not None
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == synchronous
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 8192
    finally:
        store.close()
    # After a clean close the file is a plain SQLite database another tool can read.
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a directory"):
        SQLiteStore(tmp_path / "nope" / "s.db")


def test_bad_durability(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="durability"):
        SQLiteStore(tmp_path / "s.db", "memory")  # type: ignore[arg-type]


def test_unclosed_store_warns(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    with pytest.warns(ResourceWarning, match="unclosed store"):
        store.__del__()
    assert store._conn is None


V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE docs (num INTEGER PRIMARY KEY, doc_id TEXT NOT NULL UNIQUE,
    client_id INTEGER NOT NULL, snapshot BLOB NOT NULL, snapshot_crc INTEGER NOT NULL,
    snapshot_upto INTEGER NOT NULL DEFAULT 0, acked_seq INTEGER NOT NULL DEFAULT 0,
    seq_floor INTEGER NOT NULL DEFAULT 0);
CREATE TABLE log (id INTEGER PRIMARY KEY, kind INTEGER NOT NULL, seq INTEGER,
    data BLOB NOT NULL, crc INTEGER NOT NULL);
"""


def test_a_version_1_store_is_migrated_in_place(tmp_path: Path) -> None:
    """A store written by the previous schema (version 1, as crdtsync 0.1 wrote it)
    opens: its documents, outbox and client ids are intact, the cache columns are
    added in place, and nothing looks unused right after the upgrade."""
    import time  # noqa: PLC0415
    import zlib  # noqa: PLC0415

    import pycrdt  # noqa: PLC0415

    from crdtsync import Replica  # noqa: PLC0415

    doc = pycrdt.Doc(client_id=4242)
    text = doc.get("t", type=pycrdt.Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    text += "hello"
    text += " world"
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("INSERT INTO meta VALUES ('replica_id', 'r-old'), ('session', 'closed')")
    conn.execute(
        "INSERT INTO docs(num, doc_id, client_id, snapshot, snapshot_crc)"
        " VALUES (1, 'd', 4242, ?, ?)",
        (b"\x00\x00", zlib.crc32(b"\x00\x00")),
    )
    for n, update in enumerate(updates, 1):
        conn.execute(
            "INSERT INTO log VALUES (?, 0, ?, ?, ?)", ((1 << 40) | n, n, update, zlib.crc32(update))
        )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()

    before = time.time()
    with Replica(path) as replica:
        assert replica.replica_id == "r-old"
        assert replica.pending("d") == 2 and replica.client_id("d") == 4242
        assert str(replica.open("d").get("t", type=pycrdt.Text)) == "hello world"
        usage = replica.store.usage()
        assert usage[0].opened_at is not None and usage[0].opened_at >= before
        assert replica.evict(unused_for=__import__("datetime").timedelta(seconds=1)) == []
    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = {row[1] for row in check.execute("PRAGMA table_info(docs)")}
        assert {"opened_at", "fetched_at", "synced_at", "rotate"} <= columns
    check.close()
