"""Local persistence for replicas, behind one small contract (:class:`Store`).

- :class:`SQLiteStore`: the embedded default, one SQLite file (WAL).
- :class:`MemoryStore`: nothing on disk (durability ``"memory"`` and tests).

Both pass the same contract tests (``tests/store_contract.py``).
"""

from .base import (
    EMPTY_SNAPSHOT,
    DocumentInfo,
    DocumentUsage,
    EntryKind,
    LogEntry,
    NewEntry,
    OutboxEntry,
    Store,
    StoredDocument,
)
from .memory import MemoryData, MemoryStore
from .sqlite import SCHEMA_VERSION, SQLiteStore

__all__ = [
    "EMPTY_SNAPSHOT",
    "SCHEMA_VERSION",
    "DocumentInfo",
    "DocumentUsage",
    "EntryKind",
    "LogEntry",
    "MemoryData",
    "MemoryStore",
    "NewEntry",
    "OutboxEntry",
    "SQLiteStore",
    "Store",
    "StoredDocument",
]
