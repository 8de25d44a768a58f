"""The network half of an offline app, over plain HTTP (no websocket): prefetch,
periodic refresh and attachment downloads, against the relay's ``/fetch`` and
``/attachments/`` endpoints (``relay.fetch``, ``relay.attachments``).

The HTTP client is the standard library's ``http.client`` (one keep-alive
connection per :class:`RelayHttp`, TLS through ``ssl``), run on a worker thread
so the event loop never blocks: the library depends on nothing more than
pycrdt, msgpack and websockets. It is imported only when an app first fetches,
through the backend the ``crdtsync`` package registers
(:func:`crdtsync.offline.register_fetch`).

Prefetch stores nothing of a document until all its pages are there and hash
to the digest the relay gave (one consistent version); a page that is missing,
out of order or corrupted leaves that document untouched.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import inspect
import logging
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import msgpack

from ..attachments import AttachmentInfo
from ..errors import AttachmentTooLargeError, AuthError, FetchError, ReplicaClosedError
from ..ids import DocId, check_doc_id
from ..link import Token
from ..offline import FetchBackend, RefreshHandle
from .protocol import TOKEN_REFUSALS

__all__ = ["BACKEND", "HttpBackend", "Refresher", "RelayHttp", "http_url"]

logger = logging.getLogger("crdtsync.sync.fetch")

_SCHEMES = {"ws": "http", "wss": "https", "http": "http", "https": "https"}
DIGEST_BYTES = 16


def http_url(url: str) -> str:
    """The relay's HTTP base URL from either form (``ws://host:port`` as given to
    ``connect``, or ``http://host:port``; ``wss``/``https`` alike). ``ValueError``
    for anything else."""
    parts = urllib.parse.urlsplit(url)
    scheme = _SCHEMES.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(
            f"relay URL {url!r}: expected ws://, wss://, http:// or https:// and a host"
        )
    return f"{scheme}://{parts.netloc}"


async def token_value(token: Token) -> str | None:
    """The token to send: the string, or what the callable (plain or async) returns."""
    if token is None or isinstance(token, str):
        return token
    value = token()
    if inspect.isawaitable(value):
        value = await value
    if not isinstance(value, str) or not value:
        raise TypeError(f"the token callable returned {type(value).__name__}, not a str")
    return value


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """What a relay answered: status, reason phrase and body."""

    status_code: int
    reason_phrase: str
    content: bytes

    @property
    def text(self) -> str:
        """The body as text."""
        return self.content.decode("utf-8", "replace")


class RelayHttp:
    """One relay's HTTP endpoints (``async with RelayHttp(url, token) as relay:``).

    Requests are made one at a time over one keep-alive connection (reopened when
    the relay closed it), on a worker thread.
    """

    def __init__(self, url: str, token: Token, *, timeout: float = 30.0) -> None:
        self.base = http_url(url)
        self.token = token
        parts = urllib.parse.urlsplit(self.base)
        self._tls = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> RelayHttp:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._tls:
                self._conn = http.client.HTTPSConnection(
                    self._host,
                    self._port,
                    timeout=self._timeout,
                    context=ssl.create_default_context(),
                )
            else:
                self._conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout
                )
        return self._conn

    def _exchange(
        self, method: str, target: str, body: bytes | None, headers: dict[str, str]
    ) -> HttpResponse:
        """One request on the worker thread. Not retried: a request that fails (a
        page lost on the way) fails the fetch, which stores nothing of it."""
        conn = self._connection()
        try:
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            content = response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._conn = None
            raise
        if response.will_close:
            conn.close()
            self._conn = None
        return HttpResponse(response.status, response.reason, content)

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: dict[str, str] | None = None,
    ) -> HttpResponse:
        """One request; raises :class:`FetchError` (unreachable, or an error status),
        :class:`AuthError` (401/403 from a token refusal)."""
        headers = {"Content-Length": str(len(body or b""))}
        token = await token_value(self.token)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        target = path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            async with self._lock:
                response = await asyncio.to_thread(self._exchange, method, target, body, headers)
        except (OSError, http.client.HTTPException) as exc:
            reason = str(exc) or type(exc).__name__
            raise FetchError(f"relay {self.base} unreachable: {reason}") from exc
        if response.status_code in (401, 403):
            code, _, message = response.text.strip().partition(": ")
            if code in TOKEN_REFUSALS or code == "permission_denied":
                raise AuthError(code, message or response.reason_phrase)
        if response.status_code >= 400 and response.status_code != 409:
            text = response.text.strip() or response.reason_phrase
            if response.status_code == 413:
                raise AttachmentTooLargeError(f"{method} {path}: {text}")
            raise FetchError(
                f"{method} {path}: HTTP {response.status_code}: {text}", response.status_code
            )
        return response


@dataclass(slots=True)
class _Pages:
    total: int
    digest: bytes
    data: bytearray = field(default_factory=bytearray)


async def prefetch(
    replica: Any,
    patterns: Sequence[str],
    *,
    url: str,
    token: Token,
    max_bytes: int | None = None,
) -> list[str]:
    """See :meth:`crdtsync.Replica.prefetch`."""
    if isinstance(patterns, str) or not patterns:
        raise ValueError("patterns must be a non-empty list of glob patterns")
    held = [
        doc_id
        for doc_id in replica.documents()
        if any(fnmatchcase(doc_id, pattern) for pattern in patterns)
    ]
    have = {doc_id: replica._stored_state_vector(DocId(doc_id)) for doc_id in held}
    stored: list[str] = []
    partial: dict[str, _Pages] = {}
    cursor: dict[str, Any] | None = None
    async with RelayHttp(url, token) as relay:
        while True:
            after = cursor.get("d") or cursor.get("a") if cursor else None
            body: dict[str, Any] = {
                "p": list(patterns),
                "h": {d: sv for d, sv in have.items() if after is None or d >= after},
                "c": cursor,
            }
            if max_bytes is not None:
                body["m"] = max_bytes
            response = await relay.request("POST", "/fetch", body=msgpack.packb(body))
            try:
                answer = msgpack.unpackb(response.content, raw=False)
                entries, cursor = answer["d"], answer["c"]
            except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
                raise FetchError(f"{relay.base}/fetch sent an unreadable answer: {exc}") from exc
            for doc_id, *page in entries:
                update = _assemble(partial, check_doc_id(doc_id), *page)
                if update is not None:
                    replica._store_fetched(DocId(doc_id), update)
                    stored.append(doc_id)
            if cursor is None:
                break
    if partial:
        raise FetchError(f"incomplete pages for {', '.join(sorted(partial))}: not stored")
    logger.info("prefetched %d document(s) from %s", len(stored), http_url(url))
    return stored


def _assemble(partial: dict[str, _Pages], doc_id: str, *page: Any) -> bytes | None:
    """Add one page ``(total, offset, chunk, digest)``; the whole verified diff once
    complete, else None."""
    try:
        total, offset, chunk, digest = page
    except ValueError as exc:
        raise FetchError(f"{doc_id!r}: malformed page") from exc
    pages = partial.get(doc_id)
    if pages is None or offset == 0 or pages.digest != digest:
        if offset != 0:
            partial.pop(doc_id, None)
            raise FetchError(f"{doc_id!r}: a page is missing (offset {offset}); not stored")
        pages = partial[doc_id] = _Pages(total, digest)
    if offset != len(pages.data) or offset + len(chunk) > total:
        partial.pop(doc_id, None)
        raise FetchError(f"{doc_id!r}: pages out of order or overlapping; not stored")
    pages.data += chunk
    if len(pages.data) < total:
        return None
    del partial[doc_id]
    data = bytes(pages.data)
    if hashlib.sha256(data).digest()[:DIGEST_BYTES] != digest:
        raise FetchError(
            f"{doc_id!r}: the pages do not hash to their digest (corrupted); not stored"
        )
    return data


def doubling(initial: float = 1.0, maximum: float = 300.0) -> Iterator[float]:
    """Delays for retrying an HTTP transfer: ``initial``, doubling, at most ``maximum``."""
    delay = initial
    while True:
        yield delay
        delay = min(maximum, delay * 2)


class Refresher:
    """A background :func:`prefetch` every ``interval`` seconds (see
    :meth:`crdtsync.Replica.refresh_every`): one run at a time; a failed run is
    retried with backoff (capped by the interval); one WARNING when the relay
    stops answering, one INFO when it answers again."""

    def __init__(
        self,
        replica: Any,
        interval: float,
        patterns: list[str],
        *,
        url: str,
        token: Token,
        delays: Callable[[], Iterator[float]] = doubling,
    ) -> None:
        self.interval = interval
        self.runs = 0
        """Runs that succeeded."""
        self.failures = 0
        """Runs that failed."""
        self.last_error: Exception | None = None
        self.last_run_at: float | None = None
        self._replica = replica
        self._patterns = patterns
        self._url = url
        self._token = token
        self._delays = delays
        self._changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="crdtsync refresh")

    def cancel(self) -> None:
        """Stop refreshing."""
        self._task.cancel()

    @property
    def running(self) -> bool:
        """False once cancelled."""
        return not self._task.done()

    async def wait(
        self, predicate: Callable[[Refresher], bool], timeout: float | None = None
    ) -> None:
        """Wait until ``predicate(self)`` holds (checked after every run)."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

    async def _run(self) -> None:
        delays = self._delays()
        while True:
            try:
                await prefetch(self._replica, self._patterns, url=self._url, token=self._token)
            except ReplicaClosedError:
                logger.info("refresh from %s stopped: the replica is closed", self._url)
                return
            except (FetchError, AuthError, TypeError) as exc:
                if self.last_error is None:
                    logger.warning("refresh from %s failed (will retry): %s", self._url, exc)
                self.failures += 1
                self.last_error = exc
                wait = min(self.interval, next(delays))
            else:
                if self.last_error is not None:
                    logger.info("refresh from %s works again", self._url)
                self.runs += 1
                self.last_error = None
                self.last_run_at = time.time()
                delays = self._delays()
                wait = self.interval
            self._changed.set()
            await asyncio.sleep(wait)


class HttpBackend:
    """The :class:`crdtsync.offline.FetchBackend` the ``crdtsync`` package registers."""

    async def prefetch(
        self,
        replica: Any,
        patterns: Sequence[str],
        *,
        url: str,
        token: Token,
        max_bytes: int | None,
    ) -> list[str]:
        return await prefetch(replica, patterns, url=url, token=token, max_bytes=max_bytes)

    def refresh_every(
        self, replica: Any, interval: float, patterns: Sequence[str], *, url: str, token: Token
    ) -> RefreshHandle:
        http_url(url)
        return Refresher(replica, interval, list(patterns), url=url, token=token)

    def downloader(self, url: str, token: Token) -> Callable[[AttachmentInfo], Any]:
        http_url(url)

        async def download(info: AttachmentInfo) -> bytes:
            params = {} if info.doc_id is None else {"doc": info.doc_id}
            async with RelayHttp(url, token) as relay:
                response = await relay.request("GET", f"/attachments/{info.sha256}", params=params)
            return response.content

        return download


BACKEND: FetchBackend = HttpBackend()
