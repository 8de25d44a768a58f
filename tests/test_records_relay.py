"""Records through a real relay (websockets on 127.0.0.1, SQLite storage on both sides),
between Python replicas and with a stock Yjs client from npm (``tests/js/records.mjs``
follows the documented layout with nothing but ``yjs``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from crdtsync import ConflictDetected, RecordsChanged, Replica, ReplicaEvent
from relay import Relay

from .records_helpers import C
from .relay_helpers import eventually
from .test_yjs_interop import Spawn, YjsClient, node, spawn  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    async with Relay(f"sqlite:///{tmp_path / 'relay.db'}", port=0) as server:
        yield server


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Replica, Replica]]:
    made = (Replica(tmp_path / "a.db"), Replica(tmp_path / "b.db"))
    yield made
    for replica in made:
        await replica.disconnect()
        replica.close()


def record_events(replica: Replica) -> list[ReplicaEvent]:
    seen: list[ReplicaEvent] = []
    replica.observe(
        lambda e: seen.append(e) if isinstance(e, RecordsChanged | ConflictDetected) else None
    )
    return seen


async def until(replica: Replica, check: Any) -> None:
    """Wait (on the collection document's change events) until ``check()`` holds."""
    await eventually(replica.open(C), check)


async def test_offline_edits_merge_and_a_resolve_clears_the_conflict_on_both(
    relay: Relay, pair: tuple[Replica, Replica]
) -> None:
    a, b = pair
    one, two = a.records(C), b.records(C)
    events = {"a": record_events(a), "b": record_events(b)}
    one.put("i-42", {"site": "S-12", "status": "open", "score": 1})
    for replica in pair:
        await replica.connect(relay.url)
    await a.wait_synced(C, timeout=20)
    await until(b, lambda: two.get("i-42") == {"site": "S-12", "status": "open", "score": 1})

    # Offline: different fields first, then the same field.
    for replica in pair:
        await replica.disconnect()
    one.update("i-42", status="done")
    two.update("i-42", score=4)
    one.update("i-42", note="from a")
    two.update("i-42", note="from b")
    assert a.pending(C) == 2 and b.pending(C) == 2
    for replica in pair:
        await replica.connect(relay.url)
    for replica, coll in ((a, one), (b, two)):
        await replica.wait_synced(C, timeout=20)
        await until(replica, lambda c=coll: c.get("i-42")["score"] == 4 and c.conflicts())
    record = one.get("i-42")
    assert record == two.get("i-42")
    assert record is not None
    assert (record["site"], record["status"], record["score"]) == ("S-12", "done", 4)
    assert one.conflicts() == two.conflicts()
    [conflict] = one.conflicts()
    assert conflict.field == "note" and conflict.value == record["note"]
    assert {(x.value, x.replica_id) for x in conflict.candidates} == {
        ("from a", a.replica_id),
        ("from b", b.replica_id),
    }
    for name in ("a", "b"):
        assert ConflictDetected(C, "i-42", "note") in events[name]

    two.resolve("i-42", "note", "from a and b")
    await until(a, lambda: not one.conflicts())
    await b.wait_synced(C, timeout=20)
    assert one.get("i-42") == two.get("i-42")
    assert one.get("i-42")["note"] == "from a and b"  # type: ignore[index]
    assert two.conflicts() == []


async def test_a_yjs_client_edits_a_record_and_python_sees_an_ordinary_change(
    relay: Relay,
    tmp_path: Path,
    spawn: Spawn,  # noqa: F811 - the fixture
) -> None:
    replica = Replica(tmp_path / "python.db")
    try:
        coll = replica.records(C)
        events = record_events(replica)
        coll.put("i-42", {"site": "S-12", "status": "open"})
        await replica.connect(relay.url)
        await replica.wait_synced(C, timeout=20)
        yjs = await spawn("a")
        await yjs.call("connect", url=f"{relay.url}/yjs", room=C)
        await yjs.call("wait_synced")
        await yjs.call("writer", name="browser-ana")
        reply = await yjs.call(
            "wait_record", record="i-42", expect={"fields": {"site": "S-12", "status": "open"}}
        )
        assert reply["record"]["deleted"] is False

        cursor = coll.cursor()
        events.clear()
        await yjs.call("record_set", record="i-42", field="status", value="done")
        await yjs.call(
            "record_set", record="i-43", field="site", value={"id": 13, "tags": ["roof"]}
        )
        await until(replica, lambda: coll.get("i-43") is not None)
        await until(replica, lambda: coll.get("i-42") == {"site": "S-12", "status": "done"})
        changes = coll.changes(since=cursor)
        assert changes.upserted == {
            "i-42": {"site": "S-12", "status": "done"},
            "i-43": {"site": {"id": 13, "tags": ["roof"]}},
        }
        assert changes.deleted == []
        received = [e for e in events if isinstance(e, RecordsChanged)]
        assert received and all(not e.local for e in received)
        assert {i for e in received for i in e.upserted_ids} == {"i-42", "i-43"}
        await check_head_ids(yjs, "i-42")  # Python's and Yjs' heads alike

        # A concurrent write from each side: the same conflict on both, and the
        # value both read is the same; Node's write that saw both resolves it.
        await yjs.call("disconnect")
        await yjs.call("record_set", record="i-42", field="status", value="node offline")
        coll.update("i-42", status="python")
        await replica.wait_synced(C, timeout=20)
        await yjs.call("connect", url=f"{relay.url}/yjs", room=C)
        await yjs.call("wait_synced")
        await until(replica, lambda: bool(coll.conflicts()))
        [conflict] = coll.conflicts()
        assert {(x.value, x.replica_id) for x in conflict.candidates} == {
            ("python", replica.replica_id),
            ("node offline", "browser-ana"),
        }
        node_view = await yjs.call(
            "wait_record",
            record="i-42",
            expect={"conflicts": {"status": [x.value for x in conflict.candidates]}},
        )
        assert node_view["record"]["fields"]["status"] == conflict.value
        await yjs.call("record_delete", record="i-43", deleted=True)
        await yjs.call("record_set", record="i-42", field="status", value="agreed")
        await until(replica, lambda: not coll.conflicts() and "i-43" not in coll)
        assert coll.get("i-42") == {"site": "S-12", "status": "agreed"}
        assert coll.tombstone("i-43").replica_id == "browser-ana"  # type: ignore[union-attr]
        await check_head_ids(yjs, "i-42")
    finally:
        await replica.disconnect()
        replica.close()


async def check_head_ids(yjs: YjsClient, record_id: str) -> None:
    """Every head's key is the Yjs id of its own entry, as the layout requires."""
    reply = await yjs.call("record_get", record=record_id)
    assert reply["itemIds"]
    for key, item_id in reply["itemIds"].items():
        assert key == item_id
