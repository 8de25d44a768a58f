"""The contract every :class:`crdtsync.store.Store` must meet.

Each backend's test module subclasses :class:`StoreContract` and implements
``make_store`` and ``reopen`` (automerge-repo's ``runStorageAdapterTests`` shape).
"""

from __future__ import annotations

import pytest

from crdtsync import StoreError
from crdtsync.ids import DocId
from crdtsync.store import (
    EMPTY_SNAPSHOT,
    EntryKind,
    NewEntry,
    OutboxEntry,
    Store,
)

DOC = DocId("doc-a")
OTHER = DocId("doc-b")


def local(seq: int, data: bytes = b"local") -> NewEntry:
    return NewEntry(EntryKind.LOCAL, data + str(seq).encode(), seq)


def remote(data: bytes = b"remote") -> NewEntry:
    return NewEntry(EntryKind.REMOTE, data)


class StoreContract:
    """Behaviour shared by every store. Subclasses provide the two factories."""

    @pytest.fixture
    def store(self) -> Store:
        raise NotImplementedError

    def reopen(self, store: Store) -> Store:
        """Close ``store`` and open the same storage again (a restart)."""
        raise NotImplementedError

    def crash_reopen(self, store: Store) -> Store:
        """Drop ``store`` as a crashed process would (no clean close), open it again."""
        raise NotImplementedError

    # -- identity -----------------------------------------------------------

    def test_is_a_store(self, store: Store) -> None:
        assert isinstance(store, Store)

    def test_replica_id_is_stable_across_reopen(self, store: Store) -> None:
        replica_id = store.replica_id()
        assert replica_id
        store = self.reopen(store)
        assert store.replica_id() == replica_id
        store.close()

    # -- documents ------------------------------------------------------------

    def test_new_document_is_empty(self, store: Store) -> None:
        info = store.create_document(DOC, 1234)
        assert (info.doc_id, info.client_id, info.acked_seq, info.last_seq) == (DOC, 1234, 0, 0)
        loaded = store.load_document(DOC)
        assert loaded is not None
        assert loaded.snapshot == EMPTY_SNAPSHOT
        assert loaded.entries == []
        assert store.documents() == [DOC]

    def test_unknown_document(self, store: Store) -> None:
        assert store.load_document(DOC) is None
        assert store.document_info(DOC) is None
        assert store.documents() == []

    def test_create_twice_is_an_error(self, store: Store) -> None:
        store.create_document(DOC, 1)
        with pytest.raises(ValueError, match="exists"):
            store.create_document(DOC, 2)
        info = store.document_info(DOC)
        assert info is not None
        assert info.client_id == 1

    def test_documents_are_sorted_and_independent(self, store: Store) -> None:
        store.create_document(OTHER, 2)
        store.create_document(DOC, 1)
        store.append(DOC, [local(1)])
        store.append(OTHER, [remote(b"x"), remote(b"y")])
        assert store.documents() == [DOC, OTHER]
        a, b = store.load_document(DOC), store.load_document(OTHER)
        assert a is not None and b is not None
        assert [e.data for e in a.entries] == [b"local1"]
        assert [e.data for e in b.entries] == [b"x", b"y"]

    # -- appending --------------------------------------------------------------

    def test_append_keeps_order_kinds_and_seqs(self, store: Store) -> None:
        store.create_document(DOC, 1)
        ids = store.append(DOC, [local(1), remote(), local(2)])
        ids += store.append(DOC, [NewEntry(EntryKind.PENDING, b"p")])
        assert ids == sorted(ids) and len(set(ids)) == 4
        loaded = store.load_document(DOC)
        assert loaded is not None
        assert [(e.id, e.kind, e.seq) for e in loaded.entries] == [
            (ids[0], EntryKind.LOCAL, 1),
            (ids[1], EntryKind.REMOTE, None),
            (ids[2], EntryKind.LOCAL, 2),
            (ids[3], EntryKind.PENDING, None),
        ]
        assert loaded.info.last_seq == 2

    def test_append_survives_reopen(self, store: Store) -> None:
        store.create_document(DOC, 77)
        store.append(DOC, [local(1), remote()])
        store = self.reopen(store)
        try:
            loaded = store.load_document(DOC)
            assert loaded is not None
            assert loaded.info.client_id == 77
            assert [e.data for e in loaded.entries] == [b"local1", b"remote"]
            assert store.outbox(DOC) == [OutboxEntry(1, b"local1")]
            ids = store.append(DOC, [local(2)])
            assert ids[0] > loaded.entries[-1].id
        finally:
            store.close()

    def test_sequence_numbers_must_increase(self, store: Store) -> None:
        store.create_document(DOC, 1)
        store.append(DOC, [local(1)])
        with pytest.raises(ValueError):
            store.append(DOC, [local(1)])
        with pytest.raises(ValueError):
            store.append(DOC, [NewEntry(EntryKind.LOCAL, b"no seq")])
        with pytest.raises(ValueError):
            store.append(DOC, [NewEntry(EntryKind.REMOTE, b"r", 5)])

    def test_failed_append_writes_nothing(self, store: Store) -> None:
        store.create_document(DOC, 1)
        with pytest.raises(ValueError):
            store.append(DOC, [local(1), local(1)])
        loaded = store.load_document(DOC)
        assert loaded is not None
        assert loaded.entries == []
        assert loaded.info.last_seq == 0

    # -- outbox ------------------------------------------------------------------

    def test_outbox_and_acknowledge(self, store: Store) -> None:
        store.create_document(DOC, 1)
        store.append(DOC, [local(1), remote(), local(2), local(3)])
        assert [e.seq for e in store.outbox(DOC)] == [1, 2, 3]
        info = store.acknowledge(DOC, 2)
        assert (info.acked_seq, info.pending) == (2, 1)
        assert store.outbox(DOC) == [OutboxEntry(3, b"local3")]
        assert store.acknowledge(DOC, 1).acked_seq == 2  # an older ack changes nothing
        with pytest.raises(ValueError, match="never issued"):
            store.acknowledge(DOC, 4)
        store = self.reopen(store)
        try:
            info2 = store.document_info(DOC)
            assert info2 is not None
            assert (info2.acked_seq, info2.last_seq, info2.pending) == (2, 3, 1)
            assert [e.seq for e in store.outbox(DOC)] == [3]
        finally:
            store.close()

    # -- compaction ---------------------------------------------------------------

    def test_replace_snapshot_drops_keeps_and_carries(self, store: Store) -> None:
        store.create_document(DOC, 1)
        ids = store.append(DOC, [local(1), remote(), local(2)])
        store.acknowledge(DOC, 1)
        store.replace_snapshot(
            DOC, b"SNAP", ids[-1], drop=ids[:2], carry=[NewEntry(EntryKind.PENDING, b"wait")]
        )
        loaded = store.load_document(DOC)
        assert loaded is not None
        assert loaded.snapshot == b"SNAP"
        assert loaded.snapshot_upto == ids[-1]
        # Entries after the snapshot: only the carried one.
        assert [(e.kind, e.data) for e in loaded.entries] == [(EntryKind.PENDING, b"wait")]
        # The unacknowledged local entry survived compaction, in the outbox.
        assert store.outbox(DOC) == [OutboxEntry(2, b"local2")]
        store = self.reopen(store)
        try:
            again = store.load_document(DOC)
            assert again is not None
            assert (again.snapshot, again.snapshot_upto) == (b"SNAP", ids[-1])
            assert [e.data for e in again.entries] == [b"wait"]
            # Sequence numbers are never issued twice, even after compaction.
            assert again.info.last_seq == 2
            with pytest.raises(ValueError):
                store.append(DOC, [local(2)])
            store.append(DOC, [local(3)])
        finally:
            store.close()

    def test_seq_not_reused_after_everything_is_compacted(self, store: Store) -> None:
        store.create_document(DOC, 1)
        ids = store.append(DOC, [local(1), local(2)])
        store.acknowledge(DOC, 2)
        store.replace_snapshot(DOC, b"S", ids[-1], drop=ids)
        store = self.reopen(store)
        try:
            info = store.document_info(DOC)
            assert info is not None
            assert (info.last_seq, info.acked_seq, info.pending) == (2, 2, 0)
            new_ids = store.append(DOC, [local(3)])
            assert new_ids[0] > ids[-1]
        finally:
            store.close()

    def test_carrying_local_entries_is_refused(self, store: Store) -> None:
        store.create_document(DOC, 1)
        ids = store.append(DOC, [local(1)])
        with pytest.raises(ValueError):
            store.replace_snapshot(DOC, b"S", ids[-1], drop=[], carry=[local(2)])

    def test_binary_data_round_trips(self, store: Store) -> None:
        store.create_document(DOC, 1)
        blob = bytes(range(256)) * 40
        store.append(DOC, [NewEntry(EntryKind.REMOTE, blob)])
        store = self.reopen(store)
        try:
            loaded = store.load_document(DOC)
            assert loaded is not None
            assert loaded.entries[0].data == blob
        finally:
            store.close()

    def test_acknowledge_deletes_entries_a_snapshot_holds(self, store: Store) -> None:
        store.create_document(DOC, 1)
        ids = store.append(DOC, [local(1), local(2), local(3)])
        store.replace_snapshot(DOC, b"S", ids[-1], drop=[])  # all three still in the outbox
        store.acknowledge(DOC, 2)
        store = self.reopen(store)
        try:
            assert store.outbox(DOC) == [OutboxEntry(3, b"local3")]
            store.acknowledge(DOC, 3)
            store.replace_snapshot(DOC, b"S2", ids[-1], drop=[])
            loaded = store.load_document(DOC)
            assert loaded is not None
            assert loaded.entries == [] and store.outbox(DOC) == []
            info = store.document_info(DOC)
            assert info is not None and info.pending == 0
        finally:
            store.close()

    def test_bad_carry_changes_nothing(self, store: Store) -> None:
        store.create_document(DOC, 1)
        ids = store.append(DOC, [remote(b"r1"), remote(b"r2")])
        with pytest.raises(ValueError):
            store.replace_snapshot(
                DOC, b"NEW", ids[-1], drop=ids, carry=[NewEntry(EntryKind.REMOTE, b"x", 3)]
            )
        loaded = store.load_document(DOC)
        assert loaded is not None
        assert (loaded.snapshot, loaded.snapshot_upto) == (EMPTY_SNAPSHOT, 0)
        assert [e.data for e in loaded.entries] == [b"r1", b"r2"]

    def test_remove_entries(self, store: Store) -> None:
        store.create_document(DOC, 1)
        ids = store.append(DOC, [local(1), NewEntry(EntryKind.PENDING, b"p"), remote(b"r")])
        with pytest.raises(ValueError, match="local"):
            store.remove_entries(DOC, [ids[0]])
        store.remove_entries(DOC, [ids[1]])
        store = self.reopen(store)
        try:
            loaded = store.load_document(DOC)
            assert loaded is not None
            assert [e.data for e in loaded.entries] == [b"local1", b"r"]
        finally:
            store.close()

    def test_set_client_id(self, store: Store) -> None:
        store.create_document(DOC, 1)
        assert store.set_client_id(DOC, 99).client_id == 99
        store = self.reopen(store)
        try:
            info = store.document_info(DOC)
            assert info is not None and info.client_id == 99
        finally:
            store.close()

    def test_a_store_closed_cleanly_is_not_unclean(self, store: Store) -> None:
        assert store.unclean is False
        store.create_document(DOC, 1)
        store = self.reopen(store)
        try:
            assert store.unclean is False
        finally:
            store.close()

    def test_an_unclean_store_flags_every_document_until_each_is_rotated(
        self, store: Store
    ) -> None:
        """After an unclean shutdown every document needs a new client id, not only the
        ones opened in the next session: the flag stays until set_client_id."""
        for doc in (DOC, OTHER):
            store.create_document(doc, 1)
        store = self.crash_reopen(store)
        try:
            assert store.unclean
            assert all(store.document_info(d).rotate for d in (DOC, OTHER))  # type: ignore[union-attr]
            store.set_client_id(DOC, 2)  # the first session afterwards opens only DOC
        finally:
            store.close()
        store = self.reopen(store)  # a clean session in between
        try:
            assert not store.unclean
            info, other = store.document_info(DOC), store.document_info(OTHER)
            assert info is not None and (info.client_id, info.rotate) == (2, False)
            assert other is not None and other.rotate, "a later session must still rotate it"
            loaded = store.load_document(OTHER)
            assert loaded is not None and loaded.info.rotate
        finally:
            store.close()

    # -- cache bookkeeping (offline apps) ------------------------------------------------

    def test_usage_and_touch(self, store: Store) -> None:
        store.create_document(DOC, 1)
        store.create_document(OTHER, 2)
        store.append(DOC, [local(1), local(2), remote()])
        store.touch(DOC, opened_at=10.0)
        store.touch(DOC, fetched_at=20.0)
        store.touch(OTHER, synced_at=30.0)
        store = self.reopen(store)
        try:
            usage = {u.doc_id: u for u in store.usage()}
            assert list(usage) == [DOC, OTHER]
            doc, other = usage[DOC], usage[OTHER]
            assert (doc.pending, doc.opened_at, doc.fetched_at, doc.synced_at) == (2, 10, 20, None)
            assert doc.last_used == 20.0
            assert doc.bytes == len(EMPTY_SNAPSHOT) + len(b"local1local2remote")
            assert (other.pending, other.synced_at, other.last_used) == (0, 30.0, None)
            with pytest.raises(KeyError):
                store.touch(DocId("missing"), opened_at=1.0)
        finally:
            store.close()

    def test_remove_document(self, store: Store) -> None:
        store.create_document(DOC, 1)
        store.create_document(OTHER, 2)
        store.append(DOC, [local(1), remote()])
        store.append(OTHER, [remote(b"kept")])
        store.remove_document(DOC)
        store.remove_document(DocId("missing"))  # harmless
        store = self.reopen(store)
        try:
            assert store.documents() == [OTHER]
            assert store.load_document(DOC) is None
            loaded = store.load_document(OTHER)
            assert loaded is not None and [e.data for e in loaded.entries] == [b"kept"]
            store.create_document(DOC, 3)  # comes back as a new, empty document
            assert store.outbox(DOC) == []
        finally:
            store.close()

    def test_reset_document_drops_the_outbox_and_never_reissues_seqs(self, store: Store) -> None:
        store.create_document(DOC, 1)
        store.append(DOC, [local(1), local(2), remote()])
        store.acknowledge(DOC, 1)
        info = store.reset_document(DOC, b"relay-state", 77)
        assert (info.client_id, info.acked_seq, info.last_seq, info.pending) == (77, 2, 2, 0)
        store = self.reopen(store)
        try:
            loaded = store.load_document(DOC)
            assert loaded is not None
            assert loaded.snapshot == b"relay-state" and loaded.entries == []
            assert store.outbox(DOC) == []
            ids = store.append(DOC, [local(3)])
            assert ids[0] > loaded.snapshot_upto
            with pytest.raises(ValueError):
                store.append(DOC, [local(2)])
        finally:
            store.close()

    def test_meta_values(self, store: Store) -> None:
        assert store.meta_value("synced_at") is None
        store.set_meta_value("synced_at", "12.5")
        store = self.reopen(store)
        try:
            assert store.meta_value("synced_at") == "12.5"
        finally:
            store.close()

    # -- lifecycle --------------------------------------------------------------------

    def test_closed_store_refuses_calls(self, store: Store) -> None:
        store.close()
        store.close()  # twice is harmless
        with pytest.raises(StoreError):
            store.documents()
