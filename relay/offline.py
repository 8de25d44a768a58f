"""The relay's endpoints for offline apps, over plain HTTP on its websocket port:
``POST /fetch`` (prefetch and refresh, :mod:`relay.fetch`) and ``/attachments/``
(:mod:`relay.attachments`), answered through :mod:`relay.front`.

:class:`OfflineOptions` is what ``Relay(offline=...)`` and the command line set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from websockets.asyncio.server import ServerConnection

from .attachments import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_ATTACHMENT_BYTES,
    AttachmentRoute,
    BlobStore,
)
from .fetch import DEFAULT_MAX_FETCH_BYTES, FetchRoute
from .front import connection_class
from .rooms import Hub
from .session import Authenticate
from .storage import RelayStorage

__all__ = ["OfflineEndpoints", "OfflineOptions", "attachments_dir"]

logger = logging.getLogger("relay.offline")


@dataclass(frozen=True, slots=True)
class OfflineOptions:
    """Limits and places of the offline-app endpoints."""

    max_fetch_bytes: int = DEFAULT_MAX_FETCH_BYTES
    """Largest ``/fetch`` response body (larger documents come in pages)."""
    max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES
    """Largest attachment kept."""
    attachment_chunk_bytes: int = DEFAULT_CHUNK_BYTES
    """Largest upload request body."""
    attachments: str | Path | None = None
    """Directory of attachment files (default: beside an SQLite store, in memory for
    ``memory://``; other storages need it set, or attachments are refused)."""


def attachments_dir(storage: RelayStorage, options: OfflineOptions) -> BlobStore | None:
    """Where this relay keeps attachments: next to its store, never inside it."""
    if options.attachments is not None:
        return BlobStore(Path(options.attachments))
    path = getattr(storage, "path", None)
    if isinstance(path, Path):
        return BlobStore(path.with_name(path.name + ".attachments"))
    if storage.url == "memory://":
        return BlobStore(None)
    logger.warning("storage %s: no attachment directory (--attachments DIR)", storage.url)
    return None


class OfflineEndpoints:
    """``/fetch`` and ``/attachments/`` of one relay."""

    def __init__(
        self,
        hub: Hub,
        storage: RelayStorage,
        *,
        authenticate: Authenticate | None,
        options: OfflineOptions | None = None,
    ) -> None:
        options = options or OfflineOptions()
        self.options = options
        self.fetch = FetchRoute(
            hub, storage, authenticate=authenticate, max_response_bytes=options.max_fetch_bytes
        )
        self.attachments = AttachmentRoute(
            None,
            authenticate=authenticate,
            max_attachment_bytes=options.max_attachment_bytes,
            chunk_bytes=options.attachment_chunk_bytes,
        )
        self._storage = storage
        self.connection_class: type[ServerConnection] = connection_class(
            [self.fetch, self.attachments],
            max_head=hub.limits.max_pre_auth_bytes,
            authenticate=authenticate,
        )

    def open(self) -> None:
        """Create the attachment directory (with the storage, when the relay starts)."""
        if self.attachments.blobs is None:
            self.attachments.blobs = attachments_dir(self._storage, self.options)
