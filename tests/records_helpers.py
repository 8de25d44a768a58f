"""Shared pieces of the records tests: replicas that reopen their store, direct sync
between replicas, and a bare pycrdt client that follows the documented layout."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pycrdt

from crdtsync import Replica
from crdtsync.statevector import decode_state_vector
from crdtsync.store.memory import MemoryData, MemoryStore

C = "inspections"


class Disk:
    """Where one replica keeps its store (memory data, or an SQLite file), so that
    the test can close it and open it again as a restart does."""

    def __init__(self, backend: str, path: Path) -> None:
        self.backend = backend
        self.path = path
        self.data = MemoryData()

    def open(self) -> Replica:
        if self.backend == "memory":
            return Replica(store=MemoryStore(self.data))
        return Replica(self.path)

    def reopen(self, replica: Replica) -> Replica:
        replica.close()
        return self.open()


def sync(*replicas: Replica, name: str = C) -> None:
    """Every replica receives what every other one has (state-vector diffs)."""
    for source in replicas:
        for target in replicas:
            if source is not target:
                target.apply_remote(name, source.diff(name, target.state_vector(name)))


def send(source: Replica, target: Replica, name: str = C) -> None:
    """``target`` receives what ``source`` has."""
    target.apply_remote(name, source.diff(name, target.state_vector(name)))


def layout_write(doc: pycrdt.Doc[Any], record_id: str, field: str, value: Any) -> None:
    """Set a field the way the README tells a Yjs client to, with pycrdt only (no
    crdtsync code): replace the field's heads by one head keyed by its own Yjs id,
    and list it in ``heads``."""
    with doc.transaction():
        record = doc.get(f"rec:{record_id}", type=pycrdt.Map)
        heads = doc.get("heads", type=pycrdt.Map)
        for key, head in list(record.items()):
            if isinstance(head, dict) and head.get("f") == field:
                del record[key]
                if key in heads:
                    del heads[key]
        clock = _clock(doc)
        key = f"{doc.client_id}.{clock}"
        record[key] = {"f": field, "v": value, "at": int(time.time() * 1000)}
        heads[key] = [record_id, field]


def _clock(doc: pycrdt.Doc[Any]) -> int:
    return decode_state_vector(doc.get_state()).get(doc.client_id, 0)
