"""Attachments on the relay: content-addressed blobs kept on disk next to its store,
and the HTTP endpoints that upload (resumably) and download them.

Blobs are files named by their SHA-256 in a directory (by default beside the
SQLite store: ``relay.db.attachments/``; never in the document storage, never in
Redis). Each blob lists the documents it was uploaded for (``<hex>.docs``); a
partial upload is ``partial/<hex>`` until all its bytes are there and hash to
its name. Endpoints (token checks as for documents, see SECURITY.md)::

    GET  /attachments/<hex>?doc=<id>&status=1   {"received": n, "complete": bool}   (read access)
    POST /attachments/<hex>?doc=<id>&offset=<n>&size=<total>   body: the bytes from offset n
                                                 -> {"received": n, "complete": bool} (write access)
    GET  /attachments/<hex>?doc=<id>             the bytes (read access; uploaded for that document)
    GET  /attachments/<hex>                      the bytes (read access to one of its documents)

An upload is resumable: ask for the status, then send from ``received``. A
chunk at another offset gets 409 with the current ``received``. When the last
byte arrives the relay hashes the whole: a mismatch deletes the partial upload
and answers 422. ``size`` above the limit answers 413 before anything is stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path

from crdtsync.ids import check_doc_id

from .front import HttpRequest, HttpResponse, check_token
from .session import Access, Authenticate

__all__ = [
    "ATTACHMENTS_PREFIX",
    "DEFAULT_MAX_ATTACHMENT_BYTES",
    "AttachmentRoute",
    "BlobStore",
]

logger = logging.getLogger("relay.attachments")

ATTACHMENTS_PREFIX = "/attachments/"
DEFAULT_MAX_ATTACHMENT_BYTES = 32 << 20
DEFAULT_CHUNK_BYTES = 1 << 20
"""Largest upload request body: an upload of a larger attachment takes several."""


class BlobStore:
    """Attachment files in ``root`` (see the module docstring); ``root=None`` keeps
    them in memory (a relay with ``memory://`` storage)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._memory: dict[str, bytes] = {}
        self._partial: dict[str, bytearray] = {}
        self._docs: dict[str, set[str]] = {}
        if root is not None:
            (root / "partial").mkdir(parents=True, exist_ok=True)

    def received(self, digest: str) -> int:
        """Bytes of an unfinished upload of ``digest``."""
        if self.root is None:
            return len(self._partial.get(digest, b""))
        try:
            return (self.root / "partial" / digest).stat().st_size
        except FileNotFoundError:
            return 0

    def documents(self, digest: str) -> set[str]:
        """The documents ``digest`` was uploaded for (empty: not stored)."""
        if self.root is None:
            return set(self._docs.get(digest, ()))
        try:
            text = (self.root / f"{digest}.docs").read_text("utf-8")
        except FileNotFoundError:
            return set()
        return {line for line in text.splitlines() if line}

    def append(self, digest: str, offset: int, data: bytes) -> int:
        """Add ``data`` at ``offset`` of the partial upload (which must end there);
        return the new length."""
        if self.root is None:
            part = self._partial.setdefault(digest, bytearray())
            part += data
            return len(part)
        path = self.root / "partial" / digest
        with open(path, "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return offset + len(data)

    def finish(self, digest: str, doc_id: str) -> bool:
        """The upload is complete: keep it if it hashes to ``digest`` (True), else
        delete it (False). Then ``doc_id`` may read it."""
        if self.root is None:
            data = bytes(self._partial.pop(digest, b""))
            if hashlib.sha256(data).hexdigest() != digest:
                return False
            self._memory[digest] = data
            self._docs.setdefault(digest, set()).add(doc_id)
            return True
        path = self.root / "partial" / digest
        hasher = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                hasher.update(chunk)
        if hasher.hexdigest() != digest:
            path.unlink()
            return False
        os.replace(path, self.root / digest)
        self.associate(digest, doc_id)
        return True

    def associate(self, digest: str, doc_id: str) -> None:
        """``doc_id`` may read the stored blob ``digest`` from now on."""
        if self.root is None:
            self._docs.setdefault(digest, set()).add(doc_id)
            return
        if doc_id in self.documents(digest):
            return
        with open(self.root / f"{digest}.docs", "a", encoding="utf-8") as fh:
            fh.write(doc_id + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def discard(self, digest: str) -> None:
        """Forget an unfinished upload."""
        if self.root is None:
            self._partial.pop(digest, None)
            return
        (self.root / "partial" / digest).unlink(missing_ok=True)

    def read(self, digest: str) -> bytes | None:
        """The stored blob (None: not stored)."""
        if self.root is None:
            return self._memory.get(digest)
        try:
            return (self.root / digest).read_bytes()
        except FileNotFoundError:
            return None


class AttachmentRoute:
    """The ``/attachments/`` endpoints (a :class:`relay.front.Route`)."""

    prefix = ATTACHMENTS_PREFIX

    def __init__(
        self,
        blobs: BlobStore | None,
        *,
        authenticate: Authenticate | None,
        max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        self.blobs = blobs
        self.authenticate = authenticate
        self.max_attachment_bytes = max_attachment_bytes
        self.max_body = chunk_bytes
        self._locks: dict[str, asyncio.Lock] = {}

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if self.blobs is None:
            return HttpResponse.text(
                503, "attachments_disabled: start the relay with --attachments DIR"
            )
        digest = request.path[len(ATTACHMENTS_PREFIX) :]
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            return HttpResponse.text(404, "not_found: /attachments/<64 lowercase hex digits>")
        access = check_token(self.authenticate, request)
        if isinstance(access, HttpResponse):
            return access
        if request.method == "GET" and request.param("doc") is None:
            return await self._download_any(access, digest)
        try:
            doc_id = check_doc_id(request.param("doc") or "")
        except ValueError as exc:
            return HttpResponse.text(400, f"bad_request: ?doc=<document id>: {exc}")
        if request.method == "GET":
            return await self._get(request, access, digest, doc_id)
        if request.method == "POST":
            return await self._post(request, access, digest, doc_id)
        return HttpResponse(
            405, b"method_not_allowed: GET or POST\n", headers=(("Allow", "GET, POST"),)
        )

    async def _get(
        self, request: HttpRequest, access: Access, digest: str, doc_id: str
    ) -> HttpResponse:
        assert self.blobs is not None
        if not access.can_read(doc_id):
            return _denied("read", doc_id)
        complete = doc_id in self.blobs.documents(digest)
        if request.param("status") is not None:
            received = -1 if complete else self.blobs.received(digest)
            return HttpResponse.json({"received": received, "complete": complete})
        data = await asyncio.to_thread(self.blobs.read, digest) if complete else None
        if data is None:
            return HttpResponse.text(404, f"not_found: no attachment {digest} for {doc_id!r}")
        return HttpResponse(200, data, "application/octet-stream")

    async def _download_any(self, access: Access, digest: str) -> HttpResponse:
        """``GET /attachments/<hex>`` without ``?doc=``: allowed if the token may read
        one of the documents the attachment was uploaded for."""
        assert self.blobs is not None
        if not any(access.can_read(doc_id) for doc_id in self.blobs.documents(digest)):
            return HttpResponse.text(
                404, f"not_found: no attachment {digest} in a document your token may read"
            )
        data = await asyncio.to_thread(self.blobs.read, digest)
        if data is None:
            return HttpResponse.text(404, f"not_found: no attachment {digest}")
        return HttpResponse(200, data, "application/octet-stream")

    async def _post(
        self, request: HttpRequest, access: Access, digest: str, doc_id: str
    ) -> HttpResponse:
        assert self.blobs is not None
        if not access.can_write(doc_id):
            return _denied("write", doc_id)
        try:
            offset = int(request.param("offset") or "")
            size = int(request.param("size") or "")
        except ValueError:
            return HttpResponse.text(400, "bad_request: ?offset=<n>&size=<total bytes> needed")
        if size > self.max_attachment_bytes:
            return HttpResponse.text(
                413,
                f"attachment_too_large: {size} bytes; this relay keeps attachments of at "
                f"most {self.max_attachment_bytes} bytes",
            )
        if size < 0 or offset < 0 or offset + len(request.body) > size:
            return HttpResponse.text(400, "bad_request: the bytes go beyond size")
        lock = self._locks.setdefault(digest, asyncio.Lock())
        try:
            return await self._append(request, lock, digest, doc_id, span=(offset, size))
        finally:
            if not lock.locked():  # no other upload of this hash is waiting
                self._locks.pop(digest, None)

    async def _append(
        self,
        request: HttpRequest,
        lock: asyncio.Lock,
        digest: str,
        doc_id: str,
        *,
        span: tuple[int, int],
    ) -> HttpResponse:
        """Add the request's bytes at ``span`` (offset, total size), one request per hash
        at a time."""
        assert self.blobs is not None
        offset, size = span
        async with lock:
            if doc_id in self.blobs.documents(digest):
                return HttpResponse.json({"received": size, "complete": True})
            received = self.blobs.received(digest)
            if offset != received:
                return HttpResponse.json({"received": received, "complete": False}, status=409)
            received = await asyncio.to_thread(self.blobs.append, digest, offset, request.body)
            if received < size:
                return HttpResponse.json({"received": received, "complete": False})
            if not await asyncio.to_thread(self.blobs.finish, digest, doc_id):
                logger.warning("%s: attachment %s refused: hash mismatch", request.peer, digest)
                return HttpResponse.text(
                    422, f"hash_mismatch: the bytes received do not hash to {digest}; resend"
                )
        logger.info(
            "%s: attachment %s (%d bytes) stored for %r", request.peer, digest, size, doc_id
        )
        return HttpResponse.json({"received": size, "complete": True})


def _denied(what: str, doc_id: str) -> HttpResponse:
    return HttpResponse.text(
        403, f"permission_denied: your token grants no {what} access to {doc_id!r}"
    )
