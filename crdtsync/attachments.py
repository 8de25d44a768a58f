"""Attachments (photos, voice notes): content-addressed blobs that wait for the network.

:meth:`Attachments.put` stores the bytes under their SHA-256 before it returns
and gives back a reference (``"sha256:<hex>"``, a ``str`` a record can hold).
While connected, the sync package uploads every attachment not yet on the relay
(resumable: the relay keeps what it received and says how much); a download is
verified against the reference before it is stored. Nothing here does network
I/O: :meth:`Attachments.get` asks the downloader the ``crdtsync`` package
registers (:func:`crdtsync.offline.register_fetch`) when the bytes are not here.

On disk, beside an SQLite store ``app.db``: ``app.db.attachments/<hex>`` (the
bytes) and ``<hex>.json`` (content type, documents, whether uploaded), each
written to a temporary file, fsync'd and renamed, the bytes first. A replica in
memory keeps them in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import AttachmentCorruptError, AttachmentError, AttachmentTooLargeError
from .ids import check_doc_id

__all__ = [
    "DEFAULT_MAX_ATTACHMENT_BYTES",
    "REF_PREFIX",
    "AttachmentInfo",
    "Attachments",
    "parse_ref",
]

logger = logging.getLogger("crdtsync.attachments")

REF_PREFIX = "sha256:"
DEFAULT_MAX_ATTACHMENT_BYTES = 32 << 20
"""Largest attachment :meth:`Attachments.put` accepts by default (the relay's default too)."""

Downloader = Callable[["AttachmentInfo"], Awaitable[bytes]]


def parse_ref(ref: str) -> str:
    """The hex SHA-256 of a reference ``"sha256:<64 hex digits>"``; ``ValueError`` if not one."""
    if not isinstance(ref, str) or not ref.startswith(REF_PREFIX):
        raise ValueError(f"not an attachment reference: {ref!r} (expected 'sha256:<hex>')")
    digest = ref[len(REF_PREFIX) :]
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"not an attachment reference: {ref!r} (expected 64 lowercase hex)")
    return digest


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """One attachment's bookkeeping."""

    ref: str
    size: int
    content_type: str
    doc_ids: tuple[str, ...]
    """The documents it was put for (uploads need write access to the first)."""
    uploaded: bool
    """True once the relay stored (and verified) it."""
    created_at: float
    local: bool = True
    """False for an attachment known from a document but not downloaded yet."""

    @property
    def sha256(self) -> str:
        """The hex digest."""
        return self.ref[len(REF_PREFIX) :]

    @property
    def doc_id(self) -> str | None:
        """The document it was first put for (None: known from a document only)."""
        return self.doc_ids[0] if self.doc_ids else None


class Attachments:
    """A replica's attachments (``replica.attachments``): see the module docstring.

    ``root``: the directory (None: in memory). ``on_change`` is called after the
    set of unsent attachments changed (the replica updates its sync state).
    """

    def __init__(
        self,
        root: Path | None,
        *,
        max_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        self.root = root
        self.max_bytes = max_bytes
        self._on_change = on_change
        self._clock = clock
        self._infos: dict[str, AttachmentInfo] = {}
        self._blobs: dict[str, bytes] = {}  # in memory only
        self._downloader: Downloader | None = None
        self._unsent = 0
        if root is not None:
            self._load(root)

    # -- the app's API ----------------------------------------------------------------

    def put(
        self, data: bytes, *, content_type: str = "application/octet-stream", doc_id: str
    ) -> str:
        """Store ``data`` (durably, before returning) for document ``doc_id``; return
        its reference ``"sha256:<hex>"``. It is uploaded when the replica is
        connected. Putting the same bytes again returns the same reference.

        Raises :class:`~crdtsync.errors.AttachmentTooLargeError` over the limit,
        ``TypeError`` unless ``data`` is bytes-like.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"an attachment must be bytes, not {type(data).__name__}")
        key = check_doc_id(doc_id)
        if not content_type or not isinstance(content_type, str):
            raise ValueError("content_type must be a non-empty str")
        data = bytes(data)
        if len(data) > self.max_bytes:
            raise AttachmentTooLargeError(
                f"the attachment is {len(data)} bytes; the limit is {self.max_bytes} "
                "(Replica(max_attachment_bytes=...))"
            )
        digest = hashlib.sha256(data).hexdigest()
        ref = REF_PREFIX + digest
        old = self._infos.get(digest)
        if old is not None and old.local:
            if key in old.doc_ids:
                return ref
            # Known bytes for another document: that one needs its own upload (write access).
            info = replace(old, doc_ids=(*old.doc_ids, key), uploaded=False)
        else:
            info = AttachmentInfo(ref, len(data), content_type, (key,), False, self._clock())
            self._write_blob(digest, data)
        self._write_info(info)
        self._on_change()
        logger.debug("stored attachment %s (%d bytes) for %r", ref, len(data), key)
        return ref

    async def get(self, ref: str) -> bytes:
        """The attachment's bytes: from here, or (when the replica is connected)
        downloaded from the relay, verified against ``ref`` and kept.

        Raises ``ValueError`` for a malformed reference, ``KeyError`` for one this
        replica knows nothing of while offline, and
        :class:`~crdtsync.errors.AttachmentCorruptError` /
        :class:`~crdtsync.errors.FetchError` when a download fails.
        """
        digest = parse_ref(ref)
        data = self.read_local(ref)
        if data is not None:
            return data
        info = self._infos.get(digest)
        if self._downloader is None:
            raise KeyError(f"attachment {ref} is not stored here and the replica is offline")
        if info is None:  # known from a document only: the relay checks read access
            info = AttachmentInfo(
                ref, -1, "application/octet-stream", (), True, self._clock(), False
            )
        data = await self._downloader(info)
        self.store_downloaded(info, data)
        return data

    # -- what the sync package and the cache use ----------------------------------------

    def read_local(self, ref: str) -> bytes | None:
        """The bytes if stored here (checked against the hash), else None."""
        digest = parse_ref(ref)
        info = self._infos.get(digest)
        if info is None or not info.local:
            return None
        data = self._blobs.get(digest) if self.root is None else self._read_blob(digest)
        if data is None:
            return None
        if hashlib.sha256(data).hexdigest() != digest:
            raise AttachmentCorruptError(f"the local copy of {ref} does not match its hash")
        return data

    def info(self, ref: str) -> AttachmentInfo | None:
        """The bookkeeping of ``ref`` (None if unknown)."""
        return self._infos.get(parse_ref(ref))

    def unsent(self) -> list[AttachmentInfo]:
        """Attachments stored here and not yet on the relay, oldest first."""
        found = [i for i in self._infos.values() if i.local and not i.uploaded]
        return sorted(found, key=lambda i: i.created_at)

    def unsent_count(self) -> int:
        """How many attachments wait for the relay (cheap: kept as they change)."""
        return self._unsent

    def stored(self) -> list[AttachmentInfo]:
        """Every attachment stored here."""
        return [i for i in self._infos.values() if i.local]

    def mark_uploaded(self, ref: str) -> None:
        """The relay stored and verified ``ref`` for all its documents."""
        info = self._infos.get(parse_ref(ref))
        if info is not None and not info.uploaded:
            self._write_info(replace(info, uploaded=True))
            self._on_change()

    def store_downloaded(self, info: AttachmentInfo, data: bytes) -> None:
        """Keep downloaded bytes, after checking them against the reference."""
        if hashlib.sha256(data).hexdigest() != info.sha256:
            raise AttachmentCorruptError(f"the relay sent bytes that do not match {info.ref}")
        self._write_blob(info.sha256, data)
        self._write_info(replace(info, size=len(data), uploaded=True, local=True))

    def drop_document(self, doc_id: str, *, unsent: bool = False) -> list[str]:
        """Forget the local copies of ``doc_id``'s attachments that are on the relay
        (and the unsent ones too if ``unsent``); an attachment another kept
        document also uses stays. Returns the references dropped."""
        dropped = []
        for info in list(self._infos.values()):
            if doc_id not in info.doc_ids or (not info.uploaded and not unsent):
                continue
            others = tuple(d for d in info.doc_ids if d != doc_id)
            if others:
                self._write_info(replace(info, doc_ids=others))
                continue
            self._delete(info.sha256)
            dropped.append(info.ref)
        if dropped:
            self._on_change()
        return dropped

    def set_downloader(self, downloader: Downloader | None) -> None:
        """Where :meth:`get` downloads from (the sync package sets it while connected
        or given a relay)."""
        self._downloader = downloader

    def by_document(self) -> dict[str, tuple[int, int, float]]:
        """Every document that attachments stored here were put (or fetched) for:
        ``{doc_id: (bytes stored, unsent count, when the newest was stored)}``."""
        found: dict[str, tuple[int, int, float]] = {}
        for info in self._infos.values():
            if not info.local:
                continue
            for doc_id in info.doc_ids:
                size, unsent, newest = found.get(doc_id, (0, 0, 0.0))
                found[doc_id] = (
                    size + info.size,
                    unsent + (not info.uploaded),
                    max(newest, info.created_at),
                )
        return found

    def bytes_for(self, doc_id: str) -> tuple[int, int]:
        """``(bytes stored, unsent count)`` of ``doc_id``'s attachments."""
        size = unsent = 0
        for info in self._infos.values():
            if info.local and doc_id in info.doc_ids:
                size += info.size
                unsent += not info.uploaded
        return size, unsent

    # -- storage ------------------------------------------------------------------------

    def _load(self, root: Path) -> None:
        try:
            names = os.listdir(root) if root.is_dir() else []  # created on the first put
        except OSError as exc:
            raise AttachmentError(f"cannot use the attachment directory {root}: {exc}") from exc
        for name in names:
            if not name.endswith(".json"):
                continue
            try:
                raw: dict[str, Any] = json.loads((root / name).read_text("utf-8"))
                info = AttachmentInfo(
                    raw["ref"],
                    int(raw["size"]),
                    raw["content_type"],
                    tuple(raw["doc_ids"]),
                    bool(raw["uploaded"]),
                    float(raw["created_at"]),
                )
                parse_ref(info.ref)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.error("ignoring unreadable attachment record %s: %s", root / name, exc)
                continue
            if (root / info.sha256).exists():
                self._infos[info.sha256] = info
                self._unsent += not info.uploaded
            else:
                logger.error("attachment %s: its bytes are missing from %s", info.ref, root)

    def _write_blob(self, digest: str, data: bytes) -> None:
        if self.root is None:
            self._blobs[digest] = data
            return
        try:
            self.root.mkdir(exist_ok=True)
        except OSError as exc:
            raise AttachmentError(f"cannot create {self.root}: {exc}") from exc
        _write_file(self.root / digest, data)

    def _read_blob(self, digest: str) -> bytes | None:
        assert self.root is not None
        try:
            return (self.root / digest).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AttachmentError(f"cannot read attachment {digest}: {exc}") from exc

    def _write_info(self, info: AttachmentInfo) -> None:
        if self.root is not None:
            record = {
                "ref": info.ref,
                "size": info.size,
                "content_type": info.content_type,
                "doc_ids": list(info.doc_ids),
                "uploaded": info.uploaded,
                "created_at": info.created_at,
            }
            _write_file(self.root / f"{info.sha256}.json", json.dumps(record).encode())
        self._forget(info.sha256)
        self._infos[info.sha256] = info
        self._unsent += info.local and not info.uploaded

    def _forget(self, digest: str) -> None:
        old = self._infos.pop(digest, None)
        if old is not None:
            self._unsent -= old.local and not old.uploaded

    def _delete(self, digest: str) -> None:
        self._forget(digest)
        self._blobs.pop(digest, None)
        if self.root is not None:
            for name in (f"{digest}.json", digest):  # the record first: no record, no blob
                try:
                    (self.root / name).unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise AttachmentError(f"cannot delete attachment {digest}: {exc}") from exc


def _write_file(path: Path, data: bytes) -> None:
    """Write ``path`` atomically and durably (temporary file, fsync, rename, fsync dir)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise AttachmentError(f"cannot store {path.name}: {exc}") from exc
