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

from .attachments import AttachmentInfo, Attachments
from .errors import (
    AttachmentCorruptError,
    AttachmentError,
    AttachmentTooLargeError,
    AuthError,
    CrdtsyncError,
    DocumentNotCachedError,
    DocumentRefusedError,
    FetchError,
    InvalidUpdateError,
    ProtocolError,
    RelayEndpointError,
    RelayRefusedError,
    RelayUnreachableError,
    ReplicaClosedError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    StoreUnavailableError,
    StoreVersionError,
    StoreWriteError,
    SyncError,
    TooManyDocumentsError,
)
from .events import (
    AwarenessReceived,
    ConflictDetected,
    DocumentFetched,
    DocumentLive,
    DocumentOpened,
    DocumentOverLimit,
    DocumentRefused,
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
    SyncState,
    SyncStateChanged,
    SyncStatus,
)
from .ids import DocId, ReplicaId
from .link import SyncLink, Token, register_sync
from .offline import CachedDocument, FetchBackend, RefreshHandle, register_fetch
from .outbox import PendingBatch
from .records import Changes, Records
from .registers import Candidate, Conflict, Tombstone
from .replica import Durability, Replica
from .store import MemoryStore, OutboxEntry, SQLiteStore, Store

__version__ = "0.1.0"


def _connector(replica: Replica, url: str | list[str], **options: Any) -> SyncLink:
    """The sync link :meth:`Replica.connect` makes: imported on first use."""
    from .sync.client import Connector  # noqa: PLC0415 - websockets only once an app connects

    return Connector(replica, url, **options)


def _fetch_backend() -> FetchBackend:
    """Prefetch, refresh and attachment transfer over HTTP: imported on first use."""
    from .sync.fetch import BACKEND  # noqa: PLC0415 - HTTP client only once an app fetches

    return BACKEND


register_sync(_connector)
register_fetch(_fetch_backend)

__all__ = [
    "AttachmentCorruptError",
    "AttachmentError",
    "AttachmentInfo",
    "AttachmentTooLargeError",
    "Attachments",
    "AuthError",
    "AwarenessReceived",
    "CachedDocument",
    "Candidate",
    "Changes",
    "Conflict",
    "ConflictDetected",
    "CrdtsyncError",
    "DocId",
    "DocumentFetched",
    "DocumentLive",
    "DocumentNotCachedError",
    "DocumentOpened",
    "DocumentOverLimit",
    "DocumentRefused",
    "DocumentRefusedError",
    "DocumentRestricted",
    "DocumentSynced",
    "Durability",
    "EventBus",
    "FetchError",
    "InvalidUpdateError",
    "LocalUpdate",
    "MemoryStore",
    "OutboxEntry",
    "PendingBatch",
    "PendingChanged",
    "ProtocolError",
    "Records",
    "RecordsChanged",
    "RefreshHandle",
    "RelayEndpointError",
    "RelayErrorInfo",
    "RelayErrorReceived",
    "RelayRefusedError",
    "RelayUnreachableError",
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
    "StoreUnavailableError",
    "StoreVersionError",
    "StoreWriteError",
    "SyncError",
    "SyncLink",
    "SyncState",
    "SyncStateChanged",
    "SyncStatus",
    "Token",
    "Tombstone",
    "TooManyDocumentsError",
    "__version__",
]
