"""The replica's :class:`~crdtsync.events.SyncState`: what a UI shows, kept current.

:class:`SyncTracker` observes the replica's events and keeps the totals a
:class:`~crdtsync.events.SyncState` needs without reading the store at every
edit: the pending count of each document (read from the store once, then kept
from :class:`~crdtsync.events.PendingChanged`), the documents the relay refuses
for good, and when everything was last acknowledged (kept in the store across
restarts). It also records the cache bookkeeping the sync events reveal: when a
document's data came from the relay (``DocumentLive``) and when it was last
fully acknowledged (``DocumentSynced``). The connection's retry figures come
from the sync link (:class:`RetryInfo`). No network code, no event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from .attachments import Attachments
from .errors import StoreError
from .events import (
    DocumentLive,
    DocumentRefused,
    DocumentRestricted,
    DocumentSynced,
    EventBus,
    PendingChanged,
    RelayErrorReceived,
    ReplicaEvent,
    StatusChanged,
    SyncState,
    SyncStateChanged,
    SyncStatus,
)
from .ids import DocId
from .store.base import Store

__all__ = ["REFUSAL_CODES", "RetryInfo", "SyncTracker", "as_datetime"]

logger = logging.getLogger("crdtsync.state")

REFUSAL_CODES = frozenset(
    {"read_only", "permission_denied", "document_too_large", "frame_too_large", "invalid_update"}
)
"""Relay error codes that refuse a document's changes for good (retrying the same
changes with the same token cannot succeed)."""

_SYNCED_KEY = "synced_at"


def as_datetime(timestamp: float | None) -> datetime | None:
    """Seconds since the epoch as an aware UTC datetime (None stays None)."""
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


@runtime_checkable
class RetryInfo(Protocol):
    """What a sync link reports about its retries (``Connector.retry``)."""

    @property
    def attempts(self) -> int:
        """Connection attempts since the last success."""
        ...

    @property
    def next_attempt_at(self) -> float | None:
        """When the next attempt is due (seconds since the epoch; None: not waiting)."""
        ...

    @property
    def last_error(self) -> Exception | None:
        """What failed last (None once connected again)."""
        ...

    def retry_now(self) -> None:
        """Skip the backoff wait."""
        ...


class SyncTracker:
    """Keeps a replica's sync state (see the module docstring). Create it, then
    :meth:`attach`; :meth:`state` is cheap."""

    def __init__(
        self,
        store: Store,
        events: EventBus,
        attachments: Attachments,
        *,
        clock: Callable[[], float],
        status: Callable[[], SyncStatus],
        retry: Callable[[], RetryInfo | None],
    ) -> None:
        self._store = store
        self._events = events
        self._attachments = attachments
        self._clock = clock
        self._status = status
        self._retry = retry
        self._pending = {u.doc_id: u.pending for u in store.usage() if u.pending}
        self._updates = sum(self._pending.values())
        self.refused: dict[DocId, str] = {}
        saved = store.meta_value(_SYNCED_KEY)
        self._synced_at = float(saved) if saved else None
        self._last: SyncState | None = None
        self._unobserve: Callable[[], None] | None = None

    def attach(self) -> None:
        """Start observing the replica's events."""
        if self._unobserve is None:
            self._unobserve = self._events.observe(self.on_event)

    def detach(self) -> None:
        """Stop observing."""
        if self._unobserve is not None:
            self._unobserve()
            self._unobserve = None

    def state(self) -> SyncState:
        """The current :class:`SyncState`."""
        retry = self._retry()
        return SyncState(
            status=self._status(),
            pending_documents=len(self._pending),
            pending_updates=self._updates,
            pending_attachments=self._attachments.unsent_count(),
            last_synced_at=as_datetime(self._synced_at),
            last_error=None if retry is None else retry.last_error,
            attempts=0 if retry is None else retry.attempts,
            next_attempt_at=None if retry is None else as_datetime(retry.next_attempt_at),
            refused=tuple(sorted(self.refused.items())),
        )

    def changed(self) -> None:
        """Something the state depends on changed: emit SyncStateChanged if it did."""
        state = self.state()
        last = self._last
        if (
            last is not None
            and last.pending_attachments
            and not state.pending_attachments
            and state.status is SyncStatus.SYNCED
        ):
            self._stamp()  # the last attachment went up: everything is on the relay now
            state = self.state()
        if state != last:
            self._last = state
            self._events.emit(SyncStateChanged(state))

    def note_status(self, status: SyncStatus) -> None:
        """The connection's status is now ``status`` (SYNCED: every change acknowledged;
        everything is, once no attachment waits either)."""
        if status is SyncStatus.SYNCED and not self._attachments.unsent_count():
            self._stamp()

    def _stamp(self) -> None:
        """Everything is acknowledged now (``last_synced_at``, kept in the store)."""
        self._synced_at = self._clock()
        self._record(lambda: self._store.set_meta_value(_SYNCED_KEY, repr(self._synced_at)))

    def forget(self, doc_id: DocId) -> None:
        """``doc_id`` was removed or reset: nothing of it is pending or refused."""
        self._set_pending(doc_id, 0)
        self.refused.pop(doc_id, None)
        self.changed()

    def _set_pending(self, doc_id: DocId, pending: int) -> None:
        self._updates += pending - self._pending.get(doc_id, 0)
        if pending:
            self._pending[doc_id] = pending
        else:
            self._pending.pop(doc_id, None)

    def on_event(self, event: ReplicaEvent) -> None:
        """EventBus observer."""
        if isinstance(event, PendingChanged):
            self._set_pending(event.doc_id, event.pending)
        elif isinstance(event, StatusChanged):
            if event.state is None:  # not noted yet (see note_status)
                self.note_status(event.status)
        elif isinstance(event, DocumentSynced):
            if event.synced:
                now = self._clock()
                self._record(lambda: self._store.touch(event.doc_id, synced_at=now))
                self.refused.pop(event.doc_id, None)
        elif isinstance(event, DocumentLive):
            now = self._clock()
            self._record(lambda: self._store.touch(event.doc_id, fetched_at=now))
        elif isinstance(event, DocumentRestricted):
            self._refuse(event.doc_id, event.code, event.message)
        elif isinstance(event, RelayErrorReceived):
            error = event.error
            if error.doc_id is not None and error.seq is not None and error.code in REFUSAL_CODES:
                self._refuse(error.doc_id, error.code, error.message)
        else:
            return
        self.changed()

    def _refuse(self, doc_id: DocId, code: str, message: str) -> None:
        if self.refused.get(doc_id) != code:
            self.refused[doc_id] = code
            self._events.emit(DocumentRefused(doc_id, code, message or code))

    def _record(self, write: Callable[[], None]) -> None:
        """A bookkeeping write; its failure costs a timestamp, never a change."""
        try:
            write()
        except (StoreError, KeyError) as exc:
            logger.warning("could not record sync bookkeeping: %s", exc)
