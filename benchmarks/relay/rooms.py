"""One run of scenario a, b or c: a fresh server, the load-generator processes, the
measured window, and the figures merged from every process."""

from __future__ import annotations

import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pycrdt

from ..comparison import RUN_ERRORS
from ..harness.machine import load_average
from ..harness.placement import Placement, pinning_report
from ..harness.processes import WorkerProcess, tail
from ..harness.procfs import cpu_shares, cpu_times, process_cpu_s
from ..harness.stats import percentiles
from ..internals import same_state
from ..loadgen.shared import SharedCounters
from ..loadgen.spec import MAP_NAME, latency_path
from ..servers import ServerProcess
from .result import RunResult
from .scenarios import Params, Scenario

__all__ = ["READY_TIMEOUT_S", "Assignment", "assign", "cross_process_problems", "run_rooms_once"]

READY_TIMEOUT_S = 120.0
GO_MARGIN_S = 0.3
"""Time between ``go`` and the writers' start, so every process receives it first."""


@dataclass(frozen=True, slots=True)
class Assignment:
    """What one load-generator process drives."""

    rooms: list[str]
    slots: list[int]
    """Each room's index in the run's shared counters."""
    members: list[list[int]] | None
    """Per room, its client indices here (None: all of the room's clients)."""


def assign(names: Sequence[str], clients_per_room: int, processes: int) -> list[Assignment]:
    """Rooms dealt round-robin over the processes when there are enough of them; else
    (fewer rooms than processes: one room, 2 writers) each room's clients are dealt over
    the processes, which then share counters (see :mod:`benchmarks.loadgen`)."""
    processes = max(1, processes)
    rooms = len(names)
    if rooms >= processes:
        return [
            Assignment(list(names[index::processes]), list(range(rooms))[index::processes], None)
            for index in range(processes)
        ]
    count = min(processes, rooms * clients_per_room)
    assignments = []
    for index in range(count):
        members = [
            [c for c in range(clients_per_room) if (room * clients_per_room + c) % count == index]
            for room in range(rooms)
        ]
        keep = [room for room in range(rooms) if members[room]]
        assignments.append(Assignment([names[r] for r in keep], keep, [members[r] for r in keep]))
    return assignments


def run_rooms_once(
    scenario: Scenario,
    server_kind: str,
    params: Params,
    *,
    placement: Placement,
    work: Path,
    repetition: int = 0,
    server: ServerProcess | None = None,
) -> RunResult:
    """One run of scenario a, b or c against a fresh server process (or ``server``: an
    unstarted :class:`ServerProcess`, or several processes behaving as one, such as
    :class:`benchmarks.redis.cluster.ServerCluster`, whose rooms are dealt over its
    ``urls`` and whose CPU is that of all its processes)."""
    result = RunResult(
        scenario.key,
        server_kind,
        repetition,
        warmup_s=params.warmup_s,
        duration_s=params.duration_s,
        rooms=scenario.rooms,
        clients=scenario.rooms * scenario.clients_per_room,
        load_average=load_average(),
    )
    if server is None:
        server = ServerProcess(server_kind, work, placement.server_cpus)
    loadgens: list[WorkerProcess] = []
    try:
        url = server.start()
        processes = params.loadgen_processes or placement.loadgen_processes
        names = [f"bench-{scenario.key}-{index}" for index in range(scenario.rooms)]
        assignments = assign(names, scenario.clients_per_room, processes)
        shared = None
        if any(a.members is not None for a in assignments):
            shared = work / "counters.bin"
            SharedCounters.create(shared, scenario.rooms, scenario.clients_per_room)
        for index, assignment in enumerate(assignments):
            spec = _loadgen_spec(
                scenario, params, assignment, server=server, url=url, shared=shared
            )
            spec["seed"] = 1000 * repetition + index + 1
            spec["id_seed"] = 1_000_003 * (repetition + 1) + ord(scenario.key)
            loadgens.append(
                WorkerProcess(
                    "benchmarks.loadgen", spec, work, f"loadgen-{index}", placement.cpus_of(index)
                )
            )
        result.loadgen_processes = len(loadgens)
        for lg in loadgens:
            lg.start()
            if shared is not None:  # one room's clients over processes: one process at a time
                lg.expect("ready", timeout=READY_TIMEOUT_S)
        if shared is None:
            for lg in loadgens:
                lg.expect("ready", timeout=READY_TIMEOUT_S)
        result.pinning = pinning_report(placement, server, loadgens)
        _measure_window(params, server, loadgens, result)
        for lg in loadgens:
            lg.expect("done", timeout=params.drain_timeout_s + 60)
        result.server_peak_rss_mb = server.peak_rss_mb()
        _merge_loadgen_results(result, loadgens, params)
    except RUN_ERRORS as exc:
        result.fail(f"{type(exc).__name__}: {exc}")
    finally:
        for lg in loadgens:
            lg.stop()
        result.server_exit = server.stop()
    if result.ok and result.server_exit not in (0, None):
        result.fail(f"the server exited with status {result.server_exit}: {tail(server.log)}")
    return result


def _loadgen_spec(
    scenario: Scenario,
    params: Params,
    assignment: Assignment,
    *,
    server: ServerProcess,
    url: str,
    shared: Path | None,
) -> dict[str, Any]:
    """The spec of one load-generator process (:class:`benchmarks.loadgen.spec.Spec`),
    but for its seeds."""
    info = server.info
    urls = server.urls
    return {
        "scenario": scenario.key,
        "server": server.kind,
        "url": url,
        "urls": urls if len(urls) > 1 else None,
        "rooms": assignment.rooms,
        "clients_per_room": scenario.clients_per_room,
        "protocol": info.protocol,
        "prefix": info.prefix,
        "pacing": scenario.pacing,
        "rate": scenario.rate,
        "window": scenario.window,
        "warmup_s": params.warmup_s,
        "duration_s": params.duration_s,
        "drain_timeout_s": params.drain_timeout_s,
        "members": assignment.members,
        "room_slots": assignment.slots,
        "shared": None if shared is None else str(shared),
        "total_rooms": scenario.rooms,
    }


def _sleep_until(deadline_ns: int) -> None:
    delay = (deadline_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


def _measure_window(
    params: Params, server: ServerProcess, loadgens: Sequence[WorkerProcess], result: RunResult
) -> None:
    """Send ``go``; sample server and load-generator CPU at the window's edges."""
    t0 = time.monotonic_ns() + int(GO_MARGIN_S * 1e9)
    for lg in loadgens:
        lg.send(f"go {t0}")
    window_start = t0 + int(params.warmup_s * 1e9)
    window_end = window_start + int(params.duration_s * 1e9)
    _sleep_until(window_start)
    server_before = server.cpu_s()
    loadgen_before = [process_cpu_s(lg.pid) for lg in loadgens]
    system_before = cpu_times()
    _sleep_until(window_end)
    server_after = server.cpu_s()
    loadgen_after = [process_cpu_s(lg.pid) for lg in loadgens]
    result.cpus = cpu_shares(system_before, cpu_times())
    if server_before is not None and server_after is not None:
        result.server_cpu_s = server_after - server_before
        result.server_cpu_pct = 100 * result.server_cpu_s / params.duration_s
    pcts = [
        100 * (after - before) / params.duration_s
        for before, after in zip(loadgen_before, loadgen_after, strict=True)
        if before is not None and after is not None
    ]
    if pcts:
        result.loadgen_cpu_pcts = pcts
        result.loadgen_cpu_pct = max(pcts)
    if result.cpus and result.server_cpu_pct is not None:
        busy = sum(share["busy_pct"] for share in result.cpus.values())
        result.other_cpu_pct = max(0.0, busy - result.server_cpu_pct - sum(pcts))


def _merge_loadgen_results(
    result: RunResult, loadgens: Sequence[WorkerProcess], params: Params
) -> None:
    parts = [lg.result() for lg in loadgens]
    latencies: array[int] = array("q")
    ack_latencies: array[int] = array("q")
    for lg in loadgens:
        latencies.extend(lg.read_array(latency_path(lg.out)))
        ack_latencies.extend(lg.read_array(latency_path(lg.out, "ack")))
    result.connect_s = max((p["connect_s"] or 0.0) for p in parts)
    result.sent_total = sum(p["sent_total"] for p in parts)
    result.sent_in_window = sum(p["sent_in_window"] for p in parts)
    result.deliveries = sum(p["deliveries_in_window"] for p in parts)
    result.deliveries_total = sum(p["deliveries_total"] for p in parts)
    result.deliveries_per_s = result.deliveries / params.duration_s
    result.late_sends = sum(p["late_sends"] for p in parts)
    result.echoes = sum(p["echoes"] for p in parts)
    result.acks_received = sum(p["acks_received"] for p in parts)
    result.drain_s = max((p["drain_s"] or 0.0) for p in parts)
    result.latency_ms = percentiles(latencies)
    result.latency_samples = len(latencies)
    result.ack_latency_ms = percentiles(ack_latencies)
    self_cpu = [p["process_cpu_s"] for p in parts if p["process_cpu_s"] is not None]
    if self_cpu:
        result.loadgen_self_cpu_pct = 100 * max(self_cpu) / params.duration_s
    if result.server_cpu_s is not None and result.deliveries:
        result.us_per_delivery = result.server_cpu_s / result.deliveries * 1e6
    result.errors = [error for p in parts for error in p["errors"]][:20]
    result.converged = all(p["converged"] for p in parts)
    result.convergence = "; ".join(p["convergence"] or "not checked" for p in parts)
    for part in parts:
        if part["status"] != "ok":
            result.fail(part["failure"] or "the load generator reported a failure")
    if result.ok and any(p["room_states"] for p in parts):
        problems = cross_process_problems(parts)
        result.converged = not problems
        if problems:
            result.fail("did not converge across processes: " + "; ".join(problems[:5]))
        else:
            result.convergence += "; across processes: equal content, state vectors and delete sets"
    if result.ok and not result.deliveries:
        result.fail("no delivery observed in the measured window")


def cross_process_problems(parts: Sequence[dict[str, Any]]) -> list[str]:
    """Rooms whose clients were split over processes: every client's final document
    (content and state vector + delete set) must be equal, and the counters in it equal
    to what each writer sent."""
    problems: list[str] = []
    rooms: dict[str, dict[str, Any]] = {}
    sent: dict[str, dict[str, int]] = {}
    for part in parts:
        for room, states in part["room_states"].items():
            rooms.setdefault(room, {}).update(states)
        for room, counts in part["sent_by_client"].items():
            sent.setdefault(room, {}).update(counts)
    for room, states in sorted(rooms.items()):
        (first_key, first), *others = sorted(states.items())
        expected = {key: count for key, count in sent.get(room, {}).items() if count}
        counters = {key: int(value.split(" ")[0]) for key, value in first["content"].items()}
        if counters != expected:
            problems.append(f"{room}: final counters {counters} != sent {expected}")
        reference: pycrdt.Doc[Any] = pycrdt.Doc()
        reference.apply_update(bytes.fromhex(first["state"]))
        for key, state in others:
            doc: pycrdt.Doc[Any] = pycrdt.Doc()
            doc.apply_update(bytes.fromhex(state["state"]))
            same = doc.get(MAP_NAME, type=pycrdt.Map).to_py() == first["content"]
            if state["content"] != first["content"] or not same or not same_state(doc, reference):
                problems.append(f"{room}: {key} differs from {first_key}")
    return problems
