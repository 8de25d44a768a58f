"""crdtsync: offline-first replication of pycrdt (Yjs) documents.

Users import from here, never from deeper modules::

    from crdtsync import Replica

    with Replica("field-app.db") as replica:
        doc = replica.open("inspection-42")   # a pycrdt.Doc, loaded from the local store
        ...                                    # every change is stored before it returns

See ``README.md`` for a tour and ``DESIGN.md`` for the architecture and the
guarantees the docstrings refer to.

Importing ``crdtsync`` and working offline loads no network code: the sync
package (:mod:`crdtsync.sync`, and ``websockets``) is imported when an app first
calls :meth:`Replica.connect`, through the factory registered below.
"""

from __future__ import annotations

from typing import Any

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
    AwarenessReceived,
    ConflictDetected,
    DocumentLive,
    DocumentOpened,
    DocumentRestricted,
    DocumentSynced,
    EventBus,
    LocalUpdate,
    PendingChanged,
    RecordsChanged,
    RelayErrorInfo,
    RelayErrorReceived,
    ReplicaEvent,
    StatusChanged,
    SyncStatus,
)
from .ids import DocId, ReplicaId
from .link import SyncLink, Token, register_sync
from .outbox import PendingBatch
from .records import Changes, Records
from .registers import Candidate, Conflict, Tombstone
from .replica import Durability, Replica
from .store import MemoryStore, OutboxEntry, SQLiteStore, Store

__version__ = "0.1.0"


def _connector(replica: Replica, url: str, **options: Any) -> SyncLink:
    """The sync link :meth:`Replica.connect` makes: imported on first use."""
    from .sync.client import Connector  # noqa: PLC0415 - websockets only once an app connects

    return Connector(replica, url, **options)


register_sync(_connector)

__all__ = [
    "AuthError",
    "AwarenessReceived",
    "Candidate",
    "Changes",
    "Conflict",
    "ConflictDetected",
    "CrdtsyncError",
    "DocId",
    "DocumentLive",
    "DocumentOpened",
    "DocumentRestricted",
    "DocumentSynced",
    "Durability",
    "EventBus",
    "InvalidUpdateError",
    "LocalUpdate",
    "MemoryStore",
    "OutboxEntry",
    "PendingBatch",
    "PendingChanged",
    "ProtocolError",
    "Records",
    "RecordsChanged",
    "RelayErrorInfo",
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
    "SyncLink",
    "SyncStatus",
    "Token",
    "Tombstone",
    "__version__",
]
