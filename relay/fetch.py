"""``POST /fetch``: documents for offline apps over plain HTTP (prefetch and refresh).

The client names glob patterns (the globs of token grants, :mod:`relay.auth`)
and the state vector of each matching document it already holds; the relay
answers, in bounded responses, the diff of every matching document the token
may read against the client's state vector. Request and response bodies are
msgpack maps::

    request   {"p": [pattern, ...], "h": {doc id: state vector}, "m": max bytes, "c": cursor}
    response  {"d": [[doc id, total bytes, offset, bytes, digest], ...], "c": cursor | nil}

Documents are listed in id order. A response holds at most ``m`` bytes of diffs
(the relay's limit if lower; 256 KiB by default, as mini-program platforms cap
background fetches). A diff larger than what is left of a response comes in
pages: ``offset`` says where the bytes go, ``total`` how long the whole diff is,
and ``digest`` (the first 16 bytes of the diff's SHA-256) names one version: all
pages of a document share it, and the client keeps a document only once its
pages are complete and hash to it. The relay keeps recent large diffs for a
minute so that later pages come from the same version; if that version is gone
the next page carries a new digest and the client starts that document again.
``c`` is echoed back to get the next response; nil when done.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import msgpack

from crdtsync.errors import StoreError
from crdtsync.ids import DocId, check_doc_id

from .front import HttpRequest, HttpResponse, check_token
from .room import RoomState, replay
from .rooms import Hub
from .session import Authenticate
from .storage import RelayStorage

__all__ = ["DEFAULT_MAX_FETCH_BYTES", "FETCH_PATH", "FetchRoute"]

logger = logging.getLogger("relay.fetch")

FETCH_PATH = "/fetch"
DEFAULT_MAX_FETCH_BYTES = 256 << 10
"""Largest response body, by default (configurable: ``--max-fetch-bytes``)."""
MIN_FETCH_BYTES = 1024
MAX_PATTERNS = 32
ENTRY_OVERHEAD = 48
"""Bytes counted per document entry besides its id and data (msgpack framing, digest)."""
DIGEST_BYTES = 16
_CACHE_BYTES = 64 << 20
_CACHE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class _Diff:
    data: bytes
    digest: bytes
    made: float


class FetchRoute:
    """The ``/fetch`` endpoint of one relay (a :class:`relay.front.Route`)."""

    prefix = FETCH_PATH

    def __init__(
        self,
        hub: Hub,
        storage: RelayStorage,
        *,
        authenticate: Authenticate | None,
        max_response_bytes: int = DEFAULT_MAX_FETCH_BYTES,
    ) -> None:
        if max_response_bytes < MIN_FETCH_BYTES:
            raise ValueError(f"max_response_bytes must be at least {MIN_FETCH_BYTES}")
        self.hub = hub
        self.storage = storage
        self.authenticate = authenticate
        self.max_response_bytes = max_response_bytes
        self.max_body = 8 << 20  # state vectors of the documents a client holds
        self._cache: OrderedDict[tuple[DocId, bytes], _Diff] = OrderedDict()
        self._cached_bytes = 0

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if request.path != FETCH_PATH:
            return HttpResponse.text(404, f"not_found: no endpoint at {request.path}")
        if request.method != "POST":
            return HttpResponse(
                405, b"method_not_allowed: use POST\n", headers=(("Allow", "POST"),)
            )
        access = check_token(self.authenticate, request)
        if isinstance(access, HttpResponse):
            return access
        try:
            patterns, have, budget, cursor = self._parse(request.body)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            return HttpResponse.text(400, f"bad_request: {exc}")
        try:
            ids = [
                doc_id
                for doc_id in await self._documents()
                if any(fnmatchcase(doc_id, p) for p in patterns) and access.can_read(doc_id)
            ]
            entries, next_cursor = await self._page(ids, have, budget, cursor)
        except StoreError as exc:
            logger.error("fetch from %s: %s", request.peer, exc)
            return HttpResponse.text(503, "storage_unavailable: try again later")
        except ValueError as exc:
            return HttpResponse.text(400, f"bad_request: {exc}")
        body = msgpack.packb({"d": entries, "c": next_cursor}, use_bin_type=True)
        logger.debug("fetch from %s: %d entries, %d bytes", request.peer, len(entries), len(body))
        return HttpResponse(200, body, "application/msgpack")

    def _parse(self, body: bytes) -> tuple[list[str], dict[str, bytes], int, dict[str, Any] | None]:
        data = msgpack.unpackb(body, raw=False, strict_map_key=True)
        if not isinstance(data, dict):
            raise ValueError("the body must be a msgpack map")
        patterns = data.get("p")
        if (
            not isinstance(patterns, list)
            or not 1 <= len(patterns) <= MAX_PATTERNS
            or not all(isinstance(p, str) and 0 < len(p) <= 512 for p in patterns)
        ):
            raise ValueError(f"'p' must list 1 to {MAX_PATTERNS} glob patterns")
        have = data.get("h") or {}
        if not isinstance(have, dict) or not all(
            isinstance(k, str) and isinstance(v, bytes) for k, v in have.items()
        ):
            raise ValueError("'h' must map document ids to state vectors (bytes)")
        asked = data.get("m") or self.max_response_bytes
        if not isinstance(asked, int) or asked < MIN_FETCH_BYTES:
            raise ValueError(f"'m' must be at least {MIN_FETCH_BYTES}")
        cursor = data.get("c")
        if cursor is not None and not isinstance(cursor, dict):
            raise ValueError("'c' must be the cursor of the previous response")
        return patterns, have, min(asked, self.max_response_bytes), cursor

    async def _documents(self) -> list[DocId]:
        stored = set(await self.storage.documents())
        stored.update(
            doc_id for doc_id, room in self.hub.rooms.items() if room.state is RoomState.READY
        )
        return sorted(stored)

    async def _page(
        self,
        ids: list[DocId],
        have: dict[str, bytes],
        budget: int,
        cursor: dict[str, Any] | None,
    ) -> tuple[list[list[Any]], dict[str, Any] | None]:
        after = cursor.get("a") if cursor else None
        if after is not None and not isinstance(after, str):
            raise ValueError("bad cursor")
        partial = cursor.get("d") if cursor else None
        offset = cursor.get("o", 0) if cursor else 0
        if not isinstance(offset, int) or offset < 0:
            raise ValueError("bad cursor")
        entries: list[list[Any]] = []
        used = 0
        previous = after
        for doc_id in ids:
            if after is not None and doc_id <= after:
                continue
            start = 0
            digest_wanted: bytes | None = None
            if partial is not None and doc_id == partial:
                start, digest_wanted = offset, cursor.get("g") if cursor else None
            elif partial is not None and doc_id < partial:
                continue
            diff = await self._diff(doc_id, have.get(doc_id, b"\x00"), digest_wanted)
            if digest_wanted is not None and diff.digest != digest_wanted:
                start = 0  # that version is gone: this document starts again
            partial = None
            # Room for this entry, and for the cursor that may follow it (two ids).
            cursor_bytes = 64 + len(doc_id.encode()) + len((previous or "").encode())
            room = budget - used - ENTRY_OVERHEAD - len(doc_id.encode()) - cursor_bytes
            rest = len(diff.data) - start
            if rest <= room:
                entries.append([doc_id, len(diff.data), start, diff.data[start:], diff.digest])
                used += ENTRY_OVERHEAD + len(doc_id.encode()) + rest
                previous = doc_id
                continue
            if entries and room < budget // 4:
                return entries, {"a": previous}  # the next response starts with it
            chunk = max(room, 1)
            entries.append(
                [doc_id, len(diff.data), start, diff.data[start : start + chunk], diff.digest]
            )
            return entries, {"a": previous, "d": doc_id, "o": start + chunk, "g": diff.digest}
        return entries, None

    async def _diff(self, doc_id: DocId, state_vector: bytes, digest: bytes | None) -> _Diff:
        """The document's diff against ``state_vector``: the cached version named by
        ``digest`` (a later page) if still kept, else computed now."""
        check_doc_id(doc_id)
        key = (doc_id, hashlib.sha256(state_vector).digest())
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and digest == cached.digest and now - cached.made < _CACHE_SECONDS:
            self._cache.move_to_end(key)
            return cached
        room = self.hub.rooms.get(doc_id)
        if room is not None and room.state is RoomState.READY:
            doc = room.doc
        else:
            stored = await self.storage.load(doc_id)
            doc = (await asyncio.to_thread(replay, stored)).doc
        try:
            data = doc.get_update(state_vector)
        except (ValueError, RuntimeError) as exc:
            raise ValueError(f"bad state vector for {doc_id!r}: {exc}") from exc
        diff = _Diff(data, hashlib.sha256(data).digest()[:DIGEST_BYTES], now)
        if len(data) > MIN_FETCH_BYTES:
            self._remember(key, diff)
        return diff

    def _remember(self, key: tuple[DocId, bytes], diff: _Diff) -> None:
        old = self._cache.pop(key, None)
        if old is not None:
            self._cached_bytes -= len(old.data)
        self._cache[key] = diff
        self._cached_bytes += len(diff.data)
        while self._cached_bytes > _CACHE_BYTES and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= len(dropped.data)
