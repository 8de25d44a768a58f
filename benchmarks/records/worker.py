"""The records group's worker: create and time a collection, or reopen it.

Each action runs in a fresh process (``python -m benchmarks.records --worker ACTION
PATH``) and prints its figures as one JSON line; crdtsync is imported only here.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pycrdt

from ..harness.procfs import process_status_mb, vm_hwm_mb

__all__ = ["COLLECTION", "REMOTE_EDITS", "create", "reopen"]

COLLECTION = "inspections"
REMOTE_EDITS = 100
BLOCKS = 5
"""The timed operations run in this many interleaved blocks (raw set, update, get)."""


def _fields(number: int) -> dict[str, Any]:
    return {"site": f"S-{number}", "status": "open", "score": number % 5}


def _per_op_us(run: Callable[[int], object], count: int) -> float:
    started = time.perf_counter()
    for i in range(count):
        run(i)
    return (time.perf_counter() - started) / count * 1e6


def _store_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def _median_ms(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def create(path: Path, records: int, ops: int, seed: int = 14) -> dict[str, Any]:
    """Fill the collection, time the hot paths and ``changes()`` after remote edits."""
    from crdtsync import Replica  # noqa: PLC0415 - only in the worker process

    rng = random.Random(seed)
    replica = Replica(path, durability="normal")
    try:
        coll = replica.records(COLLECTION)
        doc = replica.open(COLLECTION)
        started = time.perf_counter()
        ids = [coll.add(_fields(number)) for number in range(records)]
        add_s = time.perf_counter() - started
        rss_filled = process_status_mb("self", "VmRSS")

        raw = doc.get("bench-raw", type=pycrdt.Map)
        per_block = max(1, ops // BLOCKS)
        timings: dict[str, list[float]] = {"raw_set": [], "update": [], "get": []}
        for _ in range(BLOCKS):
            picks: Sequence[str] = [ids[rng.randrange(records)] for _ in range(per_block)]
            timings["raw_set"].append(
                _per_op_us(lambda i: raw.__setitem__(f"k{i % 64}", i), per_block)
            )
            timings["update"].append(
                _per_op_us(lambda i, p=picks: coll.update(p[i], score=i), per_block)
            )
            timings["get"].append(_per_op_us(lambda i, p=picks: coll.get(p[i]), per_block))

        # Another replica syncs, edits 100 records; they arrive as 100 remote updates.
        with Replica(":memory:") as other:
            started = time.perf_counter()
            other.apply_remote(COLLECTION, replica.diff(COLLECTION, b"\x00"))
            initial_sync_s = time.perf_counter() - started
            theirs = other.records(COLLECTION)
            cursor = coll.cursor()
            for record_id in rng.sample(ids, REMOTE_EDITS):
                theirs.update(record_id, status="checked")
            updates = [entry.data for entry in other.outbox(COLLECTION)]
        started = time.perf_counter()
        for update in updates:
            replica.apply_remote(COLLECTION, update)
        apply_us = (time.perf_counter() - started) / len(updates) * 1e6
        changes = coll.changes(since=cursor)
        changes_ms = _median_ms(lambda: coll.changes(since=cursor), 20)
        encoded = len(doc.get_update())
    finally:
        replica.close()
    return {
        "records": records,
        "add_us": add_s / records * 1e6,
        "raw_set_us": statistics.median(timings["raw_set"]),
        "update_us": statistics.median(timings["update"]),
        "get_us": statistics.median(timings["get"]),
        "timings_us": timings,
        "initial_sync_s": initial_sync_s,
        "remote_edits": len(updates),
        "apply_remote_us": apply_us,
        "changes_ms": changes_ms,
        "changes_count": len(changes.upserted) + len(changes.deleted),
        "cursor": cursor,
        "encoded_bytes": encoded,
        "store_bytes": _store_bytes(path),
        "rss_filled_mb": rss_filled,
        "rss_peak_mb": vm_hwm_mb(),
    }


def reopen(path: Path, cursor: str) -> dict[str, Any]:
    """Reopen the collection: open time, first get, changes(), first len() and conflicts()."""
    from crdtsync import Replica  # noqa: PLC0415 - imported before the clock starts

    started = time.perf_counter()
    replica = Replica(path, durability="normal")
    try:
        replica.open(COLLECTION)  # the document alone: what pycrdt's load costs
        loaded = time.perf_counter()
        coll = replica.records(COLLECTION)
        opened = time.perf_counter()
        some_id = next(iter(coll.changes(since=cursor).upserted))
        started_get = time.perf_counter()
        coll.get(some_id)
        first_get_ms = (time.perf_counter() - started_get) * 1000
        changes = coll.changes(since=cursor)
        changes_ms = _median_ms(lambda: coll.changes(since=cursor), 5)
        started_len = time.perf_counter()
        count = len(coll)
        len_s = time.perf_counter() - started_len
        started_conflicts = time.perf_counter()
        conflicts = len(coll.conflicts())
        conflicts_s = time.perf_counter() - started_conflicts
        rss = process_status_mb("self", "VmRSS")
    finally:
        replica.close()
    return {
        "open_s": opened - started,
        "document_open_s": loaded - started,
        "first_get_ms": first_get_ms,
        "changes_ms": changes_ms,
        "changes_count": len(changes.upserted) + len(changes.deleted),
        "len": count,
        "first_len_s": len_s,
        "first_conflicts_s": conflicts_s,
        "conflicts": conflicts,
        "rss_open_mb": rss,
        "rss_peak_mb": vm_hwm_mb(),
    }
