"""Where the simulated replicas and relay keep their data, and what a crash keeps.

A crash keeps exactly what a ``kill -9`` keeps: the bytes of the store at that
instant (a copy of the SQLite file and its WAL, or of the memory store's data).
The dead process's objects are closed afterwards, and whatever they write while
closing (an SQLite store's clean-shutdown mark, a WAL checkpoint) goes to the
discarded original: the restarted process opens the copy, so an SQLite replica
store takes its unclean-shutdown path as after a real crash.
"""

from __future__ import annotations

import asyncio
import copy
import shutil
from pathlib import Path
from typing import Any

from crdtsync import Replica
from crdtsync.ids import DocId
from crdtsync.store.memory import MemoryData, MemoryStore
from relay.storage import MemoryStorage, SQLiteStorage, StoredRoom
from relay.storage.memory import MemoryData as RelayMemoryData


def _copy_sqlite(source: Path, target: Path) -> None:
    """The bytes a ``kill -9`` leaves: the database file and its WAL, as they are now."""
    for suffix in ("", "-wal"):
        origin = source.with_name(source.name + suffix)
        if origin.exists():
            shutil.copyfile(origin, target.with_name(target.name + suffix))


def _remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


class ReplicaDisk:
    """Where one replica keeps its store: a :class:`MemoryData` or an SQLite file."""

    def __init__(self, backend: str, directory: Path, index: int, compact_min_bytes: int) -> None:
        self.backend = backend
        self.directory = directory
        self.index = index
        self.compact_min_bytes = compact_min_bytes
        self.generation = 0
        self.data = MemoryData()
        self.path = self._path()

    def _path(self) -> Path:
        return self.directory / f"replica-{self.index}-{self.generation}.db"

    def open(self) -> Replica:
        if self.backend == "memory":
            return Replica(store=MemoryStore(self.data), compact_min_bytes=self.compact_min_bytes)
        return Replica(self.path, durability="normal", compact_min_bytes=self.compact_min_bytes)

    def crash(self, replica: Replica) -> None:
        """Keep the store's bytes as they are, then let the dead objects go."""
        if self.backend == "memory":
            image = copy.deepcopy(self.data)
            image.in_use = False
            replica.close()
            self.data = image
            return
        self.generation += 1
        old, self.path = self.path, self._path()
        _copy_sqlite(old, self.path)
        replica.close()  # writes its clean-shutdown mark into the discarded original
        _remove_sqlite(old)


class RelayDisk:
    """The relay's storage, driven synchronously on a private event loop."""

    def __init__(self, backend: str, directory: Path) -> None:
        self.backend = backend
        self.directory = directory
        self.loop = asyncio.new_event_loop()
        self.generation = 0
        self.data = RelayMemoryData()
        self.path = self._path()
        self.storage = self._open()

    def _path(self) -> Path:
        return self.directory / f"relay-{self.generation}.db"

    def _open(self) -> MemoryStorage | SQLiteStorage:
        storage: MemoryStorage | SQLiteStorage
        if self.backend == "memory":
            storage = MemoryStorage(self.data)
        else:
            storage = SQLiteStorage(self.path, synchronous="normal")
        self.run(storage.open())
        return storage

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def load(self, doc_id: DocId) -> StoredRoom:
        stored: StoredRoom = self.run(self.storage.load(doc_id))
        return stored

    def append(self, batch: list[tuple[DocId, bytes]]) -> list[int]:
        ids: list[int] = self.run(self.storage.append(batch))
        return ids

    def crash(self) -> None:
        """Keep the storage's bytes as they are, close the dead process's storage, and
        open what it left."""
        if self.backend == "memory":
            image = copy.deepcopy(self.data)
            image.in_use = False
            self.run(self.storage.close())
            self.data = image
        else:
            self.generation += 1
            old, self.path = self.path, self._path()
            _copy_sqlite(old, self.path)
            self.run(self.storage.close())
            _remove_sqlite(old)
        self.storage = self._open()

    def close(self) -> None:
        self.run(self.storage.close())
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()
