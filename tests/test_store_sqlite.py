"""SQLiteStore against the shared store contract, plus SQLite-specific settings."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from crdtsync import StoreError
from crdtsync.store import SCHEMA_VERSION, SQLiteStore, Store

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


@pytest.mark.parametrize(("durability", "synchronous"), [("normal", 1), ("full", 2)])
def test_file_settings(tmp_path: Path, durability: str, synchronous: int) -> None:
    """WAL, synchronous per durability, schema version in user_version."""
    path = tmp_path / "s.db"
    store = SQLiteStore(path, durability)  # type: ignore[arg-type]
    try:
        conn = store._conn
        assert conn is not None
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == synchronous
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
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
