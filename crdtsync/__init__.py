"""crdtsync: offline-first replication of pycrdt (Yjs) documents.

Users import from here, never from deeper modules::

    from crdtsync import Replica

    with Replica("field-app.db") as replica:
        doc = replica.open("inspection-42")   # a pycrdt.Doc, loaded from the local store
        ...                                    # every change is stored before it returns

See ``README.md`` for a tour, ``DESIGN.md`` guarantees in the docstrings.
"""

from .errors import (
    CrdtsyncError,
    InvalidUpdateError,
    ReplicaClosedError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    StoreVersionError,
    StoreWriteError,
)
from .events import PendingChanged, ReplicaEvent
from .ids import DocId, ReplicaId
from .replica import Durability, PendingBatch, Replica
from .store import MemoryStore, OutboxEntry, SQLiteStore, Store

__version__ = "0.1.0"

__all__ = [
    "CrdtsyncError",
    "DocId",
    "Durability",
    "InvalidUpdateError",
    "MemoryStore",
    "OutboxEntry",
    "PendingBatch",
    "PendingChanged",
    "Replica",
    "ReplicaClosedError",
    "ReplicaEvent",
    "ReplicaId",
    "SQLiteStore",
    "Store",
    "StoreCorruptError",
    "StoreError",
    "StoreLockedError",
    "StoreVersionError",
    "StoreWriteError",
    "__version__",
]
