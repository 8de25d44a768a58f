"""A damaged, foreign, locked or full SQLite store fails clearly and is never written to.

Every case starts from a real store written by a :class:`Replica` and closed cleanly,
damages the file, then checks the error class, that the message names the file and
the problem, and that the file's bytes are unchanged afterwards.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from crdtsync import (
    CrdtsyncError,
    Replica,
    SQLiteStore,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    StoreVersionError,
    StoreWriteError,
)
from crdtsync.store import SCHEMA_VERSION

SQLITE_MAGIC = b"SQLite format 3\x00"
MARKER = "MARKER-0123456789-abcdefghij-MARKER"
Contents = dict[str, tuple[dict[str, Any] | None, str]]

# A child process that tries to open the store and says how that went.
OPEN_CHILD = r"""
import sys

from crdtsync import Replica, StoreError

try:
    replica = Replica(sys.argv[1])
except StoreError as exc:
    print(f"refused {type(exc).__name__}: {exc}")
else:
    replica.close()
    print("opened")
"""


# -- helpers --------------------------------------------------------------------------


def sha256(path: Path) -> str:
    """The SHA-256 of the file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stored_rows(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every stored document and log row, read without writing (the session marker in
    ``meta`` and the time a document was last opened legitimately change when a store
    that opens fine is opened)."""
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        docs = conn.execute(
            "SELECT num, doc_id, client_id, snapshot, snapshot_crc, snapshot_upto, acked_seq,"
            " seq_floor, fetched_at, synced_at, rotate FROM docs ORDER BY num"
        ).fetchall()
        log = conn.execute("SELECT * FROM log ORDER BY id").fetchall()
    finally:
        conn.close()
    return docs, log


def listing(path: Path) -> list[str]:
    """The names in the file's directory (to see -wal, -shm or -journal files appear)."""
    return sorted(os.listdir(path.parent))


def roots(doc: pycrdt.Doc[Any]) -> tuple[pycrdt.Map[Any], pycrdt.Text]:
    """The document's map and text."""
    return doc.get("m", type=pycrdt.Map), doc.get("t", type=pycrdt.Text)


def write_store(path: Path, docs: int = 3, edits: int = 20, *, compact: str = "") -> Contents:
    """Write a store with ``docs`` documents of ``edits`` edits each, close it cleanly.

    ``compact`` names a document folded into its snapshot before closing.
    Returns every document's map and text, as written.
    """
    with Replica(path) as replica:
        for d in range(docs):
            m, text = roots(replica.open(f"doc{d}"))
            for i in range(edits):
                if i % 2:
                    text.insert(len(text), f"w{i} ")
                else:
                    m[f"k{i}"] = f"v{d}-{i}"
        if compact:
            replica.compact(compact)
        contents = read_contents(replica)
    assert listing(path) == [path.name], "a clean close leaves no -wal file"
    return contents


def read_contents(replica: Replica) -> Contents:
    """Every document's map and text."""
    contents: Contents = {}
    for doc_id in replica.documents():
        m, text = roots(replica.open(doc_id))
        contents[doc_id] = (m.to_py(), str(text))
    return contents


def assert_refused(path: Path, error: type[StoreError], *words: str) -> StoreError:
    """``Replica(path)`` raises ``error`` naming the path and ``words``; the file and its
    directory are left exactly as they were."""
    digest, names = sha256(path), listing(path)
    with pytest.raises(error) as info:
        Replica(path)
    assert isinstance(info.value, StoreError)
    assert isinstance(info.value, CrdtsyncError)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message
    assert sha256(path) == digest, "the file was modified"
    assert listing(path) == names, "files appeared next to the store"
    return info.value


def open_in_child(path: Path) -> str:
    """Try ``Replica(path)`` in a fresh process; return its one-line report."""
    done = subprocess.run(
        [sys.executable, "-c", OPEN_CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a closed store spanning many pages (2,000 edits over 4 documents)."""
    path = tmp_path_factory.mktemp("big") / "big.db"
    write_store(path, docs=4, edits=500)
    data = path.read_bytes()
    page_size = int.from_bytes(data[16:18], "big")
    assert len(data) // page_size > 50
    return data


# -- not a store at all ----------------------------------------------------------------


@pytest.mark.parametrize("size", [10, 4096, 100 * 1024])
def test_random_bytes_are_refused_untouched(tmp_path: Path, size: int) -> None:
    """A store overwritten with random bytes raises StoreCorruptError and stays as it is."""
    path = tmp_path / "store.db"
    write_store(path)
    path.write_bytes(b"\x00" + os.urandom(size - 1))  # a leading 0 byte: never SQLite magic
    assert_refused(path, StoreCorruptError, "not an SQLite database")


def test_empty_file_is_a_new_store(tmp_path: Path) -> None:
    """A 0-byte file is treated as a new store: it is initialised, not refused.

    (So a store truncated to 0 bytes comes back empty, under a new replica id.)
    """
    path = tmp_path / "store.db"
    write_store(path)
    with Replica(path) as replica:
        old_id = replica.replica_id
    path.write_bytes(b"")

    with Replica(path) as replica:
        assert replica.documents() == []
        assert replica.replica_id != old_id
        _, text = roots(replica.open("new"))
        text.insert(0, "hello")
    assert path.read_bytes().startswith(SQLITE_MAGIC)
    with Replica(path) as replica:
        assert replica.documents() == ["new"]
        assert str(roots(replica.open("new"))[1]) == "hello"


@pytest.mark.parametrize(
    ("keep", "problem"),
    [("half", "is truncated"), (100, "is truncated"), (99, "not an SQLite database")],
)
def test_truncated_store_is_refused_untouched(
    tmp_path: Path, big_store: bytes, keep: int | str, problem: str
) -> None:
    """A store cut short (half its pages, only its 100-byte header, less than that)
    raises StoreCorruptError and is not modified."""
    path = tmp_path / "store.db"
    size = len(big_store) // 2 if keep == "half" else int(keep)
    path.write_bytes(big_store[:size])
    assert_refused(path, StoreCorruptError, problem)


# -- another schema, another application --------------------------------------------------


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, 99])
def test_unknown_schema_version_is_refused_untouched(tmp_path: Path, version: int) -> None:
    """A store written with another schema version raises StoreVersionError, unmodified;
    the data is all still there once the version is set back."""
    path = tmp_path / "store.db"
    contents = write_store(path)
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    assert listing(path) == [path.name]

    assert_refused(path, StoreVersionError, f"version {version}", f"1 to {SCHEMA_VERSION}")

    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.close()
    with Replica(path) as replica:
        assert read_contents(replica) == contents


HOT_WAL_CHILD = "\n".join(
    [
        "import os, sys, pycrdt",
        "from crdtsync import Replica",
        "replica = Replica(sys.argv[1])",
        "text = replica.open('doc').get('t', type=pycrdt.Text)",
        "for i in range(20):",
        "    text.insert(len(text), 'x')",
        "if len(sys.argv) > 2:  # a later schema version, written into the WAL only",
        "    replica.store._conn.execute('PRAGMA user_version = ' + sys.argv[2])",
        "os._exit(0)  # killed: the changes are in the -wal, not in the main file",
    ]
)


def crash_with_hot_wal(path: Path, *extra: str) -> None:
    """A child writes through a Replica and dies without closing: a hot WAL is left."""
    subprocess.run([sys.executable, "-c", HOT_WAL_CHILD, str(path), *extra], check=True, timeout=60)
    assert Path(f"{path}-wal").stat().st_size > 0


def test_empty_main_file_beside_a_wal_is_refused(tmp_path: Path) -> None:
    """An emptied main file next to a -wal holding the changes is not a new store:
    starting one would destroy the WAL."""
    path = tmp_path / "store.db"
    crash_with_hot_wal(path)
    path.write_bytes(b"")
    wal = Path(f"{path}-wal").read_bytes()
    with pytest.raises(StoreCorruptError, match=r"empty but store\.db-wal holds data"):
        Replica(path)
    assert path.read_bytes() == b""
    assert Path(f"{path}-wal").read_bytes() == wal


def test_refusal_with_a_hot_wal_leaves_both_files_untouched(tmp_path: Path) -> None:
    """Validation reads through a read-only connection: refusing a store never
    checkpoints its WAL into the main file."""
    path = tmp_path / "store.db"
    crash_with_hot_wal(path, "7")
    digest, wal = sha256(path), Path(f"{path}-wal").read_bytes()
    with pytest.raises(StoreVersionError, match="version 7"):
        Replica(path)
    assert sha256(path) == digest
    assert Path(f"{path}-wal").read_bytes() == wal
    assert listing(path) == ["store.db", "store.db-wal"]


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
@pytest.mark.parametrize(
    ("user_version", "problem"), [(0, "not a crdtsync store"), (1, "missing tables")]
)
def test_foreign_sqlite_database_is_refused_untouched(
    tmp_path: Path, journal_mode: str, user_version: int, problem: str
) -> None:
    """Another application's SQLite database raises StoreCorruptError and is left as is."""
    path = tmp_path / "notes.db"
    rows = [(i, f"note {i}") for i in range(200)]
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA journal_mode = {journal_mode}")
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany("INSERT INTO notes VALUES (?, ?)", rows)
        conn.execute(f"PRAGMA user_version = {user_version}")
    conn.close()

    assert_refused(path, StoreCorruptError, problem)

    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT id, body FROM notes ORDER BY id").fetchall() == rows
    conn.close()


# -- damage inside the store ----------------------------------------------------------------


def _flip_blob(path: Path, doc_id: str, target: str) -> None:
    """Flip one bit of a stored blob of ``doc_id`` with sqlite3, leaving its CRC as it was.

    ``target``: "log" (its newest log entry), "snapshot", or "outbox" (its first log
    entry, which a compaction folded into the snapshot but kept for the outbox).
    """
    with sqlite3.connect(path) as conn:
        (num,) = conn.execute("SELECT num FROM docs WHERE doc_id = ?", (doc_id,)).fetchone()
        if target == "snapshot":
            data, crc = conn.execute(
                "SELECT snapshot, snapshot_crc FROM docs WHERE num = ?", (num,)
            ).fetchone()
            assert len(data) > 100, "the document was compacted into its snapshot"
        else:
            order = "DESC" if target == "log" else "ASC"
            entry_id, data, crc = conn.execute(
                f"SELECT id, data, crc FROM log WHERE id >> 40 = ? ORDER BY id {order}", (num,)
            ).fetchone()
        assert zlib.crc32(data) == crc
        damaged = bytearray(data)
        damaged[len(damaged) // 2] ^= 0x01
        if target == "snapshot":
            conn.execute("UPDATE docs SET snapshot = ? WHERE num = ?", (bytes(damaged), num))
        else:
            conn.execute("UPDATE log SET data = ? WHERE id = ?", (bytes(damaged), entry_id))
    conn.close()


@pytest.mark.parametrize(("target", "doc_id"), [("log", "doc2"), ("snapshot", "doc1")])
def test_flipped_blob_fails_its_checksum(tmp_path: Path, target: str, doc_id: str) -> None:
    """A blob changed behind the store's back (CRC not updated) makes opening that
    document raise StoreCorruptError naming it; the other documents open intact and
    nothing is written."""
    path = tmp_path / "store.db"
    contents = write_store(path, compact="doc1")
    _flip_blob(path, doc_id, target)
    rows = stored_rows(path)

    with Replica(path) as replica:
        assert replica.documents() == ["doc0", "doc1", "doc2"]
        for _ in range(2):  # still refused the second time: never re-created empty
            with pytest.raises(StoreCorruptError) as info:
                replica.open(doc_id)
            assert str(path) in str(info.value)
            assert repr(doc_id) in str(info.value)
            assert "checksum" in str(info.value)
        for other in sorted(set(contents) - {doc_id}):
            m, text = roots(replica.open(other))
            assert (m.to_py(), str(text)) == contents[other]
    assert stored_rows(path) == rows


def test_flipped_outbox_entry_is_never_sent(tmp_path: Path) -> None:
    """A damaged outbox entry already folded into the snapshot does not stop the document
    from opening, but reading the outbox (what the sync layer sends) raises
    StoreCorruptError instead of handing out the damaged update."""
    path = tmp_path / "store.db"
    contents = write_store(path, compact="doc1")
    _flip_blob(path, "doc1", "outbox")
    rows = stored_rows(path)

    with Replica(path) as replica:
        m, text = roots(replica.open("doc1"))
        assert (m.to_py(), str(text)) == contents["doc1"]
        with pytest.raises(StoreCorruptError, match="outbox entry 1 of 'doc1' fails its checksum"):
            replica.outbox("doc1")
        with pytest.raises(StoreCorruptError):
            replica.pending_batches("doc1")
        assert len(replica.outbox("doc0")) == 20
    assert stored_rows(path) == rows


def _marker_page(data: bytes) -> tuple[int, int, int]:
    """``(offset of the marker, page size, page number)`` of the one copy of MARKER."""
    marker = MARKER.encode()
    assert data.count(marker) == 1
    offset = data.index(marker)
    page_size = int.from_bytes(data[16:18], "big")
    return offset, page_size, offset // page_size


def test_flipped_byte_in_stored_update_is_caught_by_crc(tmp_path: Path) -> None:
    """A byte flipped on disk inside a stored update (SQLite sees a valid page) is caught
    by the entry's CRC when the document is opened; the file is not modified."""
    path = tmp_path / "store.db"
    contents = write_store(path)
    with Replica(path) as replica:
        roots(replica.open("doc1"))[1].insert(0, MARKER)
    data = bytearray(path.read_bytes())
    offset, _, _ = _marker_page(bytes(data))
    data[offset + 10] ^= 0x01
    path.write_bytes(bytes(data))
    rows = stored_rows(path)

    with Replica(path) as replica:
        with pytest.raises(StoreCorruptError, match="'doc1' fails its checksum"):
            replica.open("doc1")
        m, text = roots(replica.open("doc0"))
        assert (m.to_py(), str(text)) == contents["doc0"]
    assert stored_rows(path) == rows


def test_flipped_page_header_is_caught_at_open(tmp_path: Path) -> None:
    """A log-table page whose B-tree header is damaged fails SQLite's quick_check when
    the store is opened: StoreCorruptError, and the file is not modified."""
    path = tmp_path / "store.db"
    write_store(path)
    with Replica(path) as replica:
        roots(replica.open("doc1"))[1].insert(0, MARKER)
    data = bytearray(path.read_bytes())
    _, page_size, page = _marker_page(bytes(data))
    assert page > 0
    assert data[page * page_size] == 0x0D, "the marker sits in a table leaf page"
    data[page * page_size] = 0x00  # not a valid B-tree page type
    path.write_bytes(bytes(data))

    assert_refused(path, StoreCorruptError, "damaged")


# -- locking -----------------------------------------------------------------------------------


def test_second_replica_in_same_process_is_refused(tmp_path: Path) -> None:
    """While a Replica has the store open, a second Replica on it raises StoreLockedError;
    the first keeps working, and after it closes the store opens with all its data."""
    path = tmp_path / "store.db"
    contents = write_store(path)
    with Replica(path) as first:
        with pytest.raises(StoreLockedError) as info:
            Replica(path)
        assert isinstance(info.value, StoreError)
        assert str(path) in str(info.value)
        assert "in use" in str(info.value)
        _, text = roots(first.open("doc0"))
        text.insert(len(text), "!")
        contents["doc0"] = (contents["doc0"][0], contents["doc0"][1] + "!")
    with Replica(path) as again:
        assert read_contents(again) == contents


def test_other_process_is_refused_while_open(tmp_path: Path) -> None:
    """Another process cannot open a store a Replica has open (StoreLockedError); once
    it is closed, that process can, and the data is intact."""
    path = tmp_path / "store.db"
    contents = write_store(path)
    with Replica(path) as first:
        first.open("doc0")
        report = open_in_child(path)
        assert report.startswith("refused StoreLockedError:"), report
        assert str(path) in report
    assert open_in_child(path) == "opened"
    with Replica(path) as again:
        assert read_contents(again) == contents


def test_lock_survives_a_refused_second_open(tmp_path: Path) -> None:
    """A refused second Replica in the same process must not release the first one's lock:
    another process must still be refused (two writers would reuse one client id)."""
    path = tmp_path / "store.db"
    write_store(path)
    with Replica(path) as first:
        first.open("doc0")
        with pytest.raises(StoreLockedError):
            Replica(path)
        report = open_in_child(path)
        assert report.startswith("refused StoreLockedError:"), report


# -- disk full ---------------------------------------------------------------------------------


def _fill_up(replica: Replica, text: pycrdt.Text, room: int) -> tuple[int, str]:
    """Limit the file to ``room`` more pages, then insert 3,000 characters at a time
    until a write fails. Returns (changes stored before the failure, text then)."""
    store = replica.store
    assert isinstance(store, SQLiteStore)
    conn = store._conn
    assert conn is not None
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages + room}")
    for n in range(100):
        before = str(text)
        stored = replica.pending("doc")
        try:
            text.insert(len(text), f"{n:03}" + "y" * 2997)
        except ExceptionGroup as group:
            assert group.subgroup(StoreWriteError) is not None
            assert all(isinstance(exc, StoreWriteError) for exc in group.exceptions)
            message = str(group.exceptions[0])
            assert str(store.path) in message
            assert "full" in message
            return stored, before
    pytest.fail("the size limit was never reached")


def _lift_limit(replica: Replica) -> None:
    """Give the file room again."""
    store = replica.store
    assert isinstance(store, SQLiteStore)
    assert store._conn is not None
    store._conn.execute("PRAGMA max_page_count = 1000000")


@pytest.mark.parametrize("recover", ["flush", "next_edit"])
def test_disk_full_keeps_the_change_and_recovers(tmp_path: Path, recover: str) -> None:
    """A write that fails for lack of space raises StoreWriteError (in pycrdt's
    ExceptionGroup), keeps the change in memory and counts it as pending; once there
    is room, flush() or the next edit stores it, and a reopen has every change."""
    path = tmp_path / "store.db"
    with Replica(path, compact_min_bytes=1 << 40) as replica:
        text = roots(replica.open("doc"))[1]
        text.insert(0, "start;")
        stored, _ = _fill_up(replica, text, room=20)
        assert stored >= 2
        assert replica.pending("doc") == stored + 1
        assert [e.seq for e in replica.outbox("doc")] == list(range(1, stored + 1))

        _lift_limit(replica)
        if recover == "flush":
            replica.flush()
            expected_pending = stored + 1
        else:
            text.insert(len(text), "after;")
            expected_pending = stored + 2
        assert replica.pending("doc") == expected_pending
        assert [e.seq for e in replica.outbox("doc")] == list(range(1, expected_pending + 1))
        final = str(text)

    with Replica(path) as replica:
        assert str(roots(replica.open("doc"))[1]) == final
        assert replica.pending("doc") == expected_pending


def test_disk_full_loses_nothing_already_stored(tmp_path: Path) -> None:
    """After a write failed for lack of space, closing and reopening finds every change
    stored before the failure, undamaged, and the outbox without gaps."""
    path = tmp_path / "store.db"
    replica = Replica(path, compact_min_bytes=1 << 40)
    try:
        text = roots(replica.open("doc"))[1]
        text.insert(0, "start;")
        stored, before = _fill_up(replica, text, room=20)
        # While still full, the next edit fails too; both changes are kept in memory.
        with pytest.raises(ExceptionGroup) as info:
            text.insert(len(text), "more;")
        assert info.value.subgroup(StoreWriteError) is not None
        assert replica.pending("doc") == stored + 2
    finally:
        replica.close()  # logs the unsaved changes: they never reached the store

    with Replica(path) as reopened:
        assert str(roots(reopened.open("doc"))[1]) == before
        assert [e.seq for e in reopened.outbox("doc")] == list(range(1, stored + 1))


def test_failed_compaction_does_not_fail_a_stored_edit(tmp_path: Path) -> None:
    """When the change is stored but the automatic compaction after it has no room, the
    edit succeeds: StoreWriteError means 'not stored', so it must not be raised."""
    path = tmp_path / "store.db"
    with Replica(path, compact_min_bytes=1 << 40) as replica:
        text = roots(replica.open("doc"))[1]
        for n in range(6):
            text.insert(len(text), f"{n:03}" + "y" * 2997)
        store = replica.store
        assert isinstance(store, SQLiteStore)
        assert store._conn is not None
        (pages,) = store._conn.execute("PRAGMA page_count").fetchone()
        # Room for a small append, not for an 18 KB snapshot.
        store._conn.execute(f"PRAGMA max_page_count = {pages + 4}")
        replica.compact_min_bytes = 1000
        text.insert(len(text), "z")
        assert [e.seq for e in replica.outbox("doc")] == list(range(1, 8))


def test_document_opens_on_a_full_disk(tmp_path: Path) -> None:
    """Opening a stored document only reads: it works even when the disk is full."""
    path = tmp_path / "store.db"
    with Replica(path, compact_min_bytes=1 << 40) as replica:
        text = roots(replica.open("doc"))[1]
        for n in range(10):
            text.insert(len(text), f"{n:03}" + "y" * 2997)
        expected = str(text)
    with Replica(path, compact_min_bytes=8000) as replica:
        store = replica.store
        assert isinstance(store, SQLiteStore)
        assert store._conn is not None
        (pages,) = store._conn.execute("PRAGMA page_count").fetchone()
        store._conn.execute(f"PRAGMA max_page_count = {pages}")
        assert str(roots(replica.open("doc"))[1]) == expected
