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
import secrets
import shutil
from pathlib import Path
from typing import Any

from crdtsync import Replica
from crdtsync.ids import DocId
from crdtsync.store.memory import MemoryData, MemoryStore
from relay.storage import MemoryStorage, RelayStorage, SQLiteStorage, StoredRoom
from relay.storage.memory import MemoryData as RelayMemoryData
from relay.storage.redis import RedisStorage

from .redis_server import shared_server


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
        if self.backend != "sqlite":
            return Replica(store=MemoryStore(self.data), compact_min_bytes=self.compact_min_bytes)
        return Replica(self.path, durability="normal", compact_min_bytes=self.compact_min_bytes)

    def crash(self, replica: Replica) -> None:
        """Keep the store's bytes as they are, then let the dead objects go."""
        if self.backend != "sqlite":
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
    """The storage of the relay processes (one, or several sharing Redis), driven
    synchronously on a private event loop."""

    def __init__(self, backend: str, directory: Path, relays: int = 1) -> None:
        self.backend = backend
        self.directory = directory
        self.loop = asyncio.new_event_loop()
        self.generation = 0
        self.data = RelayMemoryData()
        self.path = self._path()
        self.redis_url = ""
        if backend == "redis":
            self.redis_url = f"{shared_server().url}?prefix=net{secrets.token_hex(6)}"
        self.storages = [self._open() for _ in range(relays)]

    @property
    def storage(self) -> RelayStorage:
        """The first relay's storage (the store as a restarted relay reads it)."""
        return self.storages[0]

    def _path(self) -> Path:
        return self.directory / f"relay-{self.generation}.db"

    def _open(self) -> RelayStorage:
        storage: RelayStorage
        if self.backend == "memory":
            storage = MemoryStorage(self.data)
        elif self.backend == "redis":
            storage = RedisStorage(self.redis_url)
        else:
            storage = SQLiteStorage(self.path, synchronous="normal")
        self.run(storage.open())
        return storage

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def load(self, doc_id: DocId, k: int = 0, follow: bool = False) -> StoredRoom:
        stored: StoredRoom = self.run(self.storages[k].load(doc_id, follow=follow))
        return stored

    def append(self, batch: list[tuple[DocId, bytes]], k: int = 0) -> list[int]:
        ids: list[int] = self.run(self.storages[k].append(batch))
        return ids

    def delivered(self, doc_id: DocId, entry_id: int) -> None:
        """Wait until every relay following ``doc_id`` has been handed every append up to
        ``entry_id`` by its feed (so that what each may deliver next is decided by
        the scenario, not by timing)."""
        for storage in self.storages:
            if isinstance(storage, RedisStorage):
                self.run(asyncio.wait_for(storage.delivered(doc_id, entry_id), 30))

    def crash(self, k: int = 0) -> None:
        """Relay ``k`` dies: keep the storage's bytes as they are (Redis keeps its own),
        close the dead process's storage, and open what it left."""
        if self.backend == "memory":
            image = copy.deepcopy(self.data)
            image.in_use = False
            self.run(self.storages[k].close())
            self.data = image
        elif self.backend == "redis":
            self.run(self.storages[k].close())
        else:
            self.generation += 1
            old, self.path = self.path, self._path()
            _copy_sqlite(old, self.path)
            self.run(self.storages[k].close())
            _remove_sqlite(old)
        self.storages[k] = self._open()

    def close(self) -> None:
        for storage in self.storages:
            self.run(storage.close())
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()
