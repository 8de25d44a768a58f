"""Relay storage on Redis (``redis://host:6379/0``), shared by several relay processes.

Layout: :mod:`relay.storage.redis_layout` (one stream per document as its log, a
hash for its snapshot and one for its authorship claims, all under the
document's hash tag). Other relays' appends reach this one through
:mod:`relay.storage.redis_feed`.

Durability: an append is one Lua script (the updates, their claims and the feed
messages, all or nothing); :meth:`RedisStorage.append` returns once Redis has
replied, and the relay acknowledges only then. With ``appendonly yes`` and
``appendfsync always`` Redis writes and fsyncs its AOF before it replies, so an
acknowledged update survives a crash of the relay, of Redis and of the Redis
host. :meth:`RedisStorage.open` reads Redis's persistence settings and refuses
any other configuration (naming the setting) unless ``volatile=True``
(``--redis-volatile``): then an ACK means what the configuration gives (see
:func:`persistence_problem`).

Availability: a failed or timed-out call raises
:class:`~crdtsync.errors.StoreUnavailableError` (the relay keeps what it
received, retries, and acknowledges once stored); a Redis refusal of a write
(out of memory: ``maxmemory``) raises :class:`~crdtsync.errors.StoreWriteError`.
A background check pings Redis every ``interval`` seconds: :attr:`ready` is
False from the first failed ping until one succeeds again and the feed is
subscribed again.

Ids: the log ids of all documents come from one counter (``HINCRBY`` in the
append script), so they increase across documents in append order, as the
storage contract requires, and are never reused. Appends of this process are
sent one at a time, in call order.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import urllib.parse
import warnings
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from crdtsync.errors import (
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
    StoreVersionError,
    StoreWriteError,
)
from crdtsync.ids import DocId, check_doc_id

from .base import (
    Claim,
    RemoteCallback,
    StorageContext,
    StoredRoom,
    StoredUpdate,
    check_batch,
    check_claims,
    check_compact,
    stale_compaction,
)
from .redis_feed import Feed, Tail
from .redis_layout import APPEND, COMPACT, LAYOUT_VERSION, READ, Keys

__all__ = ["DEFAULT_PREFIX", "RedisStorage", "persistence_problem", "redact"]

logger = logging.getLogger("relay.storage.redis")
_CHECK_ON_LOOP = 1 << 20
"""Largest snapshot whose checksum a load computes on the event loop (~0.3 ms per MB)."""

DEFAULT_PREFIX = "crdtsync"
_UNAVAILABLE = (
    RedisConnectionError,  # BusyLoadingError (LOADING) too
    RedisTimeoutError,
    ReadOnlyError,  # a replica, during a failover
    MasterDownError,
    TryAgainError,
    ClusterDownError,
)

_State = Literal["new", "open", "closed"]
_MAX_CALLS = 32
"""Calls in flight at once (each holds a pooled connection): a thousand rooms
loading at once queue here instead of opening a thousand connections."""


def redact(url: str) -> str:
    """``url`` without its password (for logs and messages)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def persistence_problem(config: dict[str, str]) -> str | None:
    """Why Redis with these settings (``CONFIG GET appendonly appendfsync save``)
    does not make a write durable before it replies, or None if it does
    (``appendonly yes`` with ``appendfsync always``)."""
    appendonly = config.get("appendonly", "no").lower()
    fsync = config.get("appendfsync", "everysec").lower()
    save = config.get("save", "").strip()
    if appendonly != "yes" and not save:
        return (
            'Redis keeps nothing on disk (appendonly no, save ""): a restart of Redis '
            "loses every document"
        )
    if appendonly != "yes":
        return (
            f'Redis writes only RDB snapshots (appendonly no, save "{save}"): a crash of '
            "Redis loses what was acknowledged since its last snapshot"
        )
    if fsync != "always":
        return (
            f"Redis fsyncs its AOF {fsync!r} (appendfsync {fsync}), not at every write: a "
            "crash of the Redis host loses the last acknowledged updates"
        )
    return None


class RedisStorage(StorageContext):
    """A :class:`~relay.storage.RelayStorage` in Redis, shared by relay processes.

    ``url`` is a redis-py URL (``redis://[:password@]host:port/db``,
    ``rediss://`` for TLS, ``unix:///path?db=0``) with an optional ``prefix``
    option (default ``crdtsync``: the store's keys start with it, so several
    stores can share a database). redis-py options in the URL (``socket_timeout``,
    ...) are passed on; ``timeout`` (seconds) is the default socket timeout.
    ``volatile``: accept a Redis that does not fsync each write before replying
    (see the module docstring). ``interval``: seconds between health pings.
    """

    shared = True
    """Other relay processes append to the same store."""

    def __init__(
        self,
        url: str,
        *,
        volatile: bool = False,
        timeout: float = 5.0,
        interval: float = 1.0,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"not a Redis URL: {redact(url)!r}")
        options = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        prefixes = [value for key, value in options if key == "prefix"]
        if len(prefixes) > 1:
            raise ValueError(f"option 'prefix' given twice in storage URL {redact(url)!r}")
        self.keys = Keys(prefixes[0] if prefixes else DEFAULT_PREFIX)
        rest = urllib.parse.urlencode([(k, v) for k, v in options if k != "prefix"])
        self._client_url = urllib.parse.urlunsplit(parts._replace(query=rest))
        self.url = redact(url)
        self.volatile = volatile
        self.durable = True
        """False when a Redis that may lose acknowledged writes was accepted (volatile)."""
        self.timeout = timeout
        self.interval = interval
        self.round_trip: float | None = None
        """Seconds the last health ping took (None before the first, or while failing)."""
        self.on_round_trip: Callable[[float], None] | None = None
        """Called with each health ping's round-trip time (metrics)."""
        self.origin = secrets.token_hex(8).encode()
        """This storage's writer id, in every entry it appends (its own feed messages
        are not delivered back to it)."""
        self._state: _State = "new"
        self._life = asyncio.Lock()
        self._writing = asyncio.Lock()  # appends and compactions, one at a time, in order
        self._slots = asyncio.Semaphore(_MAX_CALLS)  # calls (connections) at once
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._client: Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._feed = Feed(
            self.keys,
            self._subscriber,
            self._read_tails,
            self.origin,
            interval=interval,
            where=self.url,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._reachable = False
        self._problem: str | None = None  # persistence settings refused (volatile not given)
        self._checked = asyncio.Event()  # set (and replaced) after every health check

    # -- life cycle -------------------------------------------------------------------------

    def _connect(self, **options: Any) -> Redis:
        options.setdefault("socket_timeout", self.timeout)
        return Redis.from_url(
            self._client_url,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 1),  # one retry: a pooled connection Redis dropped
            protocol=2,  # RESP2: pub/sub messages are plain replies on the subscriber
            **options,
        )

    def _subscriber(self) -> Redis:
        """The feed's client: one connection whose reads wait for messages."""
        return self._connect(socket_timeout=None, max_connections=1)

    async def open(self) -> None:
        """Connect, check Redis's persistence settings and the store's layout version,
        and start following and health checks. Does nothing if already open.

        Raises :class:`~crdtsync.errors.StoreUnavailableError` if Redis cannot be
        reached, ``StoreError`` if its persistence settings are refused (the
        message names the setting), ``StoreVersionError`` for a store of another
        layout version, ``StoreError`` after :meth:`close`.
        """
        async with self._life:
            if self._state == "open":
                return
            if self._state == "closed":
                raise StoreError(f"relay storage {self.url} is closed")
            client = self._connect()
            try:
                await client.ping()
                problem = await self._persistence(client)
                if problem is not None and not self.volatile:
                    raise StoreError(refusal(self.url, problem))
                self.durable = problem is None
                await self._check_layout(client)
            except RedisError as exc:
                await client.aclose()
                raise self._error("opening", exc) from exc
            except StoreError:
                await client.aclose()
                raise
            self._client = client
            self._scripts = {
                name: client.register_script(text)
                for name, text in (("append", APPEND), ("compact", COMPACT), ("read", READ))
            }
            self._reachable = True
            self._state = "open"
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._feed.run(), name=f"redis feed {self.url}"),
                loop.create_task(self._health_loop(), name=f"redis health {self.url}"),
            ]
            try:
                await self._feed.wait_connected(self.timeout)
            except BaseException:
                await self._stop(client, "new")  # the open may be tried again
                raise
        logger.info(
            "relay storage %s opened (prefix %s%s)",
            self.url,
            self.keys.prefix,
            "" if self.durable else "; VOLATILE: acknowledged updates may be lost",
        )

    async def _persistence(self, client: Redis) -> str | None:
        try:
            config = await client.config_get("appendonly", "appendfsync", "save")
        except ResponseError as exc:
            return f"its persistence settings cannot be read (CONFIG GET refused: {exc})"
        decoded = {_text(key): _text(value) for key, value in config.items()}
        problem = persistence_problem(decoded)
        if problem is not None and self.volatile:
            logger.warning("relay storage %s is volatile: %s", self.url, problem)
        return problem

    async def _check_layout(self, client: Redis) -> None:
        try:
            await client.hsetnx(self.keys.store, "version", LAYOUT_VERSION)
            version = await client.hget(self.keys.store, "version")
        except ResponseError as exc:  # WRONGTYPE: the key is something else
            raise StoreCorruptError(
                f"{self.url}: key {self.keys.store} is not a crdtsync relay store ({exc})"
            ) from exc
        if version is None or _text(version) != str(LAYOUT_VERSION):
            raise StoreVersionError(
                f"{self.url}: the store under prefix {self.keys.prefix!r} has layout "
                f"version {_text(version or b'?')}; this relay reads version {LAYOUT_VERSION}"
            )

    async def close(self) -> None:
        """Let the calls already made finish, then stop following and disconnect.
        Idempotent; every later call raises ``StoreError``."""
        async with self._life:
            self._state = "closed"
            client, self._client = self._client, None
            if client is None:
                return
            await self._idle.wait()
            await self._stop(client, "closed")
        logger.info("relay storage %s closed", self.url)

    async def _stop(self, client: Redis, state: _State) -> None:
        self._state = state
        self._client = None
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._checked.set()  # wake wait_ready()
        await client.aclose()

    def __del__(self) -> None:
        if getattr(self, "_state", "closed") == "open":
            warnings.warn(f"unclosed relay storage {self.url}", ResourceWarning, stacklevel=2)
            self._state = "closed"
            for task in self._tasks:
                task.cancel()

    # -- health --------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True while open, Redis answered the last health ping, its persistence
        settings are accepted and the feed is subscribed."""
        return (
            self._state == "open"
            and self._reachable
            and self._problem is None
            and self._feed.connected
        )

    async def wait_ready(self, ready: bool = True) -> None:
        """Return once :attr:`ready` is ``ready`` (checked after every health check)."""
        while self.ready != ready:
            if self._state != "open":
                raise StoreError(f"relay storage {self.url} is not open")
            await self._checked.wait()

    async def _health_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            checked, self._checked = self._checked, asyncio.Event()
            checked.set()
            await asyncio.sleep(self.interval)
            client = self._client
            if client is None:
                return
            start = loop.time()
            try:
                async with asyncio.timeout(max(self.interval, 0.5)):
                    await client.ping()
                    if not self._reachable:
                        await self._recheck(client)
            except (RedisError, OSError, TimeoutError) as exc:
                if self._reachable:
                    logger.error("relay storage %s unreachable: %s", self.url, exc or "timeout")
                self._reachable = False
                self.round_trip = None
                continue
            self.round_trip = loop.time() - start
            if self.on_round_trip is not None:
                self.on_round_trip(self.round_trip)
            if not self._reachable:
                logger.warning("relay storage %s reachable again", self.url)
            self._reachable = True

    async def _recheck(self, client: Redis) -> None:
        """Redis is back (maybe restarted with other settings): check them again."""
        problem = await self._persistence(client)
        self._problem = None if problem is None or self.volatile else problem
        if self._problem is not None:
            logger.error("relay storage %s: %s", self.url, refusal(self.url, self._problem))

    # -- calls ---------------------------------------------------------------------------------

    def _check_open(self) -> Redis:
        if self._state != "open" or self._client is None:
            raise StoreError(
                f"relay storage {self.url} is closed"
                if self._state == "closed"
                else f"relay storage {self.url} is not open: call open() first"
            )
        return self._client

    @asynccontextmanager
    async def _call(self, action: str, *, write: bool = False) -> AsyncIterator[Redis]:
        """Around every call: counts it (close waits for it) and turns Redis errors
        into :class:`StoreError` subclasses (``StoreWriteError`` for a refused write)."""
        client = self._check_open()
        self._busy += 1
        self._idle.clear()
        try:
            async with self._slots:
                yield client
        except RedisError as exc:
            raise self._error(action, exc, write=write) from exc
        finally:
            self._busy -= 1
            if not self._busy:
                self._idle.set()

    def _error(self, action: str, exc: RedisError, *, write: bool = False) -> StoreError:
        message = f"relay storage {self.url}: {action} failed: {exc}"
        error: StoreError
        if isinstance(exc, _UNAVAILABLE) or str(exc).startswith("MISCONF"):
            # MISCONF: Redis refuses writes until it can persist again.
            error = StoreUnavailableError(message)
        elif isinstance(exc, OutOfMemoryError):
            error = StoreWriteError(
                f"relay storage {self.url}: {action} failed: Redis is full (maxmemory): {exc}"
            )
        else:
            error = StoreWriteError(message) if write else StoreError(message)
        logger.warning("%s", error)
        return error

    # -- reads ---------------------------------------------------------------------------------

    async def load(self, doc_id: DocId, *, follow: bool = False) -> StoredRoom:
        """Everything stored for ``doc_id``, in one consistent read, every blob checked
        against its CRC-32; with ``follow``, later appends by other relays are
        delivered from just after it (see :class:`~relay.storage.base.RelayStorage`)."""
        self._check_open()
        check_doc_id(doc_id)
        if follow:
            await self._feed.subscribe(doc_id, self.timeout)
        try:
            async with self._call(f"loading {doc_id!r}") as client:
                reply = await self._scripts["read"](
                    keys=self.keys.of(doc_id), args=[0, 1, 1], client=client
                )
            snapshot = reply[1]
            if snapshot is not None and len(snapshot) > _CHECK_ON_LOOP:
                # zlib lets go of the GIL: a large snapshot's CRC does not hold the loop
                tail = await asyncio.to_thread(self._tail, doc_id, reply)
            else:
                tail = self._tail(doc_id, reply)
            claims = reply[5]
        except BaseException:
            if follow:
                self._feed.unfollow(doc_id)
            raise
        if follow:
            self._feed.start(doc_id, max(tail.last, tail.upto))
        return StoredRoom(
            doc_id,
            tail.snapshot,
            tail.upto,
            [StoredUpdate(entry_id, update) for entry_id, update, _ in tail.entries],
            {int(claims[i]): _text(claims[i + 1]) for i in range(0, len(claims), 2)},
        )

    async def _read_tails(self, wanted: Sequence[tuple[DocId, int]]) -> list[Tail]:
        """Each document's entries after the given log id, in one pipeline."""
        async with self._call(f"reading {len(wanted)} document(s)") as client:
            pipe = client.pipeline(transaction=False)
            for doc_id, after in wanted:
                await self._scripts["read"](
                    keys=self.keys.of(doc_id), args=[after, 0, 0], client=pipe
                )
            replies = await pipe.execute()
        pairs = zip(wanted, replies, strict=True)
        return [self._tail(doc_id, reply) for (doc_id, _), reply in pairs]

    def _tail(self, doc_id: DocId, reply: list[Any]) -> Tail:
        upto, snapshot, snapshot_crc, last, rows = reply[:5]
        if snapshot is not None and zlib.crc32(snapshot) != int(snapshot_crc or -1):
            raise self._corrupt(f"the snapshot of {doc_id!r} fails its checksum")
        entries = []
        for raw_id, fields in rows:
            entry_id = int(raw_id.split(b"-", 1)[0])
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            update, crc = values.get(b"u"), values.get(b"c")
            if update is None or crc is None or zlib.crc32(update) != int(crc):
                raise self._corrupt(f"log entry {entry_id} of {doc_id!r} fails its checksum")
            entries.append((entry_id, update, values.get(b"o", b"")))
        return Tail(snapshot, int(upto), entries, int(last))

    def _corrupt(self, message: str) -> StoreCorruptError:
        logger.error("relay storage %s: %s", self.url, message)
        return StoreCorruptError(f"{self.url}: {message}")

    async def documents(self) -> list[DocId]:
        """Every document with a log entry or a snapshot, sorted."""
        async with self._call("listing documents") as client:
            members = await client.zrange(self.keys.docs, 0, -1)
        return sorted(DocId(_text(member)) for member in members)

    async def delivered(self, doc_id: DocId, entry_id: int) -> None:
        """Return once every append to ``doc_id`` up to log id ``entry_id`` has been
        delivered to the :meth:`on_remote` callbacks (or was this storage's own),
        or at once if ``doc_id`` is not followed (read-your-writes across relays)."""
        await self._feed.reached(doc_id, entry_id)

    async def last_write(self, doc_id: DocId) -> float | None:
        """When ``doc_id`` was last appended to (Redis's clock, seconds since the
        epoch), or None if never (the admin tool's ``info``)."""
        check_doc_id(doc_id)
        async with self._call(f"reading {doc_id!r}") as client:
            stamp = await client.hget(self.keys.of(doc_id)[1], "at")
        return None if stamp is None else int(stamp) / 1000

    def unfollow(self, doc_id: DocId) -> None:
        """Stop delivering other relays' appends to ``doc_id``."""
        self._feed.unfollow(doc_id)

    def on_remote(self, callback: RemoteCallback) -> None:
        """Deliver other relays' appends to followed documents to ``callback``."""
        self._feed.callbacks.append(callback)

    @property
    def following(self) -> int:
        """How many documents this storage follows (rooms loaded here)."""
        return self._feed.following

    # -- writes ---------------------------------------------------------------------------------

    async def append(
        self, batch: Sequence[tuple[DocId, bytes]], claims: Sequence[Claim] = ()
    ) -> list[int]:
        """Append ``batch`` and ``claims`` in one Lua script (all or nothing) and return
        the ids assigned, in batch order. See :meth:`relay.storage.RelayStorage.append`."""
        self._check_open()
        checked = check_batch(batch)
        owners = check_claims(claims)
        if not checked and not owners:
            return []
        numbers: dict[DocId, int] = {}
        for doc_id in [doc_id for doc_id, _ in checked] + [doc_id for doc_id, _, _ in owners]:
            numbers.setdefault(doc_id, len(numbers) + 1)
        keys = [self.keys.store, self.keys.docs]
        args: list[Any] = [self.origin, len(numbers), len(checked), len(owners)]
        for doc_id in numbers:
            keys.extend(self.keys.of(doc_id))
            args.extend((doc_id, self.keys.feed(doc_id)))
        for doc_id, update in checked:
            args.extend((numbers[doc_id], zlib.crc32(update), update))
        for doc_id, client_id, owner in owners:
            args.extend((numbers[doc_id], client_id, owner))
        async with (
            self._call(f"storing {len(checked)} update(s)", write=True) as client,
            self._writing,
        ):
            first = int(await self._scripts["append"](keys=keys, args=args, client=client))
        return list(range(first, first + len(checked)))

    async def compact(self, doc_id: DocId, snapshot: bytes, upto: int) -> None:
        """Store ``snapshot`` and trim the log of ``doc_id`` up to ``upto`` in one
        script, which refuses (``ValueError``) a compaction that another relay's
        covering more has overtaken. See :meth:`relay.storage.RelayStorage.compact`."""
        self._check_open()
        doc_id, snapshot, upto = check_compact(doc_id, snapshot, upto)
        log, doc, _ = self.keys.of(doc_id)
        async with (
            self._call(f"storing the snapshot of {doc_id!r}", write=True) as client,
            self._writing,
        ):
            reply = await self._scripts["compact"](
                keys=[self.keys.store, self.keys.docs, log, doc],
                args=[doc_id, snapshot, zlib.crc32(snapshot), upto],
                client=client,
            )
        if int(reply[0]) != 1:
            problem = stale_compaction(doc_id, upto, int(reply[1]), int(reply[2]))
            raise ValueError(problem or f"compaction of {doc_id!r} up to {upto} refused")


def refusal(url: str, problem: str) -> str:
    """The message refusing a Redis whose persistence may lose acknowledged updates."""
    return (
        f"refusing to use {url}: {problem}. Run Redis with --appendonly yes --appendfsync "
        "always, or accept this with --redis-volatile (an ACK then promises only what "
        "this configuration keeps; see README, 'Running several relays on Redis')"
    )


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
