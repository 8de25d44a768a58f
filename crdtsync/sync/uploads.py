"""Attachments go up while the replica is connected.

:class:`AttachmentUploader` runs beside the connector: it sends every attachment
the replica stored and the relay lacks to ``POST /attachments/<sha256>``
(:mod:`relay.attachments`), in chunks, resuming where the relay says it stopped
(after a disconnect or a restart: the relay keeps the partial upload). It wakes
when an attachment is put and retries with backoff when the relay is away. An
attachment the relay refuses for good (too large; no write access to its
document) stays stored and unsent, reported in ``sync_state.last_error`` and the
log, and is not retried until the next connection. A refusal that is retried
(the relay answers 503: it has no attachment directory, say) is reported there
too, and cleared once an upload goes through.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from ..attachments import AttachmentInfo
from ..errors import AttachmentError, AuthError, FetchError
from ..events import StatusChanged, SyncStateChanged, SyncStatus
from ..link import Token
from .fetch import RelayHttp, doubling

__all__ = ["DEFAULT_CHUNK_BYTES", "RETRY_DELAYS", "AttachmentUploader"]

logger = logging.getLogger("crdtsync.sync.uploads")

DEFAULT_CHUNK_BYTES = 256 << 10
"""Bytes per upload request (the relay accepts up to 1 MiB by default)."""
RETRY_DELAYS = (0.5, 60.0)
"""First and longest wait before retrying a failed upload (doubling in between);
cut short when the connection is back or on ``retry_now()``."""


_CONNECTED = (SyncStatus.SYNCING, SyncStatus.SYNCED)


class AttachmentUploader:
    """Uploads a replica's unsent attachments to the relay at ``url`` (see the module
    docstring). :meth:`start`, then :meth:`stop`."""

    def __init__(
        self,
        replica: Any,
        url: Callable[[], str],
        token: Token,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        report: Callable[[Exception], None] = lambda error: None,
        cleared: Callable[[Exception], None] = lambda error: None,
    ) -> None:
        self._report = report
        self._cleared = cleared
        self._replica = replica
        self._url = url
        self._token = token
        self._chunk = chunk_bytes
        self._wake = asyncio.Event()
        self._resume = asyncio.Event()  # ends a backoff wait early
        self._connected = False
        self._refused: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._unobserve: Any = None
        self.last_error: Exception | None = None
        self.uploaded = 0
        """Attachments uploaded since :meth:`start`."""

    def start(self) -> None:
        """Start uploading in the background."""
        self._unobserve = self._replica.observe(self._on_event)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="crdtsync uploads")
        self._wake.set()

    def cancel(self) -> None:
        """Stop without waiting (the replica is closing)."""
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Stop (an upload in progress resumes on the next connection)."""
        if self._unobserve is not None:
            self._unobserve()
            self._unobserve = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def retry_now(self) -> None:
        """Cut a backoff wait after a failed upload short (``Replica.retry_now()``)."""
        self._resume.set()

    def _on_event(self, event: object) -> None:
        if isinstance(event, SyncStateChanged) and event.state.pending_attachments:
            self._wake.set()
        elif isinstance(event, StatusChanged):
            connected = event.status in _CONNECTED
            if connected and not self._connected:
                self._resume.set()  # the relay is back: no need to wait out the backoff
            self._connected = connected

    async def _run(self) -> None:
        delays = doubling(*RETRY_DELAYS)
        failing: FetchError | None = None  # reported in sync_state until uploads work
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._resume.clear()
            todo = [i for i in self._replica.attachments.unsent() if i.ref not in self._refused]
            if not todo:
                continue
            try:
                async with RelayHttp(self._url(), self._token) as relay:
                    for info in todo:
                        await self._upload(relay, info)
            except FetchError as exc:
                if self.last_error is None:
                    logger.warning(
                        "attachment upload to %s failed (will retry): %s", self._url(), exc
                    )
                if failing is None and exc.status is not None:
                    # The relay answered (503: no attachment directory...): say so in
                    # sync_state.last_error. Out of reach, the connector says it.
                    self._report(exc)
                    failing = exc
                self.last_error = exc
                with contextlib.suppress(TimeoutError):  # the delay is over
                    await asyncio.wait_for(self._resume.wait(), next(delays))
                self._wake.set()
                continue
            delays = doubling(*RETRY_DELAYS)
            if failing is not None:
                self._cleared(failing)
                failing = None
            self.last_error = None

    async def _upload(self, relay: RelayHttp, info: AttachmentInfo) -> None:
        data = self._replica.attachments.read_local(info.ref)
        if data is None:
            return
        try:
            for doc_id in info.doc_ids:
                await self._send(relay, info, doc_id, data)
        except (AuthError, AttachmentError) as exc:
            self._refused.add(info.ref)
            self.last_error = exc
            logger.error(
                "attachment %s for %r refused by the relay: %s", info.ref, info.doc_id, exc
            )
            self._report(exc)
            return
        self._replica.attachments.mark_uploaded(info.ref)
        self.uploaded += 1
        logger.info("uploaded attachment %s (%d bytes)", info.ref, len(data))

    async def _send(self, relay: RelayHttp, info: AttachmentInfo, doc_id: str, data: bytes) -> None:
        path = f"/attachments/{info.sha256}"
        status = await relay.request("GET", path, params={"doc": doc_id, "status": "1"})
        state = json.loads(status.content)
        if state["complete"]:
            return
        offset = int(state["received"])
        for _ in range(3):  # a hash mismatch (corrupted in transit) starts again
            while True:
                chunk = data[offset : offset + self._chunk]
                params = {"doc": doc_id, "offset": str(offset), "size": str(len(data))}
                try:
                    answer = await relay.request("POST", path, body=chunk, params=params)
                except FetchError as exc:
                    if exc.status != 422:
                        raise
                    logger.warning("attachment %s arrived corrupted; sending it again", info.ref)
                    offset = 0
                    break
                state = json.loads(answer.content)
                if state["complete"]:
                    return
                offset = int(state["received"])  # 409: the relay says where it is
        raise FetchError(f"attachment {info.ref} kept arriving corrupted")
