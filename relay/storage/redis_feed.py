"""The Redis backend's follower: what other relay processes append to the documents
this relay has loaded reaches it, in log order, each update once.

Pub/sub pushes, the stream is the truth (as y-redis reads its streams by id):

- every followed document has a *cursor*, the last log id this relay has seen
  of it (from its load, its own appends, or delivered updates);
- each append publishes ``prev id origin update`` on the document's sharded
  channel (:mod:`relay.storage.redis_layout`). A message whose ``prev`` is at or
  below the cursor continues what was seen: it is delivered (unless this relay
  wrote it) and the cursor moves to ``id``. One at or below the cursor is a
  duplicate. Any other means messages were missed: the document *catches up*,
  reading the stream after its cursor (and the snapshot, if compaction trimmed
  what it missed) before it takes messages again;
- every (re)subscription is confirmed by Redis; a confirmation after a lost
  connection triggers a catch-up too. So a relay that lost its connection, or
  was disconnected by Redis for reading too slowly (``client-output-buffer-limit
  pubsub``), misses nothing: it never relies on pub/sub having delivered.

Work per update is one message to each relay that follows the document:
nothing for relays that do not have it loaded.

One subscriber connection, owned by :meth:`Feed.run`: it connects, subscribes
to every followed document, reads, and pings every ``interval`` seconds; a
connection silent for three intervals is dropped and made again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from crdtsync.errors import StoreError, StoreUnavailableError
from crdtsync.ids import DocId

from .base import RemoteCallback
from .redis_layout import Keys, parse_feed

__all__ = ["Feed", "Tail"]

logger = logging.getLogger("relay.storage.redis")

_SUBSCRIBE_CHUNK = 500  # channels per SSUBSCRIBE when (re)subscribing everything
_CATCH_UP_CHUNK = 100  # documents read per pipeline when catching up


@dataclass(frozen=True, slots=True)
class Tail:
    """What a document's stream holds after some log id: the snapshot (if it
    covers entries after that id), its ``upto``, the entries ``(id, update,
    origin)`` and the document's last log id."""

    snapshot: bytes | None
    upto: int
    entries: list[tuple[int, bytes, bytes]]
    last: int


ReadTails = Callable[[Sequence[tuple[DocId, int]]], Awaitable[list[Tail]]]
"""``read([(doc_id, after), ...])``: each document's :class:`Tail` after ``after``."""


@dataclass(slots=True, eq=False)
class _Followed:
    channel: bytes
    cursor: int | None = None  # None: loading (messages wait in `held`)
    confirmed: bool = False
    missed: bool = False  # the connection was lost since the subscription was confirmed
    catching_up: bool = False
    held: list[bytes] = field(default_factory=list)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)


class Feed:
    """Follows documents of one store for one relay process (see the module docstring).

    ``connect()`` returns a fresh subscriber :class:`Redis` client (one
    connection); ``read`` reads tails (on the storage's main client);
    ``origin`` is this relay's writer id (its own appends are not delivered).
    """

    def __init__(
        self,
        keys: Keys,
        connect: Callable[[], Redis],
        read: ReadTails,
        origin: bytes,
        *,
        interval: float = 1.0,
        where: str = "Redis",
    ) -> None:
        self.keys = keys
        self.callbacks: list[RemoteCallback] = []
        self.interval = interval
        self.connected = False
        """True while the subscriber connection is up (subscriptions sent)."""
        self._up = asyncio.Event()
        self.messages = 0
        """Feed messages received (each is one append to a followed document)."""
        self.delivered = 0
        """Updates delivered to the callbacks (other relays' appends)."""
        self.catch_ups = 0
        """Documents caught up from the stream (missed messages, reconnects)."""
        self._connect = connect
        self._read = read
        self._origin = origin
        self._where = where
        self._docs: dict[DocId, _Followed] = {}
        self._by_channel: dict[bytes, DocId] = {}
        self._outbox: asyncio.Queue[tuple[str, list[bytes]]] = asyncio.Queue()
        self._lagging: dict[DocId, None] = {}  # documents waiting for a catch-up
        self._lag = asyncio.Event()
        self._silent_since = 0.0
        self._advanced = asyncio.Event()  # set (and replaced) whenever a cursor moves

    # -- following ---------------------------------------------------------------------------

    async def subscribe(self, doc_id: DocId, timeout: float) -> None:
        """Follow ``doc_id`` (its messages wait until :meth:`start`); return once Redis
        confirmed the subscription. ``StoreUnavailableError`` after ``timeout`` s."""
        followed = self._docs.get(doc_id)
        if followed is None:
            channel = self.keys.feed(doc_id)
            followed = self._docs[doc_id] = _Followed(channel)
            self._by_channel[channel] = doc_id
            if self.connected:
                self._outbox.put_nowait(("SSUBSCRIBE", [channel]))
        followed.cursor = None
        followed.catching_up = False
        self._lagging.pop(doc_id, None)
        try:
            async with asyncio.timeout(timeout):
                await followed.subscribed.wait()
        except TimeoutError as exc:
            self.unfollow(doc_id)
            raise StoreUnavailableError(
                f"{self._where}: no subscription to {doc_id!r} within {timeout:g} s"
            ) from exc
        followed.missed = False  # the load reads after this: it sees what came before

    def start(self, doc_id: DocId, cursor: int) -> None:
        """The load of ``doc_id`` saw its log up to ``cursor``: deliver what follows."""
        followed = self._docs.get(doc_id)
        if followed is None or followed.cursor is not None:
            return
        followed.cursor = cursor
        self._moved()
        if followed.missed:  # the connection was lost while loading
            self._catch_up(doc_id, followed)
        else:
            self._release(doc_id, followed)

    def unfollow(self, doc_id: DocId) -> None:
        """Stop following ``doc_id``."""
        followed = self._docs.pop(doc_id, None)
        if followed is None:
            return
        del self._by_channel[followed.channel]
        self._lagging.pop(doc_id, None)
        self._moved()
        if self.connected:
            self._outbox.put_nowait(("SUNSUBSCRIBE", [followed.channel]))

    async def wait_connected(self, timeout: float) -> None:
        """Return once the subscriber connection is up; ``StoreUnavailableError``
        after ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self._up.wait()
        except TimeoutError as exc:
            raise StoreUnavailableError(
                f"{self._where}: no subscriber connection within {timeout:g} s"
            ) from exc

    async def reached(self, doc_id: DocId, entry_id: int) -> None:
        """Return once ``doc_id``'s cursor is at ``entry_id`` or beyond (everything up to
        it delivered), or once it is not followed."""
        while True:
            followed = self._docs.get(doc_id)
            if followed is None or (followed.cursor is not None and followed.cursor >= entry_id):
                return
            await self._advanced.wait()

    def _moved(self) -> None:
        advanced, self._advanced = self._advanced, asyncio.Event()
        advanced.set()

    @property
    def following(self) -> int:
        """How many documents are followed."""
        return len(self._docs)

    # -- messages ----------------------------------------------------------------------------

    def _message(self, channel: bytes, data: bytes) -> None:
        doc_id = self._by_channel.get(channel)
        if doc_id is None:
            return  # unsubscribed since
        followed = self._docs[doc_id]
        if followed.cursor is None or followed.catching_up:
            followed.held.append(data)
        else:
            self._take(doc_id, followed, data)

    def _take(self, doc_id: DocId, followed: _Followed, data: bytes) -> None:
        """Deliver one feed message in order, or start a catch-up if one is missing."""
        try:
            prev, entry_id, origin, update = parse_feed(data)
        except ValueError:
            logger.error("%s: malformed feed message for %r", self._where, doc_id)
            self._catch_up(doc_id, followed)
            return
        cursor = followed.cursor
        assert cursor is not None
        if entry_id <= cursor:
            return  # seen already
        if prev > cursor:
            followed.held.append(data)
            self._catch_up(doc_id, followed)
            return
        followed.cursor = entry_id
        if origin != self._origin:
            self._deliver(doc_id, update, entry_id)
        self._moved()

    def _deliver(self, doc_id: DocId, update: bytes, entry_id: int) -> None:
        self.delivered += 1
        for callback in self.callbacks:
            callback(doc_id, update, entry_id)

    def _release(self, doc_id: DocId, followed: _Followed) -> None:
        """Take the messages that waited for a load or a catch-up."""
        held, followed.held = followed.held, []
        for index, data in enumerate(held):
            self._take(doc_id, followed, data)
            if followed.catching_up:  # missed some again: the rest waits once more
                followed.held.extend(held[index + 1 :])
                return

    def _catch_up(self, doc_id: DocId, followed: _Followed) -> None:
        if followed.cursor is None or followed.catching_up:
            return
        followed.catching_up = True
        self._lagging[doc_id] = None
        self._lag.set()

    def _caught_up(self, doc_id: DocId, tail: Tail) -> None:
        followed = self._docs.get(doc_id)
        if followed is None or not followed.catching_up or followed.cursor is None:
            return  # unfollowed or reloaded meanwhile
        self.catch_ups += 1
        cursor = followed.cursor
        if tail.snapshot is not None and tail.upto > cursor:
            # What was missed was compacted away: the snapshot holds it.
            self._deliver(doc_id, tail.snapshot, 0)
        for entry_id, update, origin in tail.entries:
            if entry_id > cursor and origin != self._origin:
                self._deliver(doc_id, update, entry_id)
        followed.cursor = max(cursor, tail.last, tail.upto)
        followed.catching_up = False
        self._moved()
        self._release(doc_id, followed)

    async def _catch_up_loop(self) -> None:
        """Read the tails of lagging documents, a pipeline of up to 100 at a time."""
        while True:
            await self._lag.wait()
            self._lag.clear()
            while self._lagging:
                wanted = []
                for doc_id in list(self._lagging)[:_CATCH_UP_CHUNK]:
                    followed = self._docs.get(doc_id)
                    if followed is None or followed.cursor is None:
                        del self._lagging[doc_id]  # unfollowed or reloading since
                    else:
                        wanted.append((doc_id, followed.cursor))
                try:
                    tails = await self._read(wanted)
                except StoreError as exc:
                    logger.warning("%s: catching up failed, retrying: %s", self._where, exc)
                    await asyncio.sleep(self.interval)
                    continue
                for (doc_id, _), tail in zip(wanted, tails, strict=True):
                    self._lagging.pop(doc_id, None)
                    self._caught_up(doc_id, tail)

    # -- the subscriber connection -----------------------------------------------------------

    async def run(self) -> None:
        """Keep the subscriber connection up until cancelled (retrying every
        ``interval`` seconds while Redis is unreachable)."""
        catcher = asyncio.get_running_loop().create_task(self._catch_up_loop())
        try:
            while True:
                try:
                    await self._session()
                except (RedisError, OSError) as exc:
                    if self.connected:
                        logger.warning("%s: subscriber connection lost: %s", self._where, exc)
                    else:
                        logger.debug("%s: subscriber connection failed: %s", self._where, exc)
                self._lost()
                await asyncio.sleep(self.interval)
        finally:
            catcher.cancel()
            await asyncio.gather(catcher, return_exceptions=True)
            self._lost()

    def _lost(self) -> None:
        self.connected = False
        self._up.clear()
        for followed in self._docs.values():
            followed.confirmed = False
            followed.missed = True
            followed.subscribed.clear()
        while not self._outbox.empty():
            self._outbox.get_nowait()

    async def _session(self) -> None:
        """One subscriber connection, from connect to its loss (raises then)."""
        client = self._connect()
        connection: AbstractConnection | None = None
        tasks: list[asyncio.Task[None]] = []
        try:
            connection = await client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
            loop = asyncio.get_running_loop()
            self._silent_since = loop.time()
            # From here on, follow() queues its SSUBSCRIBE for the writer task; the
            # documents followed so far are subscribed now.
            self.connected = True
            self._up.set()
            channels = [followed.channel for followed in self._docs.values()]
            for start in range(0, len(channels), _SUBSCRIBE_CHUNK):
                chunk = channels[start : start + _SUBSCRIBE_CHUNK]
                await connection.send_command("SSUBSCRIBE", *chunk)
            if channels:
                logger.info("%s: subscribed to %d document feeds", self._where, len(channels))
            tasks = [
                loop.create_task(self._read_loop(connection)),
                loop.create_task(self._write_loop(connection)),
                loop.create_task(self._watchdog()),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises the reader's or writer's error
            raise ConnectionError("the subscriber connection stayed silent")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if connection is not None:
                await connection.disconnect()
                await client.connection_pool.release(connection)
            await client.aclose()

    async def _read_loop(self, connection: AbstractConnection) -> None:
        loop = asyncio.get_running_loop()
        while True:
            reply = await connection.read_response()
            self._silent_since = loop.time()
            if not isinstance(reply, list) or len(reply) < 3:
                continue
            kind = reply[0]
            if kind == b"smessage":
                self.messages += 1
                self._message(reply[1], reply[2])
            elif kind == b"ssubscribe":
                self._confirmed(reply[1])

    def _confirmed(self, channel: bytes) -> None:
        doc_id = self._by_channel.get(channel)
        if doc_id is None:
            return
        followed = self._docs[doc_id]
        followed.confirmed = True
        followed.subscribed.set()
        if followed.missed and followed.cursor is not None:
            # Resubscribed after a lost connection: messages may have been missed.
            followed.missed = False
            self._catch_up(doc_id, followed)

    async def _write_loop(self, connection: AbstractConnection) -> None:
        while True:
            command, channels = await self._outbox.get()
            await connection.send_command(command, *channels)

    async def _watchdog(self) -> None:
        """Return (ending the connection) once it has been silent for three
        intervals; the writer pings it every interval."""
        loop = asyncio.get_running_loop()
        while loop.time() - self._silent_since <= 3 * self.interval:
            self._outbox.put_nowait(("PING", []))
            await asyncio.sleep(self.interval)
        logger.warning("%s: subscriber connection silent; reconnecting", self._where)
