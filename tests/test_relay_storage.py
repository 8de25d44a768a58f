"""relay.storage: the contract for the memory and SQLite backends, then what only the
SQLite file has (settings, URLs, damaged or foreign files, locking, full disk,
SIGKILL), and a state machine checking that both backends agree call for call."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pycrdt
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from crdtsync import Replica
from crdtsync.errors import (
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    StoreVersionError,
)
from crdtsync.ids import DocId
from relay.storage import (
    MemoryData,
    MemoryStorage,
    RelayStorage,
    SQLiteStorage,
    StoredRoom,
    open_storage,
)
from relay.storage.sqlite import APPLICATION_ID, SCHEMA_VERSION

from .relay_storage_contract import A, B, C, RelayStorageContract, StorageFactory, u
from .test_crash import spawn

ROOT = Path(__file__).resolve().parent.parent
MARKER = b"MARKER-0123456789-abcdefghij-MARKER"


# -- the contract ------------------------------------------------------------------------------


class TestMemoryStorage(RelayStorageContract):
    @pytest.fixture
    def make_storage(self) -> StorageFactory:
        data = MemoryData()
        return lambda: MemoryStorage(data)

    async def fill_disk(self, storage: RelayStorage) -> None:
        assert isinstance(storage, MemoryStorage)
        storage.data.disk_full = True

    async def free_disk(self, storage: RelayStorage) -> None:
        assert isinstance(storage, MemoryStorage)
        storage.data.disk_full = False

    async def test_not_durable(self, storage: RelayStorage) -> None:
        assert storage.durable is False
        assert storage.url == "memory://"

    async def test_data_is_used_by_one_open_storage_at_a_time(self, storage: RelayStorage) -> None:
        assert isinstance(storage, MemoryStorage)
        second = MemoryStorage(storage.data)
        with pytest.raises(StoreLockedError, match="in use"):
            await second.open()
        await storage.close()
        async with second:
            assert await second.documents() == []


class TestSQLiteStorage(RelayStorageContract):
    @pytest.fixture
    def make_storage(self, tmp_path: Path) -> StorageFactory:
        path = tmp_path / "relay.db"
        return lambda: SQLiteStorage(path)

    async def fill_disk(self, storage: RelayStorage) -> None:
        """Cap the file at its current size (``PRAGMA max_page_count``)."""
        assert isinstance(storage, SQLiteStorage)
        self._max_pages = await query(storage, "PRAGMA max_page_count")
        pages = await query(storage, "PRAGMA page_count")
        await query(storage, f"PRAGMA max_page_count = {pages}")

    async def free_disk(self, storage: RelayStorage) -> None:
        assert isinstance(storage, SQLiteStorage)
        await query(storage, f"PRAGMA max_page_count = {self._max_pages}")

    async def test_durable(self, storage: RelayStorage) -> None:
        assert storage.durable is True


async def query(storage: SQLiteStorage, sql: str) -> object:
    """The first column of the first row of ``sql``, run on the storage's worker thread."""

    def run() -> object:
        row = storage._db().execute(sql).fetchone()
        return None if row is None else row[0]

    return await storage._run(run)


# -- helpers -----------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    """The SHA-256 of the file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(path: Path) -> list[str]:
    """The names in the file's directory (to see -wal, -shm or -journal files appear)."""
    return sorted(os.listdir(path.parent))


async def write_relay_store(path: Path) -> list[int]:
    """A closed relay store with a log on A and B and a snapshot on C; returns the ids."""
    async with SQLiteStorage(path) as storage:
        ids = await storage.append([(A, u(1)), (B, u(2)), (C, u(3))])
        await storage.compact(C, b"snapshot", ids[2])
    return ids


async def assert_refused(path: Path, error: type[StoreError], *words: str) -> StoreError:
    """Opening ``path`` raises ``error`` naming the path and ``words``; the file and its
    directory are left exactly as they were, and the storage can still be closed."""
    digest, names = sha256(path), listing(path)
    storage = SQLiteStorage(path)
    with pytest.raises(error) as info:
        await storage.open()
    await storage.close()
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message
    assert sha256(path) == digest, "the file was modified"
    assert listing(path) == names, "files appeared next to the store"
    return info.value


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("synchronous", "level"), [("full", 2), ("normal", 1)])
async def test_file_settings(tmp_path: Path, synchronous: str, level: int) -> None:
    """WAL, PRAGMA synchronous as asked, our application_id and schema version; after a
    clean close no side file is left."""
    path = tmp_path / "relay.db"
    storage = open_storage(f"sqlite:///{path}?synchronous={synchronous}")
    assert isinstance(storage, SQLiteStorage)
    async with storage:
        assert await query(storage, "PRAGMA synchronous") == level
        assert await query(storage, "PRAGMA journal_mode") == "wal"
        assert await query(storage, "PRAGMA locking_mode") == "exclusive"
        assert await query(storage, "PRAGMA application_id") == APPLICATION_ID
        assert await query(storage, "PRAGMA user_version") == SCHEMA_VERSION
    assert listing(path) == ["relay.db"]


async def test_sqlite_runs_on_the_worker_thread_only(tmp_path: Path) -> None:
    """Every SQL statement runs on the storage's one worker thread, never on the loop's."""
    threads: set[str] = set()
    async with SQLiteStorage(tmp_path / "relay.db") as storage:

        def trace() -> None:
            storage._db().set_trace_callback(lambda _: threads.add(threading.current_thread().name))

        await storage._run(trace)
        ids = await storage.append([(A, u(1)), (B, u(2))])
        await storage.compact(A, b"s", ids[0])
        await storage.load(B)
        await storage.documents()
    assert len(threads) == 1
    assert next(iter(threads)).startswith("relay-storage")
    assert threading.current_thread().name not in threads


async def test_loading_a_document_is_an_index_range_scan(tmp_path: Path) -> None:
    async with SQLiteStorage(tmp_path / "relay.db") as storage:

        def plan() -> str:
            rows = storage._db().execute(
                "EXPLAIN QUERY PLAN SELECT id, crc, data FROM log WHERE num = ? AND id > ?"
                " ORDER BY id",
                (1, 0),
            )
            return " | ".join(row[3] for row in rows)

        assert await storage._run(plan) == "SEARCH log USING INDEX log_by_doc (num=? AND id>?)"


async def test_missing_directories_are_created_on_open(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "relay.db"
    storage = open_storage(f"sqlite:///{path}")
    assert not (tmp_path / "a").exists(), "open_storage does no I/O"
    async with storage:
        await storage.append([(A, u(1))])
    assert path.is_file()


async def test_a_directory_is_refused(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path)
    with pytest.raises(StoreError, match="not a regular file"):
        await storage.open()
    await storage.close()


# -- URLs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path", "synchronous"),
    [
        ("sqlite:///relay-data/relay.db", "relay-data/relay.db", "full"),
        ("sqlite:////var/lib/relay/relay.db", "/var/lib/relay/relay.db", "full"),
        ("sqlite:///relay.db?synchronous=normal", "relay.db", "normal"),
        ("sqlite:///relay.db?synchronous=FULL", "relay.db", "full"),
        ("sqlite:///relay.db?", "relay.db", "full"),
    ],
)
def test_sqlite_urls(url: str, path: str, synchronous: str) -> None:
    storage = open_storage(url)
    assert isinstance(storage, SQLiteStorage)
    assert (storage.path, storage.synchronous) == (Path(path), synchronous)
    again = open_storage(storage.url)
    assert isinstance(again, SQLiteStorage)
    assert (again.path, again.synchronous) == (Path(path), synchronous)


def test_memory_url() -> None:
    first, second = open_storage("memory://"), open_storage("memory://")
    assert isinstance(first, MemoryStorage) and isinstance(second, MemoryStorage)
    assert first.data is not second.data


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("postgres://db/relay", ["unknown storage URL", "sqlite:///", "memory://"]),
        ("", ["unknown storage URL", "memory://"]),
        ("sqlite://relay.db", ["unknown storage URL", "sqlite:////absolute"]),
        ("sqlite:///", ["names no file"]),
        ("sqlite:///:memory:", ["memory://"]),
        ("sqlite:///r.db?sync=full", ["unknown option 'sync=full'", "synchronous=full|normal"]),
        ("sqlite:///r.db?synchronous", ["unknown option 'synchronous'"]),
        ("sqlite:///r.db?synchronous=off", ["synchronous='off'", "synchronous=normal"]),
        ("sqlite:///r.db?synchronous=full&synchronous=normal", ["given twice"]),
        ("memory://somewhere", ["memory storage takes no path or options"]),
        ("memory://?synchronous=full", ["memory storage takes no path or options"]),
    ],
)
def test_bad_urls(url: str, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        open_storage(url)
    for word in words:
        assert word in str(info.value)


async def test_relative_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with open_storage("sqlite:///data/relay.db") as storage:
        await storage.append([(A, u(1))])
    assert (tmp_path / "data" / "relay.db").is_file()


def test_bad_synchronous() -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStorage("relay.db", "off")  # type: ignore[arg-type]


# -- damaged and foreign files -------------------------------------------------------------------


@pytest.mark.parametrize("target", ["log", "snapshot"])
async def test_flipped_byte_fails_its_checksum(tmp_path: Path, target: str) -> None:
    """A byte flipped inside a stored blob passes SQLite's own checks but not the CRC-32:
    loading that document raises StoreCorruptError; other documents still load and the
    storage still writes."""
    path = tmp_path / "relay.db"
    async with SQLiteStorage(path) as storage:
        ids = await storage.append([(A, b"before " + MARKER), (B, u(2))])
        if target == "snapshot":
            await storage.compact(A, b"snap " + MARKER + b" shot", ids[0])
            await storage.append([(A, b"after")])
    data = bytearray(path.read_bytes())
    assert data.count(MARKER) == 1
    data[data.index(MARKER) + 3] ^= 0x01
    path.write_bytes(bytes(data))

    async with SQLiteStorage(path) as storage:
        with pytest.raises(StoreCorruptError) as info:
            await storage.load(A)
        assert "checksum" in str(info.value) and str(path) in str(info.value)
        assert (target == "snapshot") is ("snapshot" in str(info.value))
        assert (await storage.load(B)).updates[0].update == u(2)
        await storage.append([(B, u(3))])


async def test_replica_store_is_refused_untouched(tmp_path: Path) -> None:
    """A crdtsync replica's store opened as relay storage: StoreCorruptError, unchanged;
    and the other way round, a relay store is refused by Replica, unchanged."""
    replica_path = tmp_path / "replica.db"
    with Replica(replica_path) as replica:
        replica.open("doc").get("m", type=pycrdt.Map)["key"] = "value"
    await assert_refused(replica_path, StoreCorruptError, "not a crdtsync relay store", "replica")

    relay_path = tmp_path / "relay.db"
    await write_relay_store(relay_path)
    digest, names = sha256(relay_path), listing(relay_path)
    with pytest.raises(StoreCorruptError):
        Replica(relay_path)
    assert (sha256(relay_path), listing(relay_path)) == (digest, names)


@pytest.mark.parametrize("size", [10, 4096 * 3])
async def test_random_bytes_are_refused_untouched(tmp_path: Path, size: int) -> None:
    path = tmp_path / "relay.db"
    path.write_bytes(os.urandom(size))
    await assert_refused(path, StoreCorruptError, "not an SQLite database")


async def test_foreign_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.execute("INSERT INTO users VALUES ('ada')")
    conn.commit()
    conn.close()
    await assert_refused(path, StoreCorruptError, "not a crdtsync relay store", "users")


async def test_empty_file_becomes_a_store(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    path.touch()
    async with SQLiteStorage(path) as storage:
        ids = await storage.append([(A, u(1))])
    async with SQLiteStorage(path) as storage:
        assert (await storage.load(A)).updates[0].id == ids[0]


async def test_schema_version_1_is_migrated_in_place(tmp_path: Path) -> None:
    """A file written before authorship claims existed (version 1, no ``claims``
    table) opens, gains the table, and keeps its content."""
    path = tmp_path / "relay.db"
    await write_relay_store(path)
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE claims")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    async with SQLiteStorage(path) as storage:
        documents = await storage.documents()
        assert documents
        before = await storage.load(documents[0])
        assert before.updates and before.claims == {}
        await storage.append([(documents[0], before.updates[0].update)], [(documents[0], 7, "ana")])
        assert (await storage.load(documents[0])).claims == {7: "ana"}
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()


@pytest.mark.parametrize("version", [0, 3])
async def test_unknown_schema_version_is_refused_untouched(tmp_path: Path, version: int) -> None:
    path = tmp_path / "relay.db"
    await write_relay_store(path)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    assert listing(path) == ["relay.db"]
    await assert_refused(path, StoreVersionError, f"version {version}")


# -- locking -------------------------------------------------------------------------------------

OPEN_CHILD = r"""
import asyncio
import sys

from crdtsync.errors import StoreError
from relay.storage import SQLiteStorage


async def main() -> None:
    storage = SQLiteStorage(sys.argv[1])
    try:
        await storage.open()
    except StoreError as exc:
        print(f"refused {type(exc).__name__}: {exc}")
        await storage.close()
        return
    await storage.close()
    print("opened")


asyncio.run(main())
"""


def open_in_child(path: Path) -> str:
    """Try to open ``path`` as relay storage in a fresh process; its one-line report."""
    done = subprocess.run(
        [sys.executable, "-c", OPEN_CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    return done.stdout.strip()


async def test_second_open_of_the_same_file_is_locked(tmp_path: Path) -> None:
    """In the same process: a second storage (or a Replica) on an open file raises
    StoreLockedError before touching it; another process is refused too, also after
    the refused opens (they must not have dropped the lock); once the first closes,
    the refused storage object can retry and opens."""
    path = tmp_path / "relay.db"
    async with SQLiteStorage(path) as first:
        ids = await first.append([(A, u(1))])
        second = SQLiteStorage(path)
        with pytest.raises(StoreLockedError, match="in use"):
            await second.open()
        with pytest.raises(StoreLockedError):
            Replica(path)
        report = open_in_child(path)
        assert report.startswith("refused StoreLockedError:"), report
        assert str(path) in report
        more = await first.append([(A, u(2))])
    assert open_in_child(path) == "opened"
    await second.open()
    try:
        assert [e.id for e in (await second.load(A)).updates] == [ids[0], more[0]]
    finally:
        await second.close()


async def test_open_replica_store_is_locked_for_relay_storage(tmp_path: Path) -> None:
    path = tmp_path / "replica.db"
    with Replica(path):
        storage = SQLiteStorage(path)
        with pytest.raises(StoreLockedError):
            await storage.open()
        await storage.close()


# -- SIGKILL -------------------------------------------------------------------------------------

# The child: append batches of 5 updates ("u<n>" over three documents, numbering from
# argv[3]) and print "n:id" for each update once append() has returned.
APPEND_CHILD = r"""
import asyncio
import sys

from crdtsync.ids import DocId
from relay.storage import open_storage


async def main() -> None:
    storage = open_storage(sys.argv[1])
    await storage.open()
    n = int(sys.argv[2])
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    while True:
        batch = [(DocId(f"doc{(n + k) % 3}"), f"u{n + k}".encode()) for k in range(5)]
        ids = await storage.append(batch)
        out.write(" ".join(f"{n + k}:{i}" for k, i in enumerate(ids)) + "\n")
        out.flush()
        n += 5


asyncio.run(main())
"""


def append_until_killed(url: str, start: int, batches: int, tmp_path: Path) -> dict[int, int]:
    """Run the child, read ``batches`` lines, SIGKILL it; every ``n -> id`` it printed."""
    printed: dict[int, int] = {}
    with spawn(APPEND_CHILD, url, str(start), tmp_path=tmp_path) as child:
        assert child.readline() == "ready", child.stderr()
        lines = [child.readline() for _ in range(batches)]
        child.sigkill()
        lines += child.drain()
    for line in lines:
        for pair in line.split():
            n, entry_id = pair.split(":")
            printed[int(n)] = int(entry_id)
    return printed


async def stored_updates(url: str) -> dict[int, tuple[int, bytes]]:
    """Every log entry in the storage: id -> (n, update)."""
    found: dict[int, tuple[int, bytes]] = {}
    async with open_storage(url) as storage:
        for doc_id in await storage.documents():
            room = await storage.load(doc_id)
            assert room.snapshot is None
            for entry in room.updates:
                n = int(entry.update[1:])
                assert doc_id == f"doc{n % 3}"
                found[entry.id] = (n, entry.update)
    return found


@pytest.mark.timeout(60)
@pytest.mark.parametrize("synchronous", ["full", "normal"])
async def test_appended_batches_survive_sigkill(tmp_path: Path, synchronous: str) -> None:
    """Every id printed after append() returned is stored, with its bytes, after a
    SIGKILL; at most the batch in flight is stored beyond them; a second run after the
    crash continues with larger ids and both runs survive a second SIGKILL."""
    url = f"sqlite:///{tmp_path / 'relay.db'}?synchronous={synchronous}"
    runs: dict[int, int] = {}
    in_flight: set[int] = set()  # stored by a run that was killed before printing them
    start = 0
    for _ in range(2):
        printed = append_until_killed(url, start, 30, tmp_path)
        assert len(printed) >= 150
        if runs:
            assert min(printed.values()) > max(runs.values()), "ids must keep increasing"
        runs.update(printed)
        stored = await stored_updates(url)
        for n, entry_id in runs.items():
            assert stored[entry_id] == (n, f"u{n}".encode())
        unreported = sorted(set(stored) - set(runs.values()) - in_flight)
        assert len(unreported) <= 5 and all(i > max(runs.values()) for i in unreported)
        in_flight.update(unreported)
        start = max(n for n, _ in stored.values()) + 1


# -- both backends agree ---------------------------------------------------------------------------

DOCS = st.sampled_from([A, B, C])


class StorageAgreement(RuleBasedStateMachine):
    """Memory and SQLite storages given the same calls return the same results, ids
    included, across restarts (hypothesis' test_database_agreement shape)."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.TemporaryDirectory()
        self.data = MemoryData()
        self.path = Path(self.tmp.name) / "relay.db"
        self.storages: list[RelayStorage] = []
        self.start()

    def start(self) -> None:
        self.storages = [MemoryStorage(self.data), SQLiteStorage(self.path, "normal")]
        for storage in self.storages:
            self.loop.run_until_complete(storage.open())

    def both(self, method: str, *args: object) -> list[object]:
        """Call ``method`` on both storages: the results, or the exception types."""
        results: list[object] = []
        for storage in self.storages:
            try:
                results.append(self.loop.run_until_complete(getattr(storage, method)(*args)))
            except (StoreError, ValueError) as exc:
                results.append(type(exc))
        assert results[0] == results[1], (method, args, results)
        return results

    @rule(batch=st.lists(st.tuples(DOCS, st.binary(max_size=12)), max_size=6))
    def append(self, batch: list[tuple[DocId, bytes]]) -> None:
        self.both("append", batch)

    @rule(doc_id=DOCS, snapshot=st.binary(max_size=12), data=st.data())
    def compact(self, doc_id: DocId, snapshot: bytes, data: st.DataObject) -> None:
        room = self.loop.run_until_complete(self.storages[0].load(doc_id))
        uptos = [room.snapshot_upto, *(entry.id for entry in room.updates)]
        upto = data.draw(st.sampled_from(uptos) | st.integers(0, max(uptos) + 2))
        self.both("compact", doc_id, snapshot, upto)

    @rule()
    def restart(self) -> None:
        for storage in self.storages:
            self.loop.run_until_complete(storage.close())
        self.start()

    @rule(doc_id=DOCS)
    def load(self, doc_id: DocId) -> None:
        room = self.both("load", doc_id)[0]
        assert isinstance(room, StoredRoom)
        assert all(entry.id > room.snapshot_upto for entry in room.updates)

    @invariant()
    def documents_agree(self) -> None:
        self.both("documents")

    def teardown(self) -> None:
        for storage in self.storages:
            self.loop.run_until_complete(storage.close())
        self.loop.close()
        self.tmp.cleanup()


TestStorageAgreement = StorageAgreement.TestCase
TestStorageAgreement.settings = settings(max_examples=25, stateful_step_count=30)
