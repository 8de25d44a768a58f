"""The contract every :class:`relay.storage.RelayStorage` backend must meet.

Each backend's tests subclass :class:`RelayStorageContract` and provide three
things: the ``make_storage`` fixture (a factory of *unopened* storages that all
use the same underlying data, so that opening a second one after closing the
first is a relay restart), and :meth:`~RelayStorageContract.fill_disk` /
:meth:`~RelayStorageContract.free_disk` (make writes fail for lack of space, and
give the room back). automerge-repo's ``runStorageAdapterTests(setup)`` shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from crdtsync.errors import StoreError, StoreWriteError
from crdtsync.ids import DocId
from relay.storage import RelayStorage, StoredRoom, StoredUpdate

A = DocId("doc-a")
B = DocId("doc-b")
C = DocId("doc-c")

StorageFactory = Callable[[], RelayStorage]


def u(n: int, size: int = 0) -> bytes:
    """A recognisable update: ``b"u<n>"``, padded with ``size`` filler bytes."""
    return f"u{n}".encode() + bytes([n % 251]) * size


class RelayStorageContract:
    """Behaviour shared by every relay storage backend."""

    # -- what a backend provides ------------------------------------------------------------

    @pytest.fixture
    def make_storage(self) -> StorageFactory:
        """A factory of unopened storages over the same data (one per restart)."""
        raise NotImplementedError

    async def fill_disk(self, storage: RelayStorage) -> None:
        """Make every further write of ``storage`` fail for lack of space."""
        raise NotImplementedError

    async def free_disk(self, storage: RelayStorage) -> None:
        """Undo :meth:`fill_disk`."""
        raise NotImplementedError

    # -- the harness ------------------------------------------------------------------------

    @pytest.fixture
    async def storage(self, make_storage: StorageFactory) -> AsyncIterator[RelayStorage]:
        """An opened storage; it and every storage :meth:`restart` opens are closed after."""
        self._factory = make_storage
        self._opened: list[RelayStorage] = []
        first = await self.start()
        yield first
        for opened in self._opened:
            await opened.close()

    async def start(self) -> RelayStorage:
        """Open a new storage over the test's data."""
        storage = self._factory()
        self._opened.append(storage)
        await storage.open()
        return storage

    async def restart(self, storage: RelayStorage) -> RelayStorage:
        """Close ``storage`` and open the same data again (a relay restart)."""
        await storage.close()
        return await self.start()

    # -- basics -------------------------------------------------------------------------------

    async def test_is_a_relay_storage(self, storage: RelayStorage) -> None:
        assert isinstance(storage, RelayStorage)
        assert isinstance(storage.url, str) and storage.url
        assert isinstance(storage.durable, bool)

    async def test_unknown_document_is_an_empty_room(self, storage: RelayStorage) -> None:
        room = await storage.load(A)
        assert room == StoredRoom(A, None, 0, [])
        assert room.log_bytes == 0
        assert await storage.documents() == []

    async def test_bad_document_id_is_a_value_error(self, storage: RelayStorage) -> None:
        with pytest.raises(ValueError):
            await storage.load(DocId(""))
        with pytest.raises(ValueError):
            await storage.compact(DocId("a\x00b"), b"s", 0)

    # -- append -------------------------------------------------------------------------------

    async def test_append_returns_increasing_ids_in_batch_order(
        self, storage: RelayStorage
    ) -> None:
        ids = await storage.append([(A, u(1)), (B, u(2)), (A, u(3))])
        assert len(ids) == 3 and ids == sorted(ids) and len(set(ids)) == 3
        more = await storage.append([(B, u(4))])
        assert more[0] > ids[-1]
        room_a, room_b = await storage.load(A), await storage.load(B)
        assert room_a == StoredRoom(
            A, None, 0, [StoredUpdate(ids[0], u(1)), StoredUpdate(ids[2], u(3))]
        )
        assert room_b.updates == [StoredUpdate(ids[1], u(2)), StoredUpdate(more[0], u(4))]
        assert room_a.log_bytes == len(u(1)) + len(u(3))
        assert await storage.documents() == [A, B]

    async def test_exact_bytes_are_kept(self, storage: RelayStorage) -> None:
        updates = [b"", b"\x00", bytes(range(256)), b"\xff" * 3]
        ids = await storage.append([(A, data) for data in updates])
        assert [entry.update for entry in (await storage.load(A)).updates] == updates
        assert [entry.id for entry in (await storage.load(A)).updates] == ids

    async def test_bytes_like_updates_are_copied(self, storage: RelayStorage) -> None:
        buffer = bytearray(b"mutable")
        await storage.append([(A, buffer), (A, memoryview(b"view"))])  # type: ignore[list-item]
        buffer[0:7] = b"changed"
        updates = (await storage.load(A)).updates
        assert [entry.update for entry in updates] == [b"mutable", b"view"]
        assert all(type(entry.update) is bytes for entry in updates)

    async def test_empty_batch_stores_nothing(self, storage: RelayStorage) -> None:
        assert await storage.append([]) == []
        assert await storage.documents() == []
        first = await storage.append([(A, u(1))])
        assert await storage.append(()) == []
        assert (await storage.load(A)).updates == [StoredUpdate(first[0], u(1))]

    async def test_concurrent_appends_get_ids_in_call_order(self, storage: RelayStorage) -> None:
        batches = [[(A, u(i)), (B, u(i))] for i in range(10)]
        results = await asyncio.gather(*(storage.append(batch) for batch in batches))
        flat = [entry_id for ids in results for entry_id in ids]
        assert flat == sorted(flat) and len(set(flat)) == 20
        assert [e.update for e in (await storage.load(A)).updates] == [u(i) for i in range(10)]

    async def test_invalid_batch_stores_nothing(self, storage: RelayStorage) -> None:
        first = await storage.append([(A, u(1))])
        with pytest.raises(ValueError):
            await storage.append([(A, u(2)), (DocId(""), u(3))])
        with pytest.raises(TypeError):
            await storage.append([(A, u(2)), (B, "not bytes")])  # type: ignore[list-item]
        assert (await storage.load(A)).updates == [StoredUpdate(first[0], u(1))]
        assert await storage.documents() == [A]
        assert (await storage.append([(A, u(4))]))[0] > first[0]

    async def test_batch_is_all_or_nothing_on_a_full_disk(self, storage: RelayStorage) -> None:
        """A batch that does not fit raises StoreWriteError and stores none of its updates
        (not even the small ones before the big one); once there is room, writes work
        and a restart finds exactly the stored batches."""
        stored = await storage.append([(A, u(1))])
        await self.fill_disk(storage)
        with pytest.raises(StoreWriteError, match="full"):
            await storage.append([(A, u(2)), (B, u(3)), (C, u(4, size=300_000))])
        assert (await storage.load(A)).updates == [StoredUpdate(stored[0], u(1))]
        assert await storage.load(B) == StoredRoom(B, None, 0, [])
        assert await storage.documents() == [A]
        await self.free_disk(storage)
        later = await storage.append([(B, u(5)), (C, u(6))])
        assert later[0] > stored[0]
        storage = await self.restart(storage)
        assert (await storage.load(A)).updates == [StoredUpdate(stored[0], u(1))]
        assert (await storage.load(B)).updates == [StoredUpdate(later[0], u(5))]
        assert (await storage.load(C)).updates == [StoredUpdate(later[1], u(6))]
        assert await storage.documents() == [A, B, C]

    # -- compact ------------------------------------------------------------------------------

    async def test_compact_keeps_later_entries(self, storage: RelayStorage) -> None:
        ids = await storage.append([(A, u(i)) for i in range(5)] + [(B, u(9))])
        await storage.compact(A, b"snap", ids[2])
        room = await storage.load(A)
        assert room == StoredRoom(
            A, b"snap", ids[2], [StoredUpdate(ids[3], u(3)), StoredUpdate(ids[4], u(4))]
        )
        assert room.log_bytes == len(u(3)) + len(u(4))
        # Appended after the compaction's upto: kept too.
        later = await storage.append([(A, u(5))])
        assert [e.id for e in (await storage.load(A)).updates] == [ids[3], ids[4], later[0]]
        # Other documents are untouched.
        assert (await storage.load(B)).updates == [StoredUpdate(ids[5], u(9))]

    async def test_compact_everything_and_again(self, storage: RelayStorage) -> None:
        ids = await storage.append([(A, u(1)), (A, u(2))])
        await storage.compact(A, b"first", ids[1])
        assert await storage.load(A) == StoredRoom(A, b"first", ids[1], [])
        assert await storage.documents() == [A]
        await storage.compact(A, b"same upto, new bytes", ids[1])
        assert (await storage.load(A)).snapshot == b"same upto, new bytes"
        more = await storage.append([(A, u(3))])
        await storage.compact(A, b"second", more[0])
        assert await storage.load(A) == StoredRoom(A, b"second", more[0], [])

    async def test_compact_upto_another_documents_id(self, storage: RelayStorage) -> None:
        ids = await storage.append([(A, u(1)), (B, u(2)), (A, u(3))])
        await storage.compact(A, b"s", ids[1])  # B's id: A's entries up to it go
        assert (await storage.load(A)).updates == [StoredUpdate(ids[2], u(3))]
        assert (await storage.load(B)).updates == [StoredUpdate(ids[1], u(2))]

    async def test_compact_refuses_bad_upto(self, storage: RelayStorage) -> None:
        ids = await storage.append([(A, u(1)), (A, u(2))])
        with pytest.raises(ValueError, match="never assigned"):
            await storage.compact(A, b"s", ids[1] + 1)
        with pytest.raises(ValueError):
            await storage.compact(A, b"s", -1)
        await storage.compact(A, b"s2", ids[1])
        with pytest.raises(ValueError, match="stale"):
            await storage.compact(A, b"s1", ids[0])
        assert await storage.load(A) == StoredRoom(A, b"s2", ids[1], [])

    async def test_compact_of_a_document_without_log(self, storage: RelayStorage) -> None:
        await storage.compact(A, b"snapshot only", 0)
        assert await storage.load(A) == StoredRoom(A, b"snapshot only", 0, [])
        assert await storage.documents() == [A]

    async def test_failed_compact_changes_nothing(self, storage: RelayStorage) -> None:
        ids = await storage.append([(A, u(1)), (A, u(2))])
        await storage.compact(A, b"old", ids[0])
        before = await storage.load(A)
        await self.fill_disk(storage)
        with pytest.raises(StoreWriteError):
            await storage.compact(A, b"new" * 100_000, ids[1])
        assert await storage.load(A) == before
        await self.free_disk(storage)
        await storage.compact(A, b"new", ids[1])
        assert await storage.load(A) == StoredRoom(A, b"new", ids[1], [])

    # -- restarts -----------------------------------------------------------------------------

    # -- authorship claims ------------------------------------------------------------------

    async def test_claims_are_stored_with_the_batch_first_owner_wins(
        self, storage: RelayStorage
    ) -> None:
        await storage.append([(A, u(1))], [(A, 7, "ana"), (A, 8, "ana")])
        await storage.append([(A, u(2))], [(A, 7, "eve"), (B, 7, "eve")])
        assert (await storage.load(A)).claims == {7: "ana", 8: "ana"}
        assert (await storage.load(B)).claims == {7: "eve"}
        # Compaction leaves them; a restart keeps them (durable backends).
        room = await storage.load(A)
        await storage.compact(A, b"snapshot", room.updates[-1].id)
        assert (await storage.load(A)).claims == {7: "ana", 8: "ana"}
        if storage.durable:
            storage = await self.restart(storage)
            assert (await storage.load(A)).claims == {7: "ana", 8: "ana"}

    async def test_claims_are_all_or_nothing_with_the_batch(self, storage: RelayStorage) -> None:
        await self.fill_disk(storage)
        with pytest.raises(StoreWriteError):
            await storage.append([(A, u(1, size=300_000))], [(A, 7, "ana")])
        await self.free_disk(storage)
        assert (await storage.load(A)).claims == {}
        await storage.append([(A, u(2))], [(A, 7, "bob")])
        assert (await storage.load(A)).claims == {7: "bob"}

    @pytest.mark.parametrize(
        "claim",
        [(A, -1, "ana"), (A, 1 << 53, "ana"), (A, 1, ""), (A, 1, "x" * 300), (DocId(""), 1, "a")],
    )
    async def test_invalid_claims_store_nothing(
        self, storage: RelayStorage, claim: tuple[DocId, int, str]
    ) -> None:
        with pytest.raises(ValueError):
            await storage.append([(A, u(1))], [claim])
        assert await storage.load(A) == StoredRoom(A, None, 0, [])

    async def test_restart_keeps_everything(self, storage: RelayStorage) -> None:
        ids = await storage.append([(A, u(1)), (B, u(2)), (A, u(3)), (C, u(4))])
        await storage.compact(A, b"snap-a", ids[0])
        before = {doc_id: await storage.load(doc_id) for doc_id in (A, B, C)}
        storage = await self.restart(storage)
        assert await storage.documents() == [A, B, C]
        assert {doc_id: await storage.load(doc_id) for doc_id in (A, B, C)} == before
        later = await storage.append([(B, u(5))])
        assert later[0] > ids[-1]

    async def test_ids_are_never_reused_after_compacting_everything(
        self, storage: RelayStorage
    ) -> None:
        """Even when compaction deleted the newest entries, a restart continues above them:
        an id at or below a snapshot's upto would be taken as folded into it."""
        ids = await storage.append([(A, u(1)), (B, u(2)), (A, u(3))])
        await storage.compact(A, b"a", ids[2])
        await storage.compact(B, b"b", ids[1])
        storage = await self.restart(storage)
        later = await storage.append([(A, u(4)), (B, u(5))])
        assert later[0] > ids[2]
        assert (await storage.load(A)).updates == [StoredUpdate(later[0], u(4))]

    async def test_many_documents(self, storage: RelayStorage) -> None:
        docs = [DocId(f"doc-{n:04}-é") for n in range(500)]
        ids = await storage.append([(doc_id, u(n)) for n, doc_id in enumerate(docs)])
        storage = await self.restart(storage)
        assert await storage.documents() == sorted(docs)
        for n in (0, 1, 250, 499):
            assert (await storage.load(docs[n])).updates == [StoredUpdate(ids[n], u(n))]

    async def test_documents_are_sorted_by_code_point(self, storage: RelayStorage) -> None:
        docs = [DocId(name) for name in ("b", "a", "Z", "é", "日本", "a-1", "😀")]
        await storage.append([(doc_id, b"x") for doc_id in docs])
        assert await storage.documents() == sorted(docs)

    async def test_large_blobs(self, storage: RelayStorage) -> None:
        big = bytes(range(256)) * (4 * 4096)  # 4 MiB
        ids = await storage.append([(A, big), (A, b"small")])
        await storage.compact(A, big[::-1], ids[0])
        storage = await self.restart(storage)
        room = await storage.load(A)
        assert room.snapshot == big[::-1]
        assert room.updates == [StoredUpdate(ids[1], b"small")]
        more = await storage.append([(B, big)])
        assert (await storage.load(B)).updates == [StoredUpdate(more[0], big)]

    # -- life cycle ---------------------------------------------------------------------------

    async def test_open_is_idempotent(self, storage: RelayStorage) -> None:
        ids = await storage.append([(A, u(1))])
        await storage.open()
        assert (await storage.load(A)).updates == [StoredUpdate(ids[0], u(1))]

    async def test_calls_before_open_raise(self, make_storage: StorageFactory) -> None:
        storage = make_storage()
        with pytest.raises(StoreError, match="not open"):
            await storage.load(A)
        with pytest.raises(StoreError, match="not open"):
            await storage.append([(A, u(1))])
        await storage.close()

    async def test_close_is_idempotent_and_later_calls_raise(self, storage: RelayStorage) -> None:
        await storage.append([(A, u(1))])
        await storage.close()
        await storage.close()
        calls = [
            storage.open(),
            storage.load(A),
            storage.append([(A, u(2))]),
            storage.append([]),
            storage.compact(A, b"s", 0),
            storage.documents(),
        ]
        for call in calls:
            with pytest.raises(StoreError, match="closed"):
                await call

    async def test_calls_made_before_close_finish(self, storage: RelayStorage) -> None:
        appended, _ = await asyncio.gather(storage.append([(A, u(1))]), storage.close())
        storage = await self.start()
        assert (await storage.load(A)).updates == [StoredUpdate(appended[0], u(1))]

    async def test_async_with(self, make_storage: StorageFactory) -> None:
        async with make_storage() as storage:
            ids = await storage.append([(A, u(1))])
        with pytest.raises(StoreError, match="closed"):
            await storage.load(A)
        async with make_storage() as storage:
            assert (await storage.load(A)).updates == [StoredUpdate(ids[0], u(1))]

    async def test_on_remote_is_kept_but_never_called_by_own_appends(
        self, storage: RelayStorage
    ) -> None:
        calls: list[tuple[DocId, bytes, int]] = []
        storage.on_remote(lambda doc_id, update, entry_id: calls.append((doc_id, update, entry_id)))
        await storage.load(A, follow=True)
        await storage.append([(A, u(1))])
        await storage.compact(A, b"s", 0)
        await storage.load(A)
        # The feed of a shared backend delivers in the background: one more round trip
        # through the storage is past the time its own message arrived.
        assert (await storage.load(A, follow=True)).updates
        storage.unfollow(A)
        storage.unfollow(B)  # never followed: harmless
        assert calls == []

    async def test_ready_while_open(self, make_storage: StorageFactory) -> None:
        storage = make_storage()
        assert not storage.ready
        async with storage:
            assert storage.ready
        assert not storage.ready

    async def test_unclosed_storage_warns(self, make_storage: StorageFactory) -> None:
        storage = make_storage()
        await storage.open()
        with pytest.warns(ResourceWarning, match="unclosed relay storage"):
            storage.__del__()  # type: ignore[attr-defined]
        # __del__ released it: the data opens again.
        async with make_storage() as again:
            assert await again.documents() == []
        await storage.close()
