"""The records API (``crdtsync.records``) on one replica: every method, its errors,
and what survives a restart, on memory and SQLite replicas."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from crdtsync import (
    Changes,
    ConflictDetected,
    RecordsChanged,
    Replica,
    ReplicaClosedError,
    ReplicaEvent,
    StoreWriteError,
)
from crdtsync.records import Records
from crdtsync.store.sqlite import SQLiteStore

from .disks import _copy_sqlite
from .records_helpers import C, Disk, sync


@pytest.fixture(params=["memory", "sqlite"])
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Disk:
    return Disk(request.param, tmp_path / "replica.db")


@pytest.fixture
def replica(disk: Disk) -> Iterator[Replica]:
    made = disk.open()
    yield made
    made.close()


@pytest.fixture
def coll(replica: Replica) -> Records:
    return replica.records(C)


# -- add, put, update, get ------------------------------------------------------------------


def test_add_returns_a_new_id_and_get_returns_the_record(replica: Replica, coll: Records) -> None:
    rid = coll.add({"site": "S-12", "status": "open", "score": 3})
    other = coll.add({"site": "S-13"})
    assert isinstance(rid, str) and rid and rid != other
    assert coll.get(rid) == {"site": "S-12", "status": "open", "score": 3}
    assert type(coll.get(rid)["score"]) is int  # type: ignore[index]
    assert coll.get(other) == {"site": "S-13"}
    assert replica.pending(C) == 2  # one stored local update per call
    assert replica.records(C) is coll
    assert C in replica.documents()


def test_put_creates_then_sets_only_the_given_fields(coll: Records) -> None:
    coll.put("i-42", {"site": "S-12", "status": "open"})
    assert coll.get("i-42") == {"site": "S-12", "status": "open"}
    coll.put("i-42", {"status": "done", "score": 4})
    assert coll.get("i-42") == {"site": "S-12", "status": "done", "score": 4}
    coll.put("empty", {})
    assert coll.get("empty") == {}
    assert "empty" in coll


def test_update_writes_only_its_fields(replica: Replica, coll: Records) -> None:
    coll.put("i-42", {"site": "S-12", "status": "open"})
    coll.update("i-42", status="done", score=4)
    assert coll.get("i-42") == {"site": "S-12", "status": "done", "score": 4}
    pending = replica.pending(C)
    coll.update("i-42")  # nothing to write
    assert replica.pending(C) == pending
    with pytest.raises(KeyError, match="i-43"):
        coll.update("i-43", status="x")
    coll.delete("i-42")
    with pytest.raises(KeyError, match="deleted"):
        coll.update("i-42", status="x")
    assert coll.tombstone("i-42") is not None
    assert coll.tombstone("i-42").fields["status"] == "done"  # type: ignore[union-attr]


def test_get_of_an_absent_record_is_none(coll: Records) -> None:
    assert coll.get("nothing") is None
    assert "nothing" not in coll
    assert len(coll) == 0


def test_values_are_json_and_come_back_equal(coll: Records) -> None:
    values: dict[str, Any] = {
        "text": "héllo ✓",
        "int": -(2**53 - 1),
        "float": 1.5,
        "whole_float": 3.0,
        "true": True,
        "none": None,
        "list": [1, "two", [3.5, None], {"k": False}],
        "dict": {"a": {"b": {"c": [1, 2]}}, "": "empty key"},
        "empty_list": [],
        "empty_dict": {},
    }
    rid = coll.add(values)
    assert coll.get(rid) == values  # JSON semantics: 3.0 == 3


@pytest.mark.parametrize(
    "value",
    [b"bytes", {1, 2}, (1, 2), object(), datetime.now(UTC), {1: "int key"}, [1, {"x": b"y"}]],
)
def test_a_non_json_value_raises_type_error_naming_the_field(
    replica: Replica, coll: Records, value: object
) -> None:
    coll.put("r", {"ok": 1})
    pending = replica.pending(C)
    for call in (
        lambda: coll.add({"ok": 1, "bad_field": value}),
        lambda: coll.put("r", {"ok": 2, "bad_field": value}),
        lambda: coll.update("r", ok=2, bad_field=value),
        lambda: coll.resolve("r", "bad_field", value),
    ):
        with pytest.raises(TypeError, match="bad_field"):
            call()
    assert replica.pending(C) == pending  # nothing written
    assert coll.get("r") == {"ok": 1}


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, 2**53, -(2**60), "\ud800", [[[[]]]]]
)
def test_values_yjs_cannot_hold_raise_value_error(coll: Records, value: object) -> None:
    if value == [[[[]]]]:  # nesting beyond the limit
        value = []
        for _ in range(40):
            value = [value]
    with pytest.raises(ValueError, match="bad_field"):
        coll.add({"bad_field": value})
    assert len(coll) == 0


def test_field_names_are_non_empty_strings(coll: Records) -> None:
    with pytest.raises(ValueError, match="field name"):
        coll.add({"": 1})
    with pytest.raises(TypeError, match="field name"):
        coll.add({1: 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="mapping"):
        coll.add([("a", 1)])  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "x" * 257, 42, None, b"id", "\udcff"])
def test_a_bad_record_id_raises_value_error(replica: Replica, coll: Records, bad: Any) -> None:
    for call in (
        lambda: coll.put(bad, {"a": 1}),
        lambda: coll.update(bad, a=1),
        lambda: coll.get(bad),
        lambda: coll.delete(bad),
        lambda: coll.restore(bad),
        lambda: coll.resolve(bad, "a", 1),
        lambda: coll.tombstone(bad),
    ):
        with pytest.raises(ValueError, match="record id"):
            call()
    assert bad not in coll
    assert replica.pending(C) == 0


def test_ids_up_to_256_characters_of_any_text_work(coll: Records) -> None:
    for rid in ("x" * 256, "é/ü:日本 \x00 #1", ".", "rec:nested"):
        coll.put(rid, {"id": rid})
        assert coll.get(rid) == {"id": rid}
    assert len(coll) == 4


# -- delete and restore -----------------------------------------------------------------------


def test_delete_keeps_a_tombstone_and_restore_brings_the_fields_back(
    replica: Replica, coll: Records
) -> None:
    rid = coll.add({"site": "S-12", "status": "open"})
    keep = coll.add({"site": "S-13"})
    before = datetime.now(UTC) - timedelta(seconds=1)
    coll.delete(rid)
    assert coll.get(rid) is None
    assert rid not in coll
    assert len(coll) == 1
    assert list(coll) == [keep]
    assert coll.all() == {keep: {"site": "S-13"}}
    tombstone = coll.tombstone(rid)
    assert tombstone is not None
    assert tombstone.record_id == rid
    assert tombstone.replica_id == replica.replica_id
    assert before <= tombstone.deleted_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert tombstone.fields == {"site": "S-12", "status": "open"}
    assert coll.tombstones() == {rid: tombstone}
    pending = replica.pending(C)
    coll.delete(rid)  # deleting again does nothing
    assert replica.pending(C) == pending
    coll.restore(rid)
    assert coll.get(rid) == {"site": "S-12", "status": "open"}
    assert coll.tombstone(rid) is None and coll.tombstones() == {}
    coll.restore(rid)  # restoring a live record does nothing
    assert replica.pending(C) == pending + 1
    with pytest.raises(KeyError):
        coll.delete("absent")
    with pytest.raises(KeyError):
        coll.restore("absent")


def test_put_on_a_deleted_record_restores_it_with_the_new_fields(coll: Records) -> None:
    coll.put("r", {"a": 1, "b": 2})
    coll.delete("r")
    coll.put("r", {"b": 3})
    assert coll.get("r") == {"a": 1, "b": 3}


# -- all, find, len, iteration -------------------------------------------------------------------


def test_all_find_len_and_contains(coll: Records) -> None:
    coll.put("a", {"status": "open", "score": 1})
    coll.put("b", {"status": "done", "score": 2})
    coll.put("c", {"status": "open", "score": 2, "tags": ["x"]})
    coll.put("d", {"status": "open"})
    coll.delete("d")
    assert coll.all() == {
        "a": {"status": "open", "score": 1},
        "b": {"status": "done", "score": 2},
        "c": {"status": "open", "score": 2, "tags": ["x"]},
    }
    assert list(coll.all()) == ["a", "b", "c"]
    assert set(coll.find(status="open")) == {"a", "c"}
    assert set(coll.find(status="open", score=2)) == {"c"}
    assert coll.find(tags=["x"]) == {"c": coll.get("c")}
    assert set(coll.find(tags=None)) == {"a", "b"}  # absent fields match None
    assert coll.find(status="gone") == {}
    assert coll.find() == coll.all()
    with pytest.raises(TypeError, match="status"):
        coll.find(status={1, 2})
    assert len(coll) == 3
    coll.update("a", status="done")  # len and find follow every change
    coll.delete("b")
    coll.put("e", {})
    assert len(coll) == 3
    assert list(coll) == ["a", "c", "e"]
    assert set(coll.find(status="done")) == {"a"}
    assert ("c" in coll, "b" in coll, 42 in coll) == (True, False, False)


# -- durability and restarts ------------------------------------------------------------------


def test_writes_are_stored_before_the_call_returns(tmp_path: Path) -> None:
    """A kill -9 right after the call keeps the record: the store's bytes at that
    instant (the SQLite file and its WAL) already hold it."""
    path = tmp_path / "a.db"
    with Replica(path) as replica:
        coll = replica.records(C)
        rid = coll.add({"site": "S-1"})
        coll.update(rid, status="done")
        coll.delete(rid)
        _copy_sqlite(path, tmp_path / "killed.db")
    with Replica(tmp_path / "killed.db") as after:
        tombstone = after.records(C).tombstone(rid)
        assert tombstone is not None
        assert tombstone.fields == {"site": "S-1", "status": "done"}
        assert after.pending(C) == 3


def test_records_tombstones_conflicts_and_cursors_survive_reopening(
    disk: Disk, tmp_path: Path
) -> None:
    a = disk.open()
    other = Replica(":memory:")
    try:
        coll = a.records(C)
        coll.put("live", {"site": "S-1", "status": "open"})
        coll.put("gone", {"site": "S-2"})
        coll.delete("gone")
        coll.put("back", {"site": "S-3"})
        coll.delete("back")
        coll.restore("back")
        coll.put("both", {"status": "open"})
        sync(a, other)
        coll.update("both", status="a")
        other.records(C).update("both", status="b")
        sync(a, other)
        cursor = coll.cursor()
        before = (coll.all(), coll.tombstones(), coll.conflicts(), len(coll))
        assert len(before[2]) == 1

        a = disk.reopen(a)
        coll = a.records(C)
        assert (coll.all(), coll.tombstones(), coll.conflicts(), len(coll)) == before
        assert len(coll) == 3 and list(coll) == ["back", "both", "live"]
        assert coll.changes(since=cursor) == Changes({}, [], cursor)
        coll.update("live", status="done")
        assert coll.changes(since=cursor).upserted == {"live": {"site": "S-1", "status": "done"}}
        coll.resolve("both", "status", "a")
        a = disk.reopen(a)
        assert a.records(C).conflicts() == []
        assert set(a.records(C).changes(since=cursor).upserted) == {"live", "both"}
        assert a.pending(C) > 0
    finally:
        a.close()
        other.close()


def test_a_closed_replica_refuses_writes_and_keeps_nothing_half_done(replica: Replica) -> None:
    coll = replica.records(C)
    coll.put("r", {"a": 1})
    replica.close()
    with pytest.raises(ReplicaClosedError):
        coll.put("r", {"a": 2})
    assert coll.get("r") == {"a": 1}


def test_a_full_disk_raises_store_write_error_and_keeps_the_write(tmp_path: Path) -> None:
    """The write stays in memory, counted as pending, and is stored by flush()."""
    path = tmp_path / "a.db"
    with Replica(path, compact_min_bytes=1 << 40) as replica:
        coll = replica.records(C)
        coll.put("r", {"n": 0})
        store = replica.store
        assert isinstance(store, SQLiteStore) and store._conn is not None
        (pages,) = store._conn.execute("PRAGMA page_count").fetchone()
        store._conn.execute(f"PRAGMA max_page_count = {pages + 20}")
        with pytest.raises(StoreWriteError, match="full"):
            for n in range(1, 200):
                coll.update("r", n=n, blob="x" * 5000)
        failed = coll.get("r")
        assert failed is not None
        pending = replica.pending(C)
        store._conn.execute("PRAGMA max_page_count = 1000000")
        replica.flush()
        assert replica.pending(C) == pending
    with Replica(path) as reopened:
        assert reopened.records(C).get("r") == failed


# -- cursors and changes ---------------------------------------------------------------------


def test_changes_since_none_is_everything_live(coll: Records) -> None:
    coll.put("a", {"x": 1})
    coll.put("b", {"x": 2})
    coll.delete("b")
    changes = coll.changes()
    assert changes == Changes({"a": {"x": 1}}, [], coll.cursor())
    assert coll.changes(since=None) == changes


def test_changes_since_a_cursor_are_exactly_what_changed(coll: Records) -> None:
    coll.put("old", {"x": 0})
    coll.put("untouched", {"x": 0})
    coll.put("doomed", {"x": 0})
    coll.put("was-deleted", {"x": 0})
    coll.delete("was-deleted")
    cursor = coll.cursor()
    assert isinstance(cursor, str)
    assert coll.changes(since=cursor) == Changes({}, [], cursor)
    coll.update("old", x=1)
    coll.put("new", {"y": 1})
    coll.delete("doomed")
    coll.restore("was-deleted")
    coll.put("brief", {"z": 1})
    coll.delete("brief")
    changes = coll.changes(since=cursor)
    assert changes.upserted == {"old": {"x": 1}, "new": {"y": 1}, "was-deleted": {"x": 0}}
    assert changes.deleted == ["brief", "doomed"]
    assert changes.cursor == coll.cursor() != cursor
    assert coll.changes(since=changes.cursor).upserted == {}


def test_a_cursor_is_not_a_timestamp_and_garbage_is_refused(
    replica: Replica, coll: Records
) -> None:
    other = replica.records("orders")
    coll.put("a", {"x": 1})
    cursor = coll.cursor()
    for garbage in ("", "garbage", cursor[:-3], cursor + "AA", cursor.upper(), "c1.!!!", "c1."):
        with pytest.raises(ValueError, match="cursor"):
            coll.changes(since=garbage)
    with pytest.raises(ValueError, match="another collection"):
        other.changes(since=cursor)
    with pytest.raises(ValueError, match="cursor"):
        coll.changes(since=12345)  # type: ignore[arg-type]
    assert other.changes(since=other.cursor()).upserted == {}


def test_changes_include_what_other_replicas_did(coll: Records, replica: Replica) -> None:
    with Replica(":memory:") as other:
        coll.put("a", {"x": 1})
        coll.put("b", {"x": 1})
        sync(replica, other)
        cursor = coll.cursor()
        theirs = other.records(C)
        theirs.update("a", x=2)
        theirs.delete("b")
        theirs.put("c", {"x": 3})
        sync(replica, other)
        changes = coll.changes(since=cursor)
        assert changes.upserted == {"a": {"x": 2}, "c": {"x": 3}}
        assert changes.deleted == ["b"]


# -- events ----------------------------------------------------------------------------------------


def test_events_report_local_and_received_changes_and_conflicts(
    replica: Replica, coll: Records
) -> None:
    events: list[ReplicaEvent] = []
    seen_in_callback: list[Any] = []

    def observer(event: ReplicaEvent) -> None:
        if isinstance(event, RecordsChanged | ConflictDetected):
            events.append(event)
            seen_in_callback.append(coll.all())  # the collection is readable here

    replica.observe(observer)
    coll.put("a", {"x": 1})
    coll.delete("a")
    assert events == [
        RecordsChanged(C, ("a",), (), True),
        RecordsChanged(C, (), ("a",), True),
    ]
    assert seen_in_callback == [{"a": {"x": 1}}, {}]
    events.clear()
    with Replica(":memory:") as other:
        theirs = other.records(C)
        coll.restore("a")
        sync(replica, other)
        coll.update("a", x=2)
        theirs.update("a", x=3)
        theirs.put("b", {"y": 1})
        events.clear()
        sync(replica, other)
        assert events == [
            RecordsChanged(C, ("a", "b"), (), False),
            ConflictDetected(C, "a", "x"),
        ]
        events.clear()
        raw = replica.open(C).get("unrelated", type=pycrdt.Map)
        raw["k"] = 1  # not a record: no records event
        coll.update("b", y=2)
        assert events == [RecordsChanged(C, ("b",), (), True)]
