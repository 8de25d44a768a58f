"""crdtsync: offline-first replication of pycrdt (Yjs) documents.

Users import from here, never from deeper modules::

    from crdtsync import Replica

    with Replica("field-app.db") as replica:
        doc = replica.open("inspection-42")   # a pycrdt.Doc, loaded from the local store
        ...                                    # every change is stored before it returns

See ``README.md`` for a tour, ``DESIGN.md`` guarantees in the docstrings.
"""

from .errors import (
    AuthError,
    CrdtsyncError,
    InvalidUpdateError,
    ProtocolError,
    RelayRefusedError,
    ReplicaClosedError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    StoreVersionError,
    StoreWriteError,
    SyncError,
)
from .events import (
    DocumentOpened,
    DocumentSynced,
    LocalUpdate,
    PendingChanged,
    RelayErrorReceived,
    ReplicaEvent,
    StatusChanged,
    SyncStatus,
)
from .ids import DocId, ReplicaId
from .replica import Durability, PendingBatch, Replica
from .store import MemoryStore, OutboxEntry, SQLiteStore, Store

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "CrdtsyncError",
    "DocId",
    "DocumentOpened",
    "DocumentSynced",
    "Durability",
    "InvalidUpdateError",
    "LocalUpdate",
    "MemoryStore",
    "OutboxEntry",
    "PendingBatch",
    "PendingChanged",
    "ProtocolError",
    "RelayErrorReceived",
    "RelayRefusedError",
    "Replica",
    "ReplicaClosedError",
    "ReplicaEvent",
    "ReplicaId",
    "SQLiteStore",
    "StatusChanged",
    "Store",
    "StoreCorruptError",
    "StoreError",
    "StoreLockedError",
    "StoreVersionError",
    "StoreWriteError",
    "SyncError",
    "SyncStatus",
    "__version__",
]
