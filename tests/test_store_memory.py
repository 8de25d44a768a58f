"""MemoryStore against the shared store contract."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crdtsync import StoreLockedError
from crdtsync.store import MemoryStore, Store

from .store_contract import StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        store = MemoryStore()
        yield store
        store.close()

    def reopen(self, store: Store) -> Store:
        assert isinstance(store, MemoryStore)
        store.close()
        return MemoryStore(store.data)

    def crash_reopen(self, store: Store) -> Store:
        assert isinstance(store, MemoryStore)
        store.data.crash()
        return MemoryStore(store.data)


def test_memory_store_is_exclusive() -> None:
    store = MemoryStore()
    with pytest.raises(StoreLockedError):
        MemoryStore(store.data)
    store.close()
    MemoryStore(store.data).close()
