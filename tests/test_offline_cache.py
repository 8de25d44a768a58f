"""The offline cache: expiry under a fake clock never drops unsent work, evicted
and removed documents come back online, reset() is the way out of refused
changes, and client ids rotate for every document after an unclean shutdown."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pycrdt
import pytest

from crdtsync import (
    DocumentNotCachedError,
    DocumentRefused,
    Replica,
    ReplicaClosedError,
    SyncStatus,
)
from crdtsync.events import ReplicaEvent
from relay.auth import KeyRing, authenticator, issue_token
from relay.server import Relay

from .relay_helpers import eventually

DAY = 86400.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def edit(replica: Replica, doc_id: str, text: str) -> None:
    replica.open(doc_id).get("content", type=pycrdt.Text).insert(0, text)


def text_of(replica: Replica, doc_id: str) -> str:
    return str(replica.open(doc_id).get("content", type=pycrdt.Text))


def settle(replica: Replica, doc_id: str) -> None:
    """As if a relay acknowledged every change of ``doc_id``."""
    replica.acknowledge(doc_id, replica.last_seq(doc_id))


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    async with Relay(f"sqlite:///{tmp_path}/relay.db", port=0) as server:
        yield server


def test_eviction_under_a_fake_clock_never_drops_unsent_work(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "app.db"
    with Replica(path, clock=clock) as replica:
        for doc_id in ("synced", "pending", "photo", "recent"):
            edit(replica, doc_id, doc_id)
        for doc_id in ("synced", "photo", "recent"):
            settle(replica, doc_id)
        replica.attachments.put(b"\xff\xd8 jpeg", content_type="image/jpeg", doc_id="photo")
    clock.now += 8 * DAY
    with Replica(path, clock=clock) as replica:
        replica.open("recent")  # opened today
        replica.open("kept-open")
        assert replica.evict(unused_for=timedelta(days=7)) == ["synced"]
        assert sorted(replica.documents()) == ["kept-open", "pending", "photo", "recent"]
        assert replica.pending("pending") == 1
        assert replica.sync_state.pending_attachments == 1
        with pytest.raises(DocumentNotCachedError, match="not stored"):
            replica.open("synced", offline_only=True)
        # Over a byte budget: least recently used first, still never unsent work.
        assert replica.evict(max_bytes=0) == []  # what is left is open or pending
        usage = {u.doc_id: u for u in replica.usage()}
        assert usage["photo"].pending_attachments == 1 and usage["photo"].bytes > 8
        assert usage["recent"].open and usage["recent"].last_opened is not None


def test_evict_after_expires_on_open_and_max_bytes_takes_the_oldest(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "app.db"
    with Replica(path, clock=clock) as replica:
        for n in range(4):
            edit(replica, f"d{n}", "x" * 1000)
            settle(replica, f"d{n}")
            clock.now += DAY
    clock.now += 2 * DAY  # d0 unused for 6 days, d1 for 5, d3 for 3
    with Replica(path, clock=clock, evict_after=timedelta(days=5, hours=12)) as replica:
        assert replica.documents() == ["d1", "d2", "d3"]  # d0 expired when it opened
        total = sum(u.bytes for u in replica.usage())
        assert replica.evict(max_bytes=total - 1) == ["d1"]  # the least recently used
    with pytest.raises(ValueError):
        Replica(":memory:", evict_after=timedelta(0))


def test_attachments_of_a_document_the_store_lacks_are_counted_and_expire(
    tmp_path: Path,
) -> None:
    """The issue's example puts a photo for "inspection-42" and keeps its reference
    in a record of another document: usage() shows it, eviction and remove() free
    it once uploaded, and never before."""
    clock = Clock()
    with Replica(tmp_path / "app.db", clock=clock) as replica:
        inspections = replica.records("inspections")
        ref = replica.attachments.put(b"\xff\xd8 jpeg", content_type="image/jpeg", doc_id="i-42")
        inspections.put("i-42", {"photo": ref})
        settle(replica, "inspections")
        replica.attachments.put(b"voice", content_type="audio/ogg", doc_id="i-43")
        usage = {u.doc_id: u for u in replica.usage()}
        assert [u.doc_id for u in replica.usage()] == ["i-42", "i-43", "inspections"]
        assert usage["i-42"].bytes == 7 and usage["i-42"].pending_attachments == 1
        assert usage["i-42"].pending and not usage["i-42"].open
        clock.now += 8 * DAY
        assert replica.evict(unused_for=timedelta(days=7)) == []  # unsent: kept
        with pytest.raises(ValueError, match="not on the relay"):
            replica.remove("i-43")
        replica.attachments.mark_uploaded(ref)  # as the uploader does
        assert replica.evict(unused_for=timedelta(days=7)) == ["i-42"]
        assert replica.attachments.info(ref) is None
        assert [u.doc_id for u in replica.usage()] == ["i-43", "inspections"]
        replica.remove("i-43", discard_pending=True)
        assert replica.sync_state.pending_attachments == 0
        assert [u.doc_id for u in replica.usage()] == ["inspections"]


def test_remove_refuses_pending_work_unless_told(tmp_path: Path) -> None:
    with Replica(tmp_path / "app.db") as replica:
        edit(replica, "a", "unsent")
        with pytest.raises(ValueError, match="not on the relay"):
            replica.remove("a")
        doc = replica.open("a")
        replica.remove("a", discard_pending=True)
        assert replica.documents() == [] and replica.sync_state.pending_updates == 0
        with pytest.raises(ExceptionGroup) as info:
            doc.get("content", type=pycrdt.Text).insert(0, "the Doc is no longer recorded")
        assert info.group_contains(ReplicaClosedError)
        replica.remove("never-existed")  # harmless


async def test_evicted_and_removed_documents_come_back_online(tmp_path: Path, relay: Relay) -> None:
    with Replica(tmp_path / "app.db") as replica:
        await replica.connect(relay.url)
        for doc_id in ("form", "report"):
            edit(replica, doc_id, f"{doc_id} content")
            await replica.wait_synced(doc_id, 20)
        await replica.disconnect()
    clock = Clock()
    clock.now += 30 * DAY
    with Replica(tmp_path / "app.db", clock=clock) as replica:
        assert replica.evict(unused_for=timedelta(days=7)) == ["form", "report"]
        replica.remove("report")  # already gone: harmless
        with pytest.raises(DocumentNotCachedError):
            replica.open("form", offline_only=True)
        await replica.connect(relay.url)
        for doc_id in ("form", "report"):
            replica.open(doc_id)
            await replica.wait_synced(doc_id, 20)
            assert text_of(replica, doc_id) == f"{doc_id} content"
        assert replica.fetched_at("form") is not None
        await replica.disconnect()


def _writer_and_reader() -> tuple[KeyRing, str, str]:
    """Keys, and a token that may write every document and one that may only read."""
    keys = KeyRing()
    keys.add_secret("k", "s" * 32)
    writer = issue_token(keys, "writer", ["*:rw"], 600)
    return keys, writer, issue_token(keys, "reader", ["*:r"], 600)


async def test_reset_is_the_way_out_of_a_refused_document(tmp_path: Path) -> None:
    keys, writer, reader = _writer_and_reader()
    async with Relay(
        f"sqlite:///{tmp_path}/relay.db", port=0, authenticate=authenticator(keys)
    ) as relay:
        with Replica(tmp_path / "w.db") as other:
            await other.connect(relay.url, token=writer)
            edit(other, "site/form", "relay text")
            await other.wait_synced("site/form", 20)
            await other.disconnect()
        refused: list[ReplicaEvent] = []
        with Replica(tmp_path / "app.db") as replica:
            replica.observe(lambda e: refused.append(e) if isinstance(e, DocumentRefused) else None)
            await replica.connect(relay.url, token=reader)
            replica.open("site/form")
            await replica.connector.wait_status(SyncStatus.SYNCED, 20)  # type: ignore[union-attr]
            assert text_of(replica, "site/form") == "relay text"
            old_client = replica.client_id("site/form")
            edit(replica, "site/form", "local: ")  # the token is read-only
            assert replica.pending("site/form") == 1
            await replica.disconnect()
            await replica.connect(relay.url, token=reader)
            assert refused and refused[0].doc_id == "site/form"
            state = replica.sync_state
            assert dict(state.refused) == {"site/form": "read_only"}
            replica.reset("site/form")
            assert replica.pending("site/form") == 0
            assert replica.sync_state.refused == ()
            assert replica.client_id("site/form") != old_client
            doc = replica.open("site/form")  # a new Doc: the old one held the dropped edit
            await eventually(doc, lambda: text_of(replica, "site/form") == "relay text")
            await replica.disconnect()


async def test_a_records_collection_after_reset_and_remove(tmp_path: Path) -> None:
    """reset() of a refused collection, then records() again: a live collection with
    the relay's records (not the dropped one, whose writes said "replica closed");
    the same after remove()."""
    keys, writer, reader = _writer_and_reader()
    async with Relay(
        f"sqlite:///{tmp_path}/relay.db", port=0, authenticate=authenticator(keys)
    ) as relay:
        with Replica(tmp_path / "w.db") as other:
            other.records("orders").put("o-1", {"qty": 1})
            await other.connect(relay.url, token=writer)
            await other.wait_synced("orders", 20)
            await other.disconnect()
        with Replica(tmp_path / "app.db") as replica:
            orders = replica.records("orders")
            await replica.connect(relay.url, token=reader)
            await replica.wait_synced("orders", 20)
            orders.update("o-1", qty=5)  # the token is read-only: refused for good
            assert orders.get("o-1") == {"qty": 5} and replica.pending("orders") == 1
            replica.reset("orders")
            again = replica.records("orders")
            assert again is not orders
            await eventually(replica.open("orders"), lambda: again.get("o-1") == {"qty": 1})
            assert replica.pending("orders") == 0
            await replica.disconnect()
            replica.remove("orders")
            fresh = replica.records("orders")
            assert fresh.all() == {}
            fresh.put("o-2", {"qty": 2})  # offline: stored and pending
            assert replica.pending("orders") == 1
            with pytest.raises(ReplicaClosedError, match=r"call replica\.records\(\) again"):
                orders.put("o-3", {"qty": 3})


CRASH_CHILD = """
import os, sys, pycrdt
from crdtsync import Replica
replica = Replica(sys.argv[1])
for doc_id in ("A", "B"):
    replica.open(doc_id).get("t", type=pycrdt.Text).insert(0, doc_id)
print(replica.client_id("A"), replica.client_id("B"))
os._exit(0)  # a crash: the store is never closed
"""


def test_every_document_gets_a_new_client_id_after_an_unclean_shutdown(tmp_path: Path) -> None:
    """The issue's story: after a crash only A is opened, the replica closes cleanly,
    then B is opened in a later session: B must not reuse its old client id."""
    path = tmp_path / "app.db"
    out = subprocess.run(
        [sys.executable, "-c", CRASH_CHILD, str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    old_a, old_b = int(out[0]), int(out[1])
    with Replica(path) as replica:
        assert replica.client_id("A") == old_a  # not rotated until it writes again
        replica.open("A")
        assert replica.client_id("A") != old_a
    with Replica(path) as replica:
        replica.open("B")
        assert replica.client_id("B") != old_b
        assert str(replica.open("B").get("t", type=pycrdt.Text)) == "B"
