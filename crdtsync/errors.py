"""The one exception tree of crdtsync.

Every error the library raises on purpose derives from :class:`CrdtsyncError`::

    CrdtsyncError
    ├── StoreError                 the local store failed or cannot be trusted
    │   ├── StoreCorruptError      not a crdtsync store, truncated, or a checksum mismatch
    │   ├── StoreVersionError      written with a schema version this code does not know
    │   ├── StoreLockedError       another process (or Replica) has the store open
    │   └── StoreWriteError        a write failed (disk full, I/O error); nothing was lost
    ├── ReplicaClosedError         the replica was used after close()
    ├── InvalidUpdateError         an update could not be decoded or applied (also ValueError)
    ├── ProtocolError              a frame could not be decoded or breaks the protocol
    └── SyncError                  syncing with a relay failed for good (not retried)
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
    "AuthError",
    "CrdtsyncError",
    "InvalidUpdateError",
    "ProtocolError",
    "RelayRefusedError",
    "ReplicaClosedError",
    "StoreCorruptError",
    "StoreError",
    "StoreLockedError",
    "StoreVersionError",
    "StoreWriteError",
    "SyncError",
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
