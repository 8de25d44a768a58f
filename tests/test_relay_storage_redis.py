"""relay.storage.redis: the storage contract on a real, private redis-server, then what
only Redis has: persistence settings, the key layout, several relays sharing one
store (the feed: lossless, ordered, catching up after lost messages and lost
connections), compaction by several relays at once, and Redis out of reach."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from relay.storage import RelayStorage, open_storage
from relay.storage.redis import RedisStorage

from .relay_storage_contract import RelayStorageContract, StorageFactory


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
