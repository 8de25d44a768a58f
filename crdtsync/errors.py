"""The one exception tree of crdtsync.

Every error the library raises on purpose derives from :class:`CrdtsyncError`::

    CrdtsyncError
    ├── StoreError                 the local store failed or cannot be trusted
    │   ├── StoreCorruptError      not a crdtsync store, truncated, or a checksum mismatch
    │   ├── StoreVersionError      written with a schema version this code does not know
    │   ├── StoreLockedError       another process (or Replica) has the store open
    │   ├── StoreWriteError        a write failed (disk full, I/O error); nothing was lost
    │   └── StoreUnavailableError  a relay's shared storage (Redis) cannot be reached for now
    ├── ReplicaClosedError         the replica was used after close()
    ├── InvalidUpdateError         an update could not be decoded or applied (also ValueError)
    ├── ProtocolError              a frame could not be decoded or breaks the protocol
    ├── RelayUnreachableError      the relay could not be reached (retried in the background)
    ├── DocumentNotCachedError     open(..., offline_only=True) of a document not stored here
    ├── AttachmentError            an attachment cannot be stored, sent or fetched
    │   ├── AttachmentTooLargeError      over the size limit (local or the relay's)
    │   └── AttachmentCorruptError       its bytes do not match its SHA-256 reference
    ├── FetchError                 prefetch/refresh/download over HTTP failed (also an HTTP status)
    └── SyncError                  syncing with a relay failed for good (not retried)
        ├── RelayEndpointError     the URL does not lead to a relay's native endpoint (404, /yjs/)
        ├── DocumentRefusedError   the relay refuses a document's changes for good
        ├── TooManyDocumentsError  a document is beyond the relay's documents per connection
        └── RelayRefusedError      the relay refused the connection (version, ...)
            └── AuthError          it refused the token (missing, invalid, expired, denied)

``store_error_in(group)`` finds the one :class:`StoreError` such a group carries,
for the calls (applying a remote update, writing a record) that raise it as is.

Argument mistakes (an empty document id, acknowledging a sequence number that was
never issued) raise the built-in :class:`ValueError`, as Python itself does.

Note on pycrdt: changes to a document are persisted from a ``Doc.observe``
callback, and pycrdt re-raises callback errors at the end of the transaction
wrapped in an :class:`ExceptionGroup`. A failed local write therefore surfaces as
``ExceptionGroup("Observer callback error", [StoreWriteError(...)])``; catch it
with ``except* StoreWriteError``.
"""

from __future__ import annotations

__all__ = [
    "AttachmentCorruptError",
    "AttachmentError",
    "AttachmentTooLargeError",
    "AuthError",
    "CrdtsyncError",
    "DocumentNotCachedError",
    "DocumentRefusedError",
    "FetchError",
    "InvalidUpdateError",
    "ProtocolError",
    "RelayEndpointError",
    "RelayRefusedError",
    "RelayUnreachableError",
    "ReplicaClosedError",
    "StoreCorruptError",
    "StoreError",
    "StoreLockedError",
    "StoreUnavailableError",
    "StoreVersionError",
    "StoreWriteError",
    "SyncError",
    "TooManyDocumentsError",
]


class CrdtsyncError(Exception):
    """Base class of every error crdtsync raises on purpose."""


class StoreError(CrdtsyncError):
    """The local store failed, or its content cannot be trusted."""


class StoreCorruptError(StoreError):
    """The store is not a crdtsync store, is truncated, or a checksum does not match.

    The file is never modified when this is raised.
    """


class StoreVersionError(StoreError):
    """The store was written with a schema version this code cannot read."""


class StoreLockedError(StoreError):
    """The store is already open in another process or another ``Replica``.

    A store is opened exclusively: two writers sharing one store would reuse the
    same CRDT client ids for different changes, which breaks convergence.
    """


class StoreWriteError(StoreError):
    """A write to the store failed (for example: disk full).

    The change stays in memory and is written together with the next change
    (or by :meth:`crdtsync.Replica.flush`); it is never sent before it is stored.
    """


class StoreUnavailableError(StoreError):
    """A relay's shared storage (Redis) cannot be reached for now: the connection
    failed or timed out.

    Transient: the relay retries. A write whose reply was lost may or may not have
    been stored, so it is never acknowledged; storing it again is harmless (CRDT
    updates are idempotent).
    """


class ReplicaClosedError(CrdtsyncError):
    """The replica was used after :meth:`crdtsync.Replica.close`."""


class InvalidUpdateError(CrdtsyncError, ValueError):
    """An update could not be decoded or integrated into a document."""


class ProtocolError(CrdtsyncError):
    """A frame could not be decoded, a field is invalid, or a frame arrived where
    the protocol does not allow it. Raised by :func:`crdtsync.sync.protocol.decode_frame`
    and by the session objects; never for a problem of the local side."""


class SyncError(CrdtsyncError):
    """Syncing with a relay failed in a way that retrying will not fix."""


class RelayRefusedError(SyncError):
    """The relay refused the connection with a fatal error (for example an
    unsupported protocol version). ``code`` is the relay's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"relay refused the connection ({code}): {message}")
        self.code = code
        self.message = message


class AuthError(RelayRefusedError):
    """The relay refused this client's token: missing, malformed, wrongly signed,
    expired, or without permission for what was asked. ``code`` is the relay's
    error code (``token_required``, ``token_invalid``, ``token_expired``, ...).
    Fatal: the connector stops instead of retrying with the same token."""


# -- offline apps (issue 15) -------------------------------------------------------


class RelayUnreachableError(CrdtsyncError):
    """The relay could not be reached or the connection was lost; the replica keeps
    retrying in the background (``sync_state.last_error`` holds the latest)."""


class DocumentNotCachedError(CrdtsyncError, KeyError):
    """``open(doc_id, offline_only=True)`` of a document this replica does not
    store (never fetched, or evicted): it is not available offline."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class AttachmentError(CrdtsyncError):
    """An attachment could not be stored, uploaded or fetched."""


class AttachmentTooLargeError(AttachmentError, ValueError):
    """An attachment is larger than the limit (the replica's, or the relay's)."""


class AttachmentCorruptError(AttachmentError):
    """An attachment's bytes do not hash to its reference (SHA-256); they were
    not stored."""


class FetchError(CrdtsyncError):
    """A prefetch, refresh or attachment transfer over HTTP failed. ``status`` is
    the HTTP status when the relay answered (None: it could not be reached)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RelayEndpointError(SyncError):
    """The URL does not lead to a relay's native endpoint: an HTTP 404, or a path
    (such as ``/yjs/<doc>``) that does not speak crdtsync's protocol. The message
    names the fix; ``connect()`` raises it once instead of retrying."""


class DocumentRefusedError(SyncError):
    """The relay refuses a document's changes for good (``code``: ``read_only``,
    ``permission_denied``, ``too_large``...): they stay stored and pending until a
    token allows them, or :meth:`crdtsync.Replica.reset` drops them."""

    def __init__(self, doc_id: str, code: str, message: str) -> None:
        super().__init__(f"the relay refuses changes to {doc_id!r} ({code}): {message}")
        self.doc_id = doc_id
        self.code = code
        self.message = message


class TooManyDocumentsError(SyncError):
    """``doc_id`` does not sync: the relay syncs at most ``limit`` documents per
    connection and this replica has more open. The message says how to raise
    the limit (the relay's ``--max-docs``)."""

    def __init__(self, doc_id: str, limit: int, message: str) -> None:
        super().__init__(message)
        self.doc_id = doc_id
        self.limit = limit


def store_error_in(group: BaseExceptionGroup[BaseException]) -> StoreError | None:
    """The :class:`StoreError` in an ``ExceptionGroup`` that pycrdt raised for a
    transaction, if it holds store errors only (else None: re-raise the group)."""
    store_errors = group.subgroup(StoreError)
    if store_errors is None or len(store_errors.exceptions) != len(group.exceptions):
        return None
    first = store_errors.exceptions[0]
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    assert isinstance(first, StoreError)
    return first
