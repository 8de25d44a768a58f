"""How records merge between replicas (field by field, deletes, conflicts and their
resolution), and the document layout a Yjs client relies on (``crdtsync.registers``).

Replicas sync here by exchanging state-vector diffs directly; the state machine in
``test_records_properties.py`` and the real-relay tests in ``test_records_relay.py``
sync through the relay."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pycrdt
import pytest

from crdtsync import Candidate, Conflict, ConflictDetected, Replica, ReplicaEvent
from crdtsync.update import summarize_update

from .records_helpers import C, layout_write, send, sync


@pytest.fixture
def trio() -> Iterator[tuple[Replica, Replica, Replica]]:
    made = [Replica(":memory:") for _ in range(3)]
    yield made[0], made[1], made[2]
    for replica in made:
        replica.close()


def test_edits_of_different_fields_offline_are_both_kept(
    trio: tuple[Replica, Replica, Replica],
) -> None:
    a, b, _ = trio
    a.records(C).put("i-42", {"site": "S-12", "status": "open", "score": 1})
    sync(a, b)
    a.records(C).update("i-42", status="done")
    b.records(C).update("i-42", score=4, note="roof")
    sync(a, b)
    expected = {"site": "S-12", "status": "done", "score": 4, "note": "roof"}
    assert a.records(C).get("i-42") == b.records(C).get("i-42") == expected
    assert a.records(C).conflicts() == b.records(C).conflicts() == []


def test_concurrent_writes_of_a_field_converge_and_report_the_same_conflict(
    trio: tuple[Replica, Replica, Replica],
) -> None:
    a, b, c = trio
    a.records(C).put("i-42", {"status": "open"})
    sync(a, b, c)
    before = datetime.now(UTC) - timedelta(seconds=1)
    a.records(C).update("i-42", status="done")
    b.records(C).update("i-42", status="blocked")
    sync(a, b, c)
    conflicts = [r.records(C).conflicts() for r in (a, b, c)]
    assert conflicts[0] == conflicts[1] == conflicts[2]
    [conflict] = conflicts[0]
    assert (conflict.record_id, conflict.field) == ("i-42", "status")
    assert conflict.value in ("done", "blocked")
    assert a.records(C).get("i-42") == b.records(C).get("i-42") == {"status": conflict.value}
    assert conflict.candidates[0].value == conflict.value  # the winner comes first
    by_value = {candidate.value: candidate for candidate in conflict.candidates}
    assert set(by_value) == {"done", "blocked"}
    assert by_value["done"].replica_id == a.replica_id
    assert by_value["blocked"].replica_id == b.replica_id
    for candidate in conflict.candidates:
        assert before <= candidate.written_at <= datetime.now(UTC) + timedelta(seconds=1)


def test_resolve_on_one_replica_clears_the_conflict_everywhere(
    trio: tuple[Replica, Replica, Replica],
) -> None:
    a, b, c = trio
    a.records(C).put("i-42", {"status": "open", "score": 1})
    sync(a, b, c)
    a.records(C).update("i-42", status="done", score=2)
    b.records(C).update("i-42", status="blocked", score=3)
    sync(a, b, c)
    assert [x.field for x in c.records(C).conflicts()] == ["score", "status"]
    c.records(C).resolve("i-42", "status", "done, checked")
    assert [x.field for x in c.records(C).conflicts()] == ["score"]  # at once, here
    sync(a, b, c)
    for replica in (a, b, c):
        assert [x.field for x in replica.records(C).conflicts()] == ["score"]
        assert replica.records(C).get("i-42")["status"] == "done, checked"  # type: ignore[index]
    a.records(C).update("i-42", score=5)  # any write that saw both values resolves too
    sync(a, b, c)
    assert [r.records(C).conflicts() for r in (a, b, c)] == [[], [], []]


def test_a_write_that_saw_the_previous_value_is_never_a_conflict(
    trio: tuple[Replica, Replica, Replica],
) -> None:
    a, b, c = trio
    events: list[ReplicaEvent] = []
    for replica in trio:
        replica.observe(events.append)
    a.records(C).put("r", {"x": 0})
    for n, writer in enumerate([b, c, a, b, a, c, c], start=1):
        sync(a, b, c)
        writer.records(C).update("r", x=n)
    sync(a, b, c)
    assert [r.records(C).get("r") for r in trio] == [{"x": 7}] * 3
    assert [r.records(C).conflicts() for r in trio] == [[], [], []]
    assert not [e for e in events if isinstance(e, ConflictDetected)]


def test_a_resolve_that_had_not_seen_every_candidate_leaves_a_conflict(
    trio: tuple[Replica, Replica, Replica],
) -> None:
    """Three concurrent writes; a replica that has two of them resolves: the third
    is concurrent with the resolution, so a conflict remains, between those two."""
    a, b, c = trio
    a.records(C).put("r", {"x": 0})
    sync(a, b, c)
    for replica, value in ((a, "a"), (b, "b"), (c, "c")):
        replica.records(C).update("r", x=value)
    send(b, a)
    assert {v.value for v in a.records(C).conflicts()[0].candidates} == {"a", "b"}
    a.records(C).resolve("r", "x", "ab")
    sync(a, b, c)
    [conflict] = a.records(C).conflicts()
    assert {v.value for v in conflict.candidates} == {"ab", "c"}
    assert b.records(C).conflicts() == c.records(C).conflicts() == [conflict]


def test_conflict_detected_is_reported_where_the_concurrent_write_arrives(
    trio: tuple[Replica, Replica, Replica],
) -> None:
    a, b, _ = trio
    seen: dict[str, list[ConflictDetected]] = {"a": [], "b": []}
    for name, replica in (("a", a), ("b", b)):
        replica.observe(
            lambda e, n=name: seen[n].append(e) if isinstance(e, ConflictDetected) else None
        )
    a.records(C).put("r", {"x": 0})
    sync(a, b)
    a.records(C).update("r", x=1)
    b.records(C).update("r", x=2)
    assert seen == {"a": [], "b": []}
    sync(a, b)
    assert seen == {"a": [ConflictDetected(C, "r", "x")], "b": [ConflictDetected(C, "r", "x")]}


def test_a_delete_and_a_concurrent_edit_keep_the_record_deleted_with_the_edit(
    trio: tuple[Replica, Replica, Replica],
) -> None:
    a, b, c = trio
    a.records(C).put("r", {"status": "open", "score": 1})
    sync(a, b, c)
    a.records(C).delete("r")
    b.records(C).update("r", score=5, note="late")
    sync(a, b, c)
    for replica in trio:
        assert replica.records(C).get("r") is None
        tombstone = replica.records(C).tombstone("r")
        assert tombstone is not None
        assert tombstone.replica_id == a.replica_id
        assert tombstone.fields == {"status": "open", "score": 5, "note": "late"}
    assert a.records(C).tombstones() == b.records(C).tombstones() == c.records(C).tombstones()
    c.records(C).restore("r")
    sync(a, b, c)
    for replica in trio:
        assert replica.records(C).get("r") == {"status": "open", "score": 5, "note": "late"}


def test_a_delete_wins_over_a_concurrent_restore(
    trio: tuple[Replica, Replica, Replica],
) -> None:
    a, b, _ = trio
    a.records(C).put("r", {"x": 1})
    a.records(C).delete("r")
    sync(a, b)
    a.records(C).restore("r")
    a.records(C).delete("r")
    b.records(C).restore("r")
    sync(a, b)
    assert a.records(C).get("r") is None and b.records(C).get("r") is None
    b.records(C).restore("r")  # a restore that saw the delete brings it back
    sync(a, b)
    assert a.records(C).get("r") == b.records(C).get("r") == {"x": 1}


def test_two_replicas_creating_the_same_id_offline_merge_their_fields(
    trio: tuple[Replica, Replica, Replica],
) -> None:
    a, b, _ = trio
    a.records(C).put("site-12", {"name": "Roof", "floor": 3})
    b.records(C).put("site-12", {"name": "Roof!", "owner": "ana"})
    sync(a, b)
    record = a.records(C).get("site-12")
    assert record == b.records(C).get("site-12")
    assert record is not None
    assert (record["floor"], record["owner"]) == (3, "ana")
    [conflict] = a.records(C).conflicts()
    assert conflict.field == "name"
    assert {x.value for x in conflict.candidates} == {"Roof", "Roof!"}


# -- the layout, as a Yjs client sees it -----------------------------------------------------


def root_json(doc: pycrdt.Doc[Any], name: str) -> Any:
    return json.loads(str(doc.get(name, type=pycrdt.Map)))


def record_at(record: dict[str, Any], field: str | None) -> Any:
    return next(h["at"] for h in record.values() if h.get("f") == field)


def test_the_document_holds_plain_json_maps_as_documented(
    trio: tuple[Replica, Replica, Replica],
) -> None:
    a, _, _ = trio
    coll = a.records(C)
    coll.put("i-42", {"site": "S-12", "status": "open"})
    first = a.outbox(C)[-1].data
    coll.update("i-42", status="done")
    coll.delete("i-42")
    doc = a.open(C)
    client = doc.client_id
    record = root_json(doc, "rec:i-42")
    canonical = lambda h: json.dumps(h, sort_keys=True)  # noqa: E731
    assert sorted(record.values(), key=canonical) == sorted(
        [
            {"f": "site", "v": "S-12", "at": record_at(record, "site")},
            {"f": "status", "v": "done", "at": record_at(record, "status")},
            {"d": True, "at": record_at(record, None)},
        ],
        key=canonical,
    )
    for key, head in record.items():
        assert key.split(".")[0] == str(client)
        assert isinstance(head["at"], int)
    assert root_json(doc, "heads") == {key: ["i-42", head.get("f")] for key, head in record.items()}
    assert root_json(doc, "writers") == {str(client): a.replica_id}
    # A head's key is its own Yjs id: the first update (writer registered at clock 0,
    # then head, heads entry, head, heads entry) holds items at clocks 0..4, and
    # the heads of the first put are at clocks 1 and 3.
    summary = summarize_update(first)
    assert summary.ranges == {client: [(0, 5)]}
    first_heads = {k for k, h in record.items() if h.get("f") == "site"}
    assert first_heads == {f"{client}.1"}


def test_a_bare_pycrdt_client_following_the_layout_is_an_ordinary_writer(
    trio: tuple[Replica, Replica, Replica],
) -> None:
    """A client with no crdtsync code, writing as the README says: its edits show in
    get(), changes() and events like any replica's, and its concurrent writes are
    conflicts like any replica's."""
    a, _, _ = trio
    coll = a.records(C)
    coll.put("i-42", {"site": "S-12", "status": "open"})
    bare: pycrdt.Doc[Any] = pycrdt.Doc()
    bare.apply_update(a.diff(C, b"\x00"))
    cursor = coll.cursor()
    layout_write(bare, "i-42", "status", "done")
    layout_write(bare, "i-43", "site", "S-13")
    a.apply_remote(C, bare.get_update(a.state_vector(C)))
    assert coll.changes(since=cursor).upserted == {
        "i-42": {"site": "S-12", "status": "done"},
        "i-43": {"site": "S-13"},
    }
    assert coll.conflicts() == []
    coll.update("i-42", status="checked")
    layout_write(bare, "i-42", "status", "redo")
    bare.apply_update(a.diff(C, bare.get_state()))
    a.apply_remote(C, bare.get_update(a.state_vector(C)))
    [conflict] = coll.conflicts()
    assert {x.value for x in conflict.candidates} == {"checked", "redo"}
    unregistered = next(x for x in conflict.candidates if x.value == "redo")
    assert unregistered.replica_id == str(bare.client_id)  # it wrote no "writers" entry


def test_entries_that_do_not_follow_the_layout_are_ignored() -> None:
    with Replica(":memory:") as a:
        coll = a.records(C)
        coll.put("r", {"x": 1})
        doc = a.open(C)
        record = doc.get("rec:r", type=pycrdt.Map)
        with doc.transaction():
            record["junk"] = "not a head"
            record["junk2"] = {"f": 3, "v": 1}
            record["junk3"] = {"d": "yes"}
        assert coll.get("r") == {"x": 1}
        coll.update("r", x=2)
        assert coll.get("r") == {"x": 2}
        assert coll.conflicts() == []


def test_conflict_and_candidate_are_plain_values() -> None:
    when = datetime(2024, 1, 1, tzinfo=UTC)
    one = Conflict("r", "f", 1, [Candidate(1, "a", when), Candidate(2, "b", when)])
    assert one == Conflict("r", "f", 1, [Candidate(1, "a", when), Candidate(2, "b", when)])
