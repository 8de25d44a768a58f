"""What an app that lives offline asks of its replica: a sync state for the UI,
prefetch and background refresh, an expiring cache that never drops unsent work,
a way out of refused changes, and attachments.

:class:`OfflineReplica` is a base class of :class:`crdtsync.Replica` (like
:class:`crdtsync.link.Connectable`); its methods are the replica's. The network
half (HTTP prefetch, refresh, attachment transfer) lives in :mod:`crdtsync.sync`
and is reached through the backend the ``crdtsync`` package registers with
:func:`register_fetch`, imported on first use: nothing here imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .attachments import Attachments, Downloader
from .compaction import rebuild_document
from .errors import DocumentNotCachedError
from .events import DocumentFetched, EventBus, StatusChanged, SyncState, SyncStatus
from .ids import DocId, check_doc_id, new_client_id
from .link import SyncLink, Token
from .state import RetryInfo, SyncTracker, as_datetime
from .store.base import EMPTY_SNAPSHOT, DocumentUsage, Store

if TYPE_CHECKING:
    from .recording import OpenDocument
    from .records import Records

__all__ = [
    "CachedDocument",
    "FetchBackend",
    "OfflineReplica",
    "RefreshHandle",
    "register_fetch",
]

logger = logging.getLogger("crdtsync.offline")


class RefreshHandle(Protocol):
    """A running :meth:`OfflineReplica.refresh_every`."""

    def cancel(self) -> None:
        """Stop refreshing (a run in progress is cancelled)."""
        ...


class FetchBackend(Protocol):
    """The network half of an offline app (:mod:`crdtsync.sync.fetch`)."""

    async def prefetch(
        self,
        replica: Any,
        patterns: Sequence[str],
        *,
        url: str,
        token: Token,
        max_bytes: int | None,
    ) -> list[str]:
        """Fetch and store what matches; return the ids stored."""
        ...

    def refresh_every(
        self, replica: Any, interval: float, patterns: Sequence[str], *, url: str, token: Token
    ) -> RefreshHandle:
        """Prefetch now and every ``interval`` seconds, in the background."""
        ...

    def downloader(self, url: str, token: Token) -> Downloader:
        """Fetches attachments from the relay at ``url``."""
        ...


@dataclass(slots=True)
class _Registry:
    loader: Callable[[], FetchBackend] | None = None


_FETCH = _Registry()


def register_fetch(loader: Callable[[], FetchBackend]) -> None:
    """Tell the replica where its network half is (the ``crdtsync`` package does)."""
    _FETCH.loader = loader


def _backend() -> FetchBackend:
    if _FETCH.loader is None:
        raise RuntimeError("no fetch backend registered (import crdtsync, not its submodules)")
    return _FETCH.loader()


@dataclass(frozen=True, slots=True)
class CachedDocument:
    """One stored document, as :meth:`OfflineReplica.usage` reports it."""

    doc_id: DocId
    bytes: int
    """Stored bytes: the document and its attachments stored here."""
    pending_updates: int
    pending_attachments: int
    last_opened: datetime | None
    last_fetched: datetime | None
    """When its data last came from the relay (``fetched_at``)."""
    last_synced: datetime | None
    """When every local change of it was last acknowledged."""
    open: bool
    """Opened by this process (never evicted while open)."""

    @property
    def pending(self) -> bool:
        """True if anything of it waits to be uploaded."""
        return bool(self.pending_updates or self.pending_attachments)


class OfflineReplica:
    """The offline-app methods of :class:`crdtsync.Replica` (see the module docstring)."""

    _store: Store
    _docs: dict[DocId, OpenDocument]
    _collections: dict[DocId, Records]
    _link: SyncLink | None
    events: EventBus

    def _check_open(self) -> None:  # pragma: no cover - Replica's
        raise NotImplementedError

    def _offline_init(
        self,
        path: Path | None,
        *,
        clock: Callable[[], float],
        evict_after: timedelta | None,
        max_attachment_bytes: int,
    ) -> None:
        self._clock = clock
        self.evict_after = evict_after
        root = None if path is None else path.with_name(path.name + ".attachments")
        self._attachments = Attachments(
            root, max_bytes=max_attachment_bytes, on_change=self._sync_state_changed, clock=clock
        )
        self._tracker: SyncTracker | None = None
        self._fetched_here: set[DocId] = set()  # prefetched by this process: kept in sync
        self._relay_url: str | None = None
        self._relay_token: Token = None

    # -- sync state ------------------------------------------------------------------

    def _sync_tracker(self) -> SyncTracker:
        if self._tracker is None:
            self._tracker = SyncTracker(
                self._store,
                self.events,
                self._attachments,
                clock=self._clock,
                status=self._link_status,
                retry=self._retry_info,
            )
            self._tracker.attach()
        return self._tracker

    def _link_status(self) -> SyncStatus:
        return SyncStatus.OFFLINE if self._link is None else self._link.status

    def _retry_info(self) -> RetryInfo | None:
        link = self._link or getattr(self, "_failed_link", None)  # connect() raised: its error
        retry = getattr(link, "retry", None)
        return retry if isinstance(retry, RetryInfo) else None

    def _sync_state_changed(self) -> None:
        """Something :attr:`sync_state` shows changed (attachments, retries)."""
        if self._tracker is not None:
            self._tracker.changed()

    @property
    def sync_state(self) -> SyncState:
        """What a UI shows: connection status, pending documents, changes and
        attachments, when everything was last acknowledged, the last error, retry
        attempts and when the next one is due, documents the relay refuses. Also
        delivered by the :class:`~crdtsync.events.SyncStateChanged` event."""
        self._check_open()
        return self._sync_tracker().state()

    def _status_event(self, status: SyncStatus) -> StatusChanged:
        """The StatusChanged event the connector emits, carrying the sync state."""
        tracker = self._sync_tracker()
        tracker.note_status(status)
        return StatusChanged(status, tracker.state())

    def retry_now(self) -> None:
        """Connect now instead of waiting out the backoff (a "retry" button).
        Harmless when connected or not connecting."""
        retry = self._retry_info()
        if retry is not None:
            retry.retry_now()

    # -- attachments -------------------------------------------------------------------

    @property
    def attachments(self) -> Attachments:
        """Photos, voice notes...: ``put(bytes, content_type=, doc_id=)`` stores them
        now and returns a reference (``"sha256:..."``); ``await get(ref)`` reads them
        (downloading from the relay when needed). See :mod:`crdtsync.attachments`."""
        return self._attachments

    def _documents_to_sync(self) -> list[DocId]:
        """What a new connection syncs: the open documents, every stored one with
        unacknowledged changes (uploaded without the app opening it), and those
        this process prefetched (kept subscribed for live updates)."""
        wanted = dict.fromkeys(self._docs)
        wanted.update(dict.fromkeys(u.doc_id for u in self._store.usage() if u.pending))
        wanted.update(dict.fromkeys(sorted(self._fetched_here)))
        return list(wanted)

    def _remember_relay(self, url: str, token: Token) -> None:
        """Where :meth:`prefetch` and attachment downloads go by default."""
        self._relay_url, self._relay_token = url, token
        self._attachments.set_downloader(_backend().downloader(url, token))

    # -- prefetch and refresh -------------------------------------------------------------

    def _relay(self, url: str | None, token: Token) -> tuple[str, Token]:
        if url is not None:
            return url, token
        if self._link is not None:
            return self._link.url, token if token is not None else self._relay_token
        if self._relay_url is not None:
            return self._relay_url, token if token is not None else self._relay_token
        raise ValueError("no relay: pass url=, or connect() first")

    async def prefetch(
        self,
        patterns: Sequence[str],
        *,
        url: str | None = None,
        token: Token = None,
        max_bytes: int | None = None,
    ) -> list[str]:
        """Fetch over HTTP (no websocket) every document the token may read that
        matches one of ``patterns`` (the globs of token grants), store it, and
        return the ids stored. ``url``: the relay (``ws://``, ``wss://``, ``http://``
        or ``https://`` host:port; default: the one connected to); ``token``: as for
        :meth:`connect`. ``max_bytes``: the largest response asked for (default: the
        relay's, 256 KiB); larger documents come in pages and are stored only once
        complete and verified. Records :meth:`fetched_at`. Raises
        :class:`~crdtsync.errors.FetchError` (or :class:`~crdtsync.errors.AuthError`)."""
        self._check_open()
        relay_url, relay_token = self._relay(url, token)
        stored = await _backend().prefetch(
            self, list(patterns), url=relay_url, token=relay_token, max_bytes=max_bytes
        )
        self._auto_evict()
        return stored

    def refresh_every(
        self,
        interval: timedelta,
        patterns: Sequence[str],
        *,
        url: str | None = None,
        token: Token = None,
    ) -> RefreshHandle:
        """Prefetch ``patterns`` now and every ``interval`` while the app runs (on the
        running event loop). A failed run (relay down) is retried with backoff and
        never overlaps the next; ``cancel()`` on the returned handle stops it."""
        self._check_open()
        if interval <= timedelta(0):
            raise ValueError(f"interval must be positive, not {interval}")
        relay_url, relay_token = self._relay(url, token)
        return _backend().refresh_every(
            self, interval.total_seconds(), list(patterns), url=relay_url, token=relay_token
        )

    def fetched_at(self, doc_id: str) -> datetime | None:
        """When ``doc_id``'s data last came from the relay (prefetch, refresh or a live
        sync): "data as of ...". None if never, or not stored."""
        self._check_open()
        key = check_doc_id(doc_id)
        for entry in self._store.usage():
            if entry.doc_id == key:
                return as_datetime(entry.fetched_at)
        return None

    def _stored_state_vector(self, doc_id: DocId) -> bytes:
        """The state vector of a stored document, without keeping it open."""
        state = self._docs.get(doc_id)
        if state is not None:
            return state.doc.get_state()
        stored = self._store.load_document(doc_id)
        if stored is None:
            return b"\x00"
        live, _ = rebuild_document(stored)
        return live.doc.get_state()

    def _store_fetched(self, doc_id: DocId, update: bytes) -> None:
        """Store a verified diff from the relay (prefetch), and record when. A
        document not open stays closed (it is loaded, updated and let go)."""
        self._check_open()
        state = self._docs.get(doc_id)
        if state is None:
            state = self._load(doc_id)
            try:
                state.apply_remote(update)
            finally:
                state.closed = True  # let go: the next open() loads it again
        else:
            state.apply_remote(update)
        now = self._clock()
        self._store.touch(doc_id, fetched_at=now)
        self._fetched_here.add(doc_id)
        self.events.emit(DocumentFetched(doc_id, as_datetime(now) or datetime.now(UTC)))

    def _load(self, doc_id: DocId) -> OpenDocument:  # pragma: no cover - Replica's
        raise NotImplementedError

    # -- the cache ---------------------------------------------------------------------

    def usage(self) -> list[CachedDocument]:
        """Every stored document: bytes (with its attachments), pending changes and
        attachments, when it was last opened, fetched and synced; also every
        document only attachments stored here were put for (``put(...,
        doc_id=...)`` names a document the store need not have), sorted by id."""
        self._check_open()
        return [cached for cached, _ in self._usage()]

    def _usage(self) -> list[tuple[CachedDocument, float]]:
        """:meth:`usage`, each with when it was last used: opened or fetched, or for
        a document known only from its attachments, when the newest was stored."""
        attached = self._attachments.by_document()
        rows: list[tuple[CachedDocument, float]] = []
        for entry in self._store.usage():
            size, unsent, _ = attached.pop(entry.doc_id, (0, 0, 0.0))
            rows.append((self._cached(entry, size, unsent), entry.last_used or 0.0))
        for doc_id, (size, unsent, stored_at) in attached.items():
            cached = CachedDocument(DocId(doc_id), size, 0, unsent, None, None, None, False)
            rows.append((cached, stored_at))
        rows.sort(key=lambda row: row[0].doc_id)
        return rows

    def _cached(self, entry: DocumentUsage, size: int, unsent: int) -> CachedDocument:
        pending = entry.pending
        state = self._docs.get(entry.doc_id)
        if state is not None:
            pending = state.pending
        return CachedDocument(
            entry.doc_id,
            entry.bytes + size,
            pending,
            unsent,
            as_datetime(entry.opened_at),
            as_datetime(entry.fetched_at),
            as_datetime(entry.synced_at),
            state is not None,
        )

    def evict(self, unused_for: timedelta | None = None, max_bytes: int | None = None) -> list[str]:
        """Drop the local copy of documents not opened or fetched for ``unused_for``,
        then (``max_bytes``) of the least recently used ones until the store holds
        at most ``max_bytes``. Never one with pending changes or unsent attachments,
        nor one open in this process. Attachments stored for a document the store
        does not have count as used when they were stored. Returns the ids evicted;
        an evicted document comes back from the relay when opened online (or raises
        :class:`~crdtsync.errors.DocumentNotCachedError` with ``offline_only=True``)."""
        self._check_open()
        if unused_for is None and max_bytes is None:
            raise ValueError("give unused_for=, max_bytes= or both")
        now = self._clock()
        rows = self._usage()
        total = sum(cached.bytes for cached, _ in rows)
        candidates = [(c, used) for c, used in rows if not c.open and not c.pending]
        candidates.sort(key=lambda row: row[1])
        evicted: list[str] = []
        for entry, last_used in candidates:
            stale = unused_for is not None and now - last_used >= unused_for.total_seconds()
            over = max_bytes is not None and total > max_bytes
            if stale or over:
                self._drop(entry.doc_id)
                total -= entry.bytes
                evicted.append(entry.doc_id)
        if evicted:
            logger.info("evicted %d document(s): %s", len(evicted), ", ".join(evicted[:10]))
        return evicted

    def _auto_evict(self) -> None:
        if self.evict_after is not None:
            self.evict(unused_for=self.evict_after)

    def remove(self, doc_id: str, *, discard_pending: bool = False) -> None:
        """Drop the local copy of ``doc_id`` (and its attachments). Refuses (``ValueError``)
        while it has changes or attachments not yet on the relay, unless
        ``discard_pending=True``. An open document is closed first: its ``Doc`` is
        no longer recorded. Unknown ids are ignored."""
        self._check_open()
        key = check_doc_id(doc_id)
        entry = next((e for e in self.usage() if e.doc_id == key), None)
        if entry is None:
            return
        if entry.pending and not discard_pending:
            raise ValueError(
                f"{doc_id!r} has {entry.pending_updates} change(s) and "
                f"{entry.pending_attachments} attachment(s) not on the relay yet; "
                "pass discard_pending=True to drop them"
            )
        self._drop(key, unsent=discard_pending)

    def _drop(self, doc_id: DocId, *, unsent: bool = False) -> None:
        self._close_document(doc_id)
        self._store.remove_document(doc_id)
        self._attachments.drop_document(doc_id, unsent=unsent)
        if self._tracker is not None:
            self._tracker.forget(doc_id)

    def _close_document(self, doc_id: DocId) -> bool:
        """Stop recording ``doc_id``'s open ``Doc`` and stop syncing it. True if it was open."""
        state = self._docs.pop(doc_id, None)
        self._collections.pop(doc_id, None)  # records() makes a new one on the next Doc
        forget = getattr(self._link, "forget_document", None)
        if forget is not None:
            forget(doc_id)
        if state is None:
            return False
        state.closed = True
        return True

    def reset(self, doc_id: str) -> None:
        """Drop this replica's unacknowledged changes of ``doc_id`` (a document the
        relay refuses for good: read-only, permission denied, too large) and reload
        the relay's state: the local copy is emptied and the document writes under
        a new client id, in one transaction (nothing acknowledged is lost: the relay
        has it), then it resyncs from the relay at once if connected, else on the
        next connect of this process (or whenever it is opened online). An open
        ``Doc`` of it is closed: call ``open()`` again (``records()`` again for a
        records collection)."""
        self._check_open()
        key = check_doc_id(doc_id)
        if self._store.document_info(key) is None:
            raise KeyError(f"no document {doc_id!r} in this replica")
        was_open = self._close_document(key)
        dropped = self._store.document_info(key)
        self._store.reset_document(key, EMPTY_SNAPSHOT, new_client_id())
        self._fetched_here.add(key)  # reloaded on this connection or the next one
        if self._tracker is not None:
            self._tracker.forget(key)
        logger.warning(
            "reset %r: dropped %d unacknowledged change(s); reloading from the relay",
            doc_id,
            0 if dropped is None else dropped.pending,
        )
        resync = getattr(self._link, "resync_document", None)
        if resync is not None or was_open:
            self.open(key)  # type: ignore[attr-defined]
            if resync is not None:
                resync(key)

    def _check_cached(self, doc_id: DocId) -> None:
        """``open(doc_id, offline_only=True)``: raise unless the store has it."""
        if doc_id not in self._docs and self._store.document_info(doc_id) is None:
            raise DocumentNotCachedError(
                f"{doc_id!r} is not stored on this device (never fetched, or evicted); "
                "open it while online, or prefetch() it"
            )
