"""relay.storage.redis: the storage contract on a real, private redis-server, then what
only Redis has: persistence settings, the key layout, several relays sharing one
store (the feed: lossless, ordered, catching up after lost messages and lost
connections), compaction by several relays at once, and Redis out of reach."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from crdtsync.errors import (
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
    StoreVersionError,
)
from crdtsync.ids import DocId
from relay.storage import RelayStorage, StoredRoom, open_storage
from relay.storage.redis import RedisStorage, persistence_problem
from relay.storage.redis_layout import hash_tag

from .redis_server import RedisServer
from .relay_storage_contract import A, B, RelayStorageContract, StorageFactory, u


async def config_set(url: str, name: str, value: str) -> None:
    async with Redis.from_url(url.partition("?")[0]) as client:
        await client.config_set(name, value)


class TestRedisStorage(RelayStorageContract):
    @pytest.fixture
    async def make_storage(self, redis_url: str) -> AsyncIterator[StorageFactory]:
        self.url = redis_url
        yield lambda: RedisStorage(redis_url)
        await config_set(redis_url, "maxmemory", "0")

    async def fill_disk(self, storage: RelayStorage) -> None:
        """Redis "full": maxmemory below what it uses, so every write is refused."""
        await config_set(self.url, "maxmemory", "1")

    async def free_disk(self, storage: RelayStorage) -> None:
        await config_set(self.url, "maxmemory", "0")

    async def test_shared_and_durable(self, storage: RelayStorage) -> None:
        assert storage.shared is True
        assert storage.durable is True
        assert storage.url.startswith("redis://127.0.0.1:")


def test_redis_urls() -> None:
    storage = open_storage("redis://:secret@127.0.0.1:6390/2?prefix=app.one")
    assert isinstance(storage, RedisStorage)
    assert storage.keys.prefix == "app.one"
    assert "secret" not in storage.url


# -- helpers -------------------------------------------------------------------------------------


class Received:
    """An on_remote callback that records what it is given and wakes who waits."""

    def __init__(self) -> None:
        self.items: list[tuple[DocId, bytes, int]] = []
        self._changed = asyncio.Event()

    def __call__(self, doc_id: DocId, update: bytes, entry_id: int) -> None:
        self.items.append((doc_id, update, entry_id))
        self._changed.set()

    async def until(self, count: int, timeout: float = 30) -> list[tuple[DocId, bytes, int]]:
        """Wait until ``count`` items were received; return them."""
        async with asyncio.timeout(timeout):
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.items


async def kill_subscribers(url: str) -> None:
    """Close every pub/sub connection Redis has (as a network cut would)."""
    async with Redis.from_url(url.partition("?")[0]) as client:
        await client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[tuple[RedisStorage, RedisStorage]]:
    """Two storages on one store: two relay processes sharing it."""
    async with (
        RedisStorage(redis_url, interval=0.2) as a,
        RedisStorage(redis_url, interval=0.2) as b,
    ):
        yield a, b


# -- persistence settings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"appendonly": "no", "save": ""}, ["keeps nothing on disk", "appendonly no"]),
        ({"appendonly": "no", "save": "3600 1"}, ["only RDB snapshots", "appendonly no"]),
        ({"appendonly": "yes", "appendfsync": "everysec"}, ["appendfsync everysec"]),
        ({"appendonly": "yes", "appendfsync": "no"}, ["appendfsync no"]),
    ],
)
def test_persistence_problems(settings: dict[str, str], words: list[str]) -> None:
    problem = persistence_problem(settings)
    assert problem is not None
    for word in words:
        assert word in problem
    assert persistence_problem({"appendonly": "yes", "appendfsync": "always", "save": ""}) is None


async def test_redis_that_keeps_nothing_on_disk_is_refused(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, appendonly="no")
    server.start()
    try:
        with pytest.raises(StoreError, match=r"keeps nothing on disk.*--redis-volatile"):
            await RedisStorage(server.url).open()
        storage = RedisStorage(server.url, volatile=True)
        async with storage:
            assert storage.durable is False
            assert storage.ready
            assert (await storage.append([(A, u(1))])) == [1]
    finally:
        server.kill()


async def test_everysec_is_refused_unless_volatile(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, fsync="everysec")
    server.start()
    try:
        with pytest.raises(StoreError, match="appendfsync everysec"):
            await RedisStorage(server.url).open()
        async with RedisStorage(server.url, volatile=True) as storage:
            assert storage.durable is False
    finally:
        server.kill()


async def test_unreachable_redis_fails_open_and_open_can_be_retried(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    storage = RedisStorage(server.url, timeout=2)
    with pytest.raises(StoreUnavailableError, match="opening"):
        await storage.open()
    server.start()
    try:
        async with storage:
            assert storage.ready
    finally:
        server.kill()


async def test_another_layout_version_is_refused(redis_url: str) -> None:
    storage = RedisStorage(redis_url)
    async with Redis.from_url(redis_url.partition("?")[0]) as client:
        await client.hset(f"{storage.keys.prefix}:store", "version", "99")
    with pytest.raises(StoreVersionError, match="layout version 99"):
        await storage.open()


# -- layout ------------------------------------------------------------------------------------


async def test_every_key_of_a_document_shares_its_hash_tag(redis_url: str) -> None:
    doc = DocId("a}b{c%d:é")
    async with RedisStorage(redis_url) as storage:
        ids = await storage.append([(doc, u(1))], [(doc, 7, "ana")])
        await storage.compact(doc, b"snap", ids[0])
        await storage.append([(doc, u(2))])
        async with Redis.from_url(redis_url.partition("?")[0]) as client:
            keys = sorted(
                [key.decode() async for key in client.scan_iter(f"{storage.keys.prefix}:*")]
            )
            tag = "{a%7Db%7Bc%25d:é}"
            assert keys == sorted(
                [
                    f"{storage.keys.prefix}:store",
                    f"{storage.keys.prefix}:docs",
                    f"{storage.keys.prefix}:{tag}:log",
                    f"{storage.keys.prefix}:{tag}:doc",
                    f"{storage.keys.prefix}:{tag}:claims",
                ]
            )
            # Redis Cluster's slot of each key (CRC16 of the hash tag): one for all.
            slots = {key_slot(key.encode()) for key in keys if tag in key}
            assert slots == {key_slot(storage.keys.feed(doc))}
            assert hash_tag(doc) == tag
        assert await storage.documents() == [doc]
        room = await storage.load(doc)
        assert (room.snapshot, room.claims) == (b"snap", {7: "ana"})


async def test_a_damaged_entry_fails_its_checksum(redis_url: str) -> None:
    async with RedisStorage(redis_url) as storage:
        await storage.append([(A, u(1))])
        log, _, _ = storage.keys.of(A)
        async with Redis.from_url(redis_url.partition("?")[0]) as client:
            await client.xadd(log, {"u": b"tampered", "c": "1", "o": "x"}, id="99-0")
        with pytest.raises(StoreCorruptError, match="checksum"):
            await storage.load(A)


# -- several relays on one store -----------------------------------------------------------------


async def test_appends_reach_the_relays_that_follow_the_document(
    pair: tuple[RedisStorage, RedisStorage],
) -> None:
    a, b = pair
    got_a, got_b = Received(), Received()
    a.on_remote(got_a)
    b.on_remote(got_b)
    await a.append([(A, u(0))])
    assert (await b.load(A, follow=True)).updates[0].update == u(0)
    ids = [(await a.append([(A, u(n)), (B, u(n))])) for n in range(1, 21)]
    items = await got_b.until(20)
    assert items == [(A, u(n), ids[n - 1][0]) for n in range(1, 21)]  # B is not followed
    await b.append([(A, u(99))])  # b's own: not delivered back to b
    assert got_a.items == []  # a follows nothing
    await a.load(A, follow=True)
    later = await b.append([(A, u(100))])
    assert (await got_a.until(1)) == [(A, u(100), later[0])]
    assert len(got_b.items) == 20
    b.unfollow(A)
    await a.append([(A, u(101))])
    await a.load(A)  # one more round trip: b would have had its message by now
    assert len(got_b.items) == 20


async def test_a_relay_that_lost_its_connection_catches_up_from_the_stream(
    pair: tuple[RedisStorage, RedisStorage], redis_url: str
) -> None:
    a, b = pair
    got = Received()
    b.on_remote(got)
    await b.load(A, follow=True)
    await b.load(B, follow=True)
    first = await a.append([(A, u(1))])
    await got.until(1)
    await kill_subscribers(redis_url)
    # b's subscriber is gone: these messages are lost to it; the stream has them.
    missed = [await a.append([(A, u(n)), (B, u(n))]) for n in range(2, 6)]
    items = await got.until(9)
    by_doc = {doc: [(upd, i) for d, upd, i in items if d == doc] for doc in (A, B)}
    assert by_doc[A] == [(u(1), first[0])] + [
        (u(n), ids[0]) for n, ids in zip(range(2, 6), missed, strict=True)
    ]
    assert by_doc[B] == [(u(n), ids[1]) for n, ids in zip(range(2, 6), missed, strict=True)]
    assert b._feed.catch_ups >= 1


async def test_what_was_missed_and_compacted_away_comes_as_the_snapshot(
    pair: tuple[RedisStorage, RedisStorage], redis_url: str
) -> None:
    a, b = pair
    got = Received()
    b.on_remote(got)
    await b.load(A, follow=True)
    # b's subscriber is cut (a network cut, or Redis dropping a subscriber that reads
    # too slowly: client-output-buffer-limit pubsub) and a compaction trims what it
    # missed, most likely before it is back.
    await kill_subscribers(redis_url)
    ids = await a.append([(A, u(n, size=2000)) for n in range(1, 6)])
    await a.compact(A, b"snapshot-1-5", ids[-1])
    after = await a.append([(A, u(6))])
    items = await got.until(2)
    assert items[-1] == (A, u(6), after[0])
    # b got everything before u(6): the snapshot (if it came back after the
    # compaction) or the five entries it missed (if it came back before).
    assert items[:-1] in (
        [(A, b"snapshot-1-5", 0)],
        [(A, u(n, 2000), i) for n, i in zip(range(1, 6), ids, strict=True)],
    )
    assert b._feed.catch_ups >= 1


async def test_two_relays_compacting_at_once_never_lose_entries(
    pair: tuple[RedisStorage, RedisStorage],
) -> None:
    a, b = pair
    ids = await a.append([(A, u(n)) for n in range(10)])
    more = await b.append([(A, u(n)) for n in range(10, 15)])
    first, second = await asyncio.gather(
        a.compact(A, b"upto-9", ids[-1]), b.compact(A, b"upto-14", more[-1]), return_exceptions=True
    )
    # Either order: the snapshot covering more stays; the other, if it came second,
    # was refused as stale and trimmed nothing.
    assert second is None
    assert first is None or (isinstance(first, ValueError) and "stale" in str(first))
    assert await a.load(A) == StoredRoom(A, b"upto-14", more[-1], [])


# -- Redis out of reach --------------------------------------------------------------------------


async def test_redis_killed_and_restarted(tmp_path: Path) -> None:
    """SIGKILL of redis-server: calls fail as unavailable (nothing is claimed stored),
    the storage turns not ready; once Redis is back from its AOF, every append that
    returned is there, the storage is ready again by itself and the feed works."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        async with (
            RedisStorage(server.url, interval=0.2) as a,
            RedisStorage(server.url, interval=0.2) as b,
        ):
            got = Received()
            b.on_remote(got)
            await b.load(A, follow=True)
            ids = await a.append([(A, u(n)) for n in range(50)])
            await got.until(50)
            server.kill()
            with pytest.raises(StoreUnavailableError):
                await a.append([(A, u(50))])
            with pytest.raises(StoreUnavailableError):
                await a.load(B)
            await a.wait_ready(False)
            await b.wait_ready(False)
            server.start()
            await a.wait_ready(True)
            await b.wait_ready(True)
            room = await a.load(A)
            assert [e.id for e in room.updates][: len(ids)] == ids  # every returned append
            later = await a.append([(A, u(51))])
            items = await got.until(51)
            assert items[-1] == (A, u(51), later[0])
    finally:
        server.kill()
