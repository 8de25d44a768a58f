"""The relay benchmark (fan-out): crdtsync's relay against its peers and a bare forwarder.

Servers under test (:mod:`benchmarks.servers`) run as separate processes on
127.0.0.1: ``python -m relay`` on a SQLite store with durable ACKs
(``synchronous=full``, the default), measured through its native protocol and
through its ``/yjs`` y-websocket path; the peers people would pick instead
(``@y/websocket-server`` and Hocuspocus on Node, pycrdt-websocket), installed by
:mod:`benchmarks.peers`; and ``python -m benchmarks.bare_forwarder`` (forwards
bytes, no CRDT work, no storage: the practical limit of a Python relay). Real
clients (pycrdt documents over websockets, :mod:`benchmarks.loadgen`) run in
separate load-generator processes, each speaking its server's protocol. The
server is pinned to one core and the load generator(s) to the other(s) where the
platform allows it. Scenarios:

- **a**: one room, 2 writers, as fast as a window of unacknowledged/undelivered
  updates per writer allows;
- **b**: one room, 20 clients, 20 updates/s each (paced);
- **c**: 100 rooms, 2 clients each, as fast as the window allows;
- **d**: a late joiner on a 20,000-update document (our relay's native protocol
  only; :mod:`benchmarks.sync` compares every server), with the room in memory
  and after a relay restart.

See ``benchmarks/README.md`` for what is measured and how to read the report.
One run of one scenario against one server, without the rest of the group::

    python -m benchmarks.relay --scenario a --server relay --warmup 0.2 --duration 0.5 \\
        --out run.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import pycrdt

from crdtsync.statevector import same_state

from . import PROJECT_DIR, Mode, RunOptions
from .loadgen import MAP_NAME, SharedCounters, latency_path
from .peers import ensure as ensure_peers
from .peers import node_versions, pycrdt_websocket_versions
from .procs import (
    WorkerProcess,
    cpu_shares,
    cpu_times,
    process_cpu_ns_threads,
    process_cpu_s,
    tail,
)
from .report import (
    filesystem_type,
    fmt_float,
    fmt_int,
    machine_info,
    markdown_table,
    now_iso,
    source_digest,
    write_results,
)
from .servers import ALL_SERVERS, SERVERS, ServerProcess, available
from .trace import DEFAULT_TRACE

__all__ = ["Params", "RunResult", "Scenario", "goal_results", "main", "run"]

ServerKind = str
"""A key of :data:`benchmarks.servers.SERVERS`."""

GROUP = "relay"
EN_DASH = "\N{EN DASH}"
SATURATED = 85.0
"""Load-generator CPU (% of one core) above which its figures are load-generator-bound."""
BUSY_LOAD = 4.0
"""Load average above which the report warns (this benchmark itself accounts for 2-3:
server, load generator, and the relay's SQLite thread waiting in fsync)."""
READY_TIMEOUT_S = 120.0
GO_MARGIN_S = 0.3
"""Time between ``go`` and the writers' start, so every process receives it first."""


# -- what to run ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scenario:
    """One load shape."""

    key: str
    title: str
    rooms: int
    clients_per_room: int
    pacing: Literal["max", "rate"] = "max"
    rate: float = 0.0
    window: int = 100

    @property
    def about(self) -> str:
        """One line saying what the scenario does."""
        if self.key == "d":
            return self.title
        shape = (
            f"{self.rate:g} updates/s per client"
            if self.pacing == "rate"
            else f"as fast as possible, window {self.window} per writer"
        )
        return f"{self.title}: {self.rooms} room(s) x {self.clients_per_room} clients, {shape}"


@dataclass(frozen=True, slots=True)
class Params:
    """Durations, sizes and repetitions for one mode."""

    mode: Mode
    warmup_s: float
    duration_s: float
    repeat: int
    drain_timeout_s: float = 60.0
    a_window: int = 100
    b_clients: int = 20
    b_rate: float = 20.0
    c_rooms: int = 100
    c_window: int = 10
    late_updates: int = 20_000
    late_window: int = 100
    servers: tuple[str, ...] = ALL_SERVERS
    """The servers to run (those whose peers are installed)."""
    loadgen_processes: int | None = None
    """Load-generator processes per run (None: one per core left to them)."""

    @classmethod
    def for_mode(cls, mode: Mode) -> Params:
        """``quick``: 1 s warm-up, 3 s measured, one run; ``full``: 2 s + 8 s, three runs."""
        if mode == "quick":
            return cls(mode, warmup_s=1.0, duration_s=3.0, repeat=1)
        return cls(mode, warmup_s=2.0, duration_s=8.0, repeat=3)

    def scenarios(self) -> list[Scenario]:
        """The four scenarios with these sizes."""
        return [
            Scenario("a", "(a) one room, 2 writers", 1, 2, "max", window=self.a_window),
            Scenario("b", "(b) one room, paced", 1, self.b_clients, "rate", rate=self.b_rate),
            Scenario("c", "(c) many rooms", self.c_rooms, 2, "max", window=self.c_window),
            Scenario(
                "d",
                f"(d) late joiner on a {self.late_updates:,}-update document",
                1,
                1,
                window=self.late_window,
            ),
        ]


@dataclass(frozen=True, slots=True)
class Goal:
    """A target from the issues; reported as met or not met, never asserted.

    ``kind``: ``ratio_max`` (ours / theirs ≤ ``limit``), ``ratio_min`` (ours /
    theirs ≥ ``limit``) or ``abs_max`` (ours ≤ ``limit``) of ``figure`` in
    ``scenario``, for our server ``ours`` against ``theirs``.
    """

    key: str
    description: str
    target: str
    scenario: str
    figure: str
    ours: str
    theirs: str | None
    kind: Literal["ratio_max", "ratio_min", "abs_max"]
    limit: float


def _goals() -> tuple[Goal, ...]:
    goals = []
    for ours, name in (("relay", "native"), ("relay-yjs", "/yjs")):
        goals.append(
            Goal(
                f"b_cpu_{name}",
                f"(b) relay CPU per delivered update, {name} / bare forwarder",
                "≤ 1.25x",
                "b",
                "us_per_delivery",
                ours,
                "bare",
                "ratio_max",
                1.25,
            )
        )
        for scenario in ("a", "c"):
            for theirs, limit in (("y-websocket", 1.2), ("pycrdt-websocket", 2.0), ("bare", 0.7)):
                goals.append(
                    Goal(
                        f"{scenario}_rate_{name}_{theirs}",
                        f"({scenario}) deliveries/s, {name} / {SERVERS[theirs].label}",
                        f"≥ {limit:.2f}",
                        scenario,
                        "deliveries_per_s",
                        ours,
                        theirs,
                        "ratio_min",
                        limit,
                    )
                )
        goals.append(
            Goal(
                f"b_p99_{name}",
                f"(b) p99 latency, {name} / bare forwarder",
                "≤ 1.5x",
                "b",
                "p99",
                ours,
                "bare",
                "ratio_max",
                1.5,
            )
        )
    goals.append(
        Goal(
            "b_cpu_abs",
            "(b) relay CPU per delivered update, native (issue 3's absolute target)",
            "≤ 30 µs",
            "b",
            "us_per_delivery",
            "relay",
            None,
            "abs_max",
            30.0,
        )
    )
    return tuple(goals)


GOALS = _goals()


@dataclass(frozen=True, slots=True)
class Placement:
    """Which cores the server and the load generator(s) run on."""

    server_cpus: list[int] | None
    loadgen_cpus: list[list[int]] | None
    """One core set per load-generator process (None: not pinned)."""

    @classmethod
    def plan(cls) -> Placement:
        """Server on the first available core, one load-generator process per other core."""
        try:
            cpus = sorted(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            return cls(None, None)
        if len(cpus) < 2:
            return cls(None, None)
        return cls([cpus[0]], [[cpu] for cpu in cpus[1:]])

    @property
    def loadgen_processes(self) -> int:
        """How many load-generator processes a scenario uses by default."""
        return len(self.loadgen_cpus) if self.loadgen_cpus else 1

    def cpus_of(self, index: int) -> list[int] | None:
        """The cores of load-generator process ``index`` (round-robin when there are more
        processes than cores)."""
        if not self.loadgen_cpus:
            return None
        return self.loadgen_cpus[index % len(self.loadgen_cpus)]

    def all_loadgen_cpus(self) -> list[int] | None:
        """The union of the load generators' cores."""
        if not self.loadgen_cpus:
            return None
        return sorted({cpu for cpus in self.loadgen_cpus for cpu in cpus})


# -- results -------------------------------------------------------------------------------


@dataclass(slots=True)
class RunResult:
    """One run of one scenario against one server."""

    scenario: str
    server: str
    repetition: int = 0
    status: str = "ok"
    failure: str | None = None
    warmup_s: float = 0.0
    duration_s: float = 0.0
    rooms: int = 0
    clients: int = 0
    loadgen_processes: int = 0
    pinning: dict[str, Any] = field(default_factory=dict)
    """Requested and actual CPU affinity of the server and load generators."""
    load_average: float | None = None
    connect_s: float | None = None
    sent_total: int | None = None
    sent_in_window: int | None = None
    deliveries: int | None = None
    """Deliveries observed by clients inside the measured window."""
    deliveries_per_s: float | None = None
    deliveries_total: int | None = None
    late_sends: int | None = None
    echoes: int | None = None
    """Updates the server sent back to their own writer (not deliveries)."""
    acks_received: int | None = None
    latency_ms: dict[str, float] | None = None
    """p50, p95, p99, max and mean of edit-to-remote-observe latency in the window."""
    latency_samples: int | None = None
    ack_latency_ms: dict[str, float] | None = None
    """Relay: from sending an update to the ACK covering it (durably stored), in the window."""
    server_cpu_s: float | None = None
    """Server process CPU (user + system, all threads) over the measured window."""
    server_cpu_pct: float | None = None
    us_per_delivery: float | None = None
    server_peak_rss_mb: float | None = None
    """``VmHWM`` of the server process at the end of the run."""
    loadgen_cpu_pct: float | None = None
    """The busiest load-generator process's CPU over the window, % of one core."""
    loadgen_cpu_pcts: list[float] | None = None
    cpus: dict[str, Any] | None = None
    """Per CPU over the window (/proc/stat): busy, idle, iowait and stolen %."""
    other_cpu_pct: float | None = None
    """CPU busy over the window, summed over CPUs, minus the server's and the load
    generators' (% of one core): other processes (the orchestrator, the kernel's threads)."""
    loadgen_self_cpu_pct: float | None = None
    """The same measured inside the load generator (``time.process_time``), cross-check."""
    drain_s: float | None = None
    converged: bool | None = None
    convergence: str | None = None
    late: dict[str, Any] | None = None
    """Scenario d: the build and each join (see :func:`_run_late`)."""
    server_exit: int | None = None
    errors: list[str] = field(default_factory=list)

    def fail(self, reason: str) -> None:
        """Mark the run FAILED (its numbers stay in the JSON but are not reported)."""
        self.status = "FAILED"
        self.failure = reason if self.failure is None else f"{self.failure}; {reason}"

    @property
    def ok(self) -> bool:
        """True if every check passed."""
        return self.status == "ok"

    @property
    def loadgen_saturated(self) -> bool:
        """True when a load-generator process was above :data:`SATURATED`."""
        return self.loadgen_cpu_pct is not None and self.loadgen_cpu_pct > SATURATED


# -- processes -----------------------------------------------------------------------------


@contextmanager
def own_affinity(cpus: Sequence[int] | None) -> Iterator[None]:
    """Keep this (mostly sleeping) orchestrator off the server's core meanwhile."""
    try:
        before = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        yield
        return
    if cpus:
        with suppress(OSError):
            os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        with suppress(OSError):
            os.sched_setaffinity(0, before)


def _sleep_until(deadline_ns: int) -> None:
    delay = (deadline_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


# -- one run -------------------------------------------------------------------------------


def _pinning(
    placement: Placement, server: ServerProcess | None, loadgens: Sequence[WorkerProcess]
) -> dict[str, Any]:
    requested = placement.server_cpus is not None
    server_ok = server is None or not requested or server.pinned == placement.server_cpus
    loadgens_ok = all(lg.pinned == list(lg.cpus or []) for lg in loadgens) if requested else True
    return {
        "requested": requested,
        "server_cpus": placement.server_cpus,
        "server_affinity": None if server is None else server.pinned,
        "loadgen_cpus": [lg.cpus for lg in loadgens],
        "loadgen_affinity": [lg.pinned for lg in loadgens],
        "ok": requested and server_ok and loadgens_ok,
    }


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


def percentiles(values: Sequence[int]) -> dict[str, float] | None:
    """p50/p95/p99/max/mean in ms (nearest rank) of latencies in ns."""
    if not values:
        return None
    ordered = sorted(values)
    count = len(ordered)

    def rank(q: float) -> float:
        return ordered[min(count - 1, max(0, math.ceil(q * count) - 1))] / 1e6

    return {
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "max": ordered[-1] / 1e6,
        "mean": sum(ordered) / count / 1e6,
    }


def run_rooms_once(
    scenario: Scenario,
    server_kind: ServerKind,
    params: Params,
    *,
    placement: Placement,
    work: Path,
    repetition: int = 0,
) -> RunResult:
    """One run of scenario a, b or c against a fresh server process."""
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
    info = SERVERS[server_kind]
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
        id_seed = 1_000_003 * (repetition + 1) + ord(scenario.key)
        for index, assignment in enumerate(assignments):
            spec = {
                "scenario": scenario.key,
                "server": server_kind,
                "url": url,
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
                "seed": 1000 * repetition + index + 1,
                "id_seed": id_seed,
                "members": assignment.members,
                "room_slots": assignment.slots,
                "shared": None if shared is None else str(shared),
                "total_rooms": scenario.rooms,
            }
            loadgens.append(
                WorkerProcess(
                    "benchmarks.loadgen", spec, work, f"loadgen-{index}", placement.cpus_of(index)
                )
            )
        result.loadgen_processes = len(loadgens)
        for lg in loadgens:
            lg.start()
            if shared is not None:  # one room's clients over processes: one process at a time
                lg.expect("ready", READY_TIMEOUT_S)
        if shared is None:
            for lg in loadgens:
                lg.expect("ready", READY_TIMEOUT_S)
        result.pinning = _pinning(placement, server, loadgens)
        _measure_window(params, server, loadgens, result)
        for lg in loadgens:
            lg.expect("done", params.drain_timeout_s + 60)
        result.server_peak_rss_mb = server.peak_rss_mb()
        _merge_loadgen_results(result, loadgens, params)
    except (RuntimeError, OSError, ValueError, KeyError, TypeError) as exc:
        result.fail(f"{type(exc).__name__}: {exc}")
    finally:
        for lg in loadgens:
            lg.stop()
        result.server_exit = server.stop()
    if result.ok and result.server_exit not in (0, None):
        result.fail(f"the server exited with status {result.server_exit}: {tail(server.log)}")
    return result


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


def run_late_once(
    params: Params, placement: Placement, work: Path, trace_cache: Path, repetition: int = 0
) -> RunResult:
    """Scenario d against the relay: build, join with the room in memory (warm), then
    restart the relay on the same store and join again (cold: the room loads from disk)."""
    result = RunResult(
        "d",
        "relay",
        repetition,
        rooms=1,
        clients=2,
        loadgen_processes=1,
        load_average=load_average(),
    )
    late: dict[str, Any] = {"updates_requested": params.late_updates}
    result.late = late
    spec = {
        "scenario": "d",
        "server": "relay",
        "protocol": "native",
        "url": "",
        "rooms": ["bench-d-0"],
        "clients_per_room": 1,
        "window": params.late_window,
        "drain_timeout_s": params.drain_timeout_s,
        "updates": params.late_updates,
        "trace_cache": str(trace_cache),
        "seed": 1000 * repetition + 1,
    }
    servers: list[ServerProcess] = []
    cpus = placement.loadgen_cpus[0] if placement.loadgen_cpus else None
    loadgen: WorkerProcess | None = None
    build_timeout = params.drain_timeout_s + params.late_updates / 200
    try:
        server = ServerProcess("relay", work, placement.server_cpus)
        servers.append(server)
        spec["url"] = server.start()
        loadgen = WorkerProcess("benchmarks.loadgen", spec, work, "loadgen-0", cpus)
        loadgen.start()
        loadgen.expect("ready", READY_TIMEOUT_S)
        result.pinning = _pinning(placement, server, [loadgen])
        before = server.cpu_s()
        loadgen.send("go")
        loadgen.expect("built", build_timeout)
        after = server.cpu_s()
        late["build_server_cpu_s"] = _diff(before, after)
        late["build_peak_rss_mb"] = server.peak_rss_mb()
        late["warm_server_cpu_ms"] = _join(loadgen, server, "warm")
        late["warm_peak_rss_mb"] = server.peak_rss_mb()
        loadgen.send("disconnect")
        loadgen.expect("disconnected", 30)
        exit_status = server.stop()
        if exit_status != 0:
            result.fail(f"the relay exited with status {exit_status} on SIGTERM")
        restarted = ServerProcess("relay", work, placement.server_cpus)
        servers.append(restarted)
        restarted.start()
        late["cold_server_cpu_ms"] = _join(loadgen, restarted, "cold")
        late["cold_peak_rss_mb"] = restarted.peak_rss_mb()
        result.server_peak_rss_mb = late["cold_peak_rss_mb"]
        loadgen.send("finish")
        loadgen.expect("done", 60)
        _merge_late(result, loadgen.result())
        loadgen.stop()
        result.server_exit = restarted.stop()
        if result.server_exit != 0:
            result.fail(f"the restarted relay exited with status {result.server_exit}")
    except (RuntimeError, OSError, ValueError, KeyError, TypeError) as exc:
        result.fail(f"{type(exc).__name__}: {exc}")
    finally:
        if loadgen is not None:
            loadgen.stop()
        for server in servers:
            server.stop()
    return result


def _diff(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _join(loadgen: WorkerProcess, server: ServerProcess, label: str) -> float | None:
    """One late joiner; the server's CPU (ms) while it joined (schedstat, else ticks)."""
    before_ns, before = process_cpu_ns_threads(server.pid), server.cpu_s()
    loadgen.send(f"join {server.url} {label}")
    loadgen.expect("joined", 120)
    after_ns, after = process_cpu_ns_threads(server.pid), server.cpu_s()
    if before_ns is not None and after_ns is not None:
        return (after_ns - before_ns) / 1e6
    cpu = _diff(before, after)
    return None if cpu is None else cpu * 1000


def _merge_late(result: RunResult, part: dict[str, Any]) -> None:
    late = result.late
    assert late is not None
    for key in ("updates", "update_bytes_sent", "build_s", "doc_update_bytes", "text_length"):
        late[key] = part[key]
    if part["build_s"]:
        late["build_updates_per_s"] = part["updates"] / part["build_s"]
    late["joins"] = part["joins"]
    result.errors = part["errors"]
    equal = [join["status"] == "ok" for join in part["joins"]]
    result.converged = bool(equal) and all(equal)
    result.convergence = (
        "each joiner's text equals the writer's and their state vectors and delete sets match"
        if result.converged
        else "a joiner's document differs from the writer's"
    )
    if part["status"] != "ok":
        result.fail(part["failure"] or "the load generator reported a failure")


# -- the group -----------------------------------------------------------------------------


def run(options: RunOptions) -> bool:
    """Run the relay group, print the report, write the results; True if no run FAILED."""
    started = now_iso()
    wanted = options.servers or ALL_SERVERS
    reasons = available(wanted, ensure_peers(install=options.install_peers))
    unavailable = {key: reason for key, reason in reasons.items() if reason is not None}
    for key, reason in unavailable.items():
        print(f"relay group: skipping {SERVERS[key].label}: {reason}", file=sys.stderr)
    params = replace(
        Params.for_mode(options.mode),
        servers=tuple(key for key in wanted if key not in unavailable),
    )
    placement = Placement.plan()
    digest_at_start = source_digest(PROJECT_DIR / "relay")
    with (
        tempfile.TemporaryDirectory(prefix="crdtsync-relay-bench-", dir=options.tmpdir) as tmp,
        own_affinity(placement.all_loadgen_cpus()),
    ):
        work = Path(tmp)
        trace_cache = work / "trace.bin"
        prepare_trace(trace_cache)
        runs = _run_all(params, placement, work, trace_cache)
        store_dir = work.parent
    summaries = summarize(params, runs)
    data = _results_json(
        params,
        placement,
        summaries=summaries,
        runs=runs,
        started=started,
        store_dir=store_dir,
    )
    data["parameters"]["relay_source_sha256_at_start"] = digest_at_start
    data["parameters"]["unavailable_servers"] = unavailable
    markdown = render_markdown(params, summaries, data["machine"], data["parameters"])
    print(markdown)
    json_path, md_path = write_results(options.results_dir, GROUP, data, markdown)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return all(run.ok for run in runs)


def prepare_trace(destination: Path) -> None:
    """The compact trace for scenario d, written by a helper process (see local.py)."""
    command = [sys.executable, "-m", "benchmarks.local", "--prepare-trace", str(destination)]
    done = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"preparing the trace failed:\n{done.stderr}")


def _run_all(
    params: Params, placement: Placement, work: Path, trace_cache: Path
) -> list[RunResult]:
    """Every scenario and server ``params.repeat`` times, interleaved (repetition-major)."""
    plan: list[tuple[Scenario, ServerKind]] = []
    for scenario in params.scenarios():
        servers = ("relay",) if scenario.key == "d" else params.servers
        if scenario.key == "d" and "relay" not in params.servers:
            continue
        plan.extend((scenario, server) for server in servers)
    runs = []
    total = len(plan) * params.repeat
    for repetition in range(params.repeat):
        for index, (scenario, server) in enumerate(plan):
            number = repetition * len(plan) + index + 1
            print(
                f"[{number}/{total}] {scenario.title}, {SERVERS[server].label} ...",
                end=" ",
                file=sys.stderr,
                flush=True,
            )
            run_dir = work / f"run-{scenario.key}-{server}-{repetition}"
            run_dir.mkdir()
            if scenario.key == "d":
                result = run_late_once(params, placement, run_dir, trace_cache, repetition)
            else:
                result = run_rooms_once(
                    scenario,
                    server,
                    params,
                    placement=placement,
                    work=run_dir,
                    repetition=repetition,
                )
            print(_progress(result), file=sys.stderr, flush=True)
            runs.append(result)
    return runs


def _progress(result: RunResult) -> str:
    if not result.ok:
        return f"FAILED: {result.failure}"
    if result.scenario == "d" and result.late:
        joins = ", ".join(
            f"{join['label']} join {join['total_ms']:.0f} ms" for join in result.late["joins"]
        )
        return f"built in {result.late['build_s']:.1f} s; {joins}"
    latency = result.latency_ms or {}
    return (
        f"{result.deliveries_per_s or 0:,.0f} deliveries/s, p99 {latency.get('p99', 0):.1f} ms, "
        f"server CPU {result.server_cpu_pct or 0:.0f}%, "
        f"load generator {result.loadgen_cpu_pct or 0:.0f}%"
    )


# -- summaries -----------------------------------------------------------------------------


@dataclass(slots=True)
class Summary:
    """All runs of one scenario against one server."""

    scenario: Scenario
    server: ServerKind
    runs: list[RunResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True if there were runs and none FAILED."""
        return bool(self.runs) and all(run.ok for run in self.runs)

    @property
    def failure(self) -> str | None:
        """The first failure reason, if any run FAILED."""
        return next((run.failure or "FAILED" for run in self.runs if not run.ok), None)

    def values(self, getter: Any) -> list[float]:
        """A figure of every run (none if any run FAILED)."""
        if not self.ok:
            return []
        values = [getter(run) for run in self.runs]
        return [float(v) for v in values if v is not None]

    def median(self, getter: Any) -> float | None:
        """Median of a figure over the runs."""
        values = self.values(getter)
        return statistics.median(values) if values else None

    def span(self, getter: Any) -> tuple[float, float] | None:
        """(min, max) of a figure over the runs."""
        values = self.values(getter)
        return (min(values), max(values)) if values else None

    @property
    def saturated(self) -> bool:
        """True if the load generator was above :data:`SATURATED` in any run."""
        return any(run.loadgen_saturated for run in self.runs)


def _attr(name: str) -> Any:
    return lambda run: getattr(run, name)


def _capacity(run: RunResult) -> float | None:
    """Deliveries/s the server would reach at 100% of one core at its measured CPU cost
    (deliveries/s over the fraction of a core it used): an estimate not bounded by the
    load generator."""
    if run.deliveries_per_s is None or not run.server_cpu_pct:
        return None
    return run.deliveries_per_s / (run.server_cpu_pct / 100)


def _latency(key: str) -> Any:
    return lambda run: None if run.latency_ms is None else run.latency_ms[key]


def _join_figure(label: str, key: str) -> Any:
    def get(run: RunResult) -> float | None:
        joins = (run.late or {}).get("joins") or []
        return next((join[key] for join in joins if join["label"] == label), None)

    return get


def _late(key: str) -> Any:
    return lambda run: (run.late or {}).get(key)


def summarize(params: Params, runs: Sequence[RunResult]) -> list[Summary]:
    """One summary per scenario and server that ran."""
    summaries = []
    for scenario in params.scenarios():
        for server in ALL_SERVERS:
            mine = [r for r in runs if r.scenario == scenario.key and r.server == server]
            if mine:
                summaries.append(Summary(scenario, server, mine))
    return summaries


def _find(summaries: Sequence[Summary], scenario: str, server: str) -> Summary | None:
    return next((s for s in summaries if s.scenario.key == scenario and s.server == server), None)


def _ratio(mine: float | None, theirs: float | None) -> float | None:
    return mine / theirs if mine is not None and theirs else None


def _figure(name: str) -> Any:
    if name in ("p50", "p95", "p99"):
        return _latency(name)
    return _attr(name)


def goal_results(summaries: Sequence[Summary]) -> list[dict[str, Any]]:
    """Each goal with its measured value and ``met`` / ``not met`` / ``unknown``.

    Throughput ratios also get a CPU-normalized value (deliveries/s per core used,
    which a saturated load generator cannot cap)."""
    results = []
    for goal in GOALS:
        ours = _find(summaries, goal.scenario, goal.ours)
        theirs = None if goal.theirs is None else _find(summaries, goal.scenario, goal.theirs)
        getter = _figure(goal.figure)
        mine = None if ours is None else ours.median(getter)
        normalized = None
        if goal.theirs is None:
            value = mine
        else:
            value = _ratio(mine, None if theirs is None else theirs.median(getter))
            if goal.figure == "deliveries_per_s" and ours is not None and theirs is not None:
                normalized = _ratio(ours.median(_capacity), theirs.median(_capacity))
        if value is None:
            status = "unknown (run FAILED or missing)"
        elif goal.kind == "ratio_min":
            status = "met" if value >= goal.limit else "not met"
        else:
            status = "met" if value <= goal.limit else "not met"
        saturated = any(s is not None and s.saturated for s in (ours, theirs))
        results.append(
            {
                **asdict(goal),
                "measured": value,
                "status": status,
                "loadgen_saturated": saturated,
                "cpu_normalized": normalized,
            }
        )
    return results


# -- JSON ----------------------------------------------------------------------------------


def peer_versions() -> dict[str, dict[str, str]]:
    """The pinned versions of the peers (from the committed lock files) and Node's."""
    return {"pycrdt-websocket": pycrdt_websocket_versions(), "node": node_versions()}


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in ("websockets", "msgpack", "pycrdt"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _summary_json(summary: Summary) -> dict[str, Any]:
    figures = {
        "deliveries_per_s": _attr("deliveries_per_s"),
        "p50_ms": _latency("p50"),
        "p95_ms": _latency("p95"),
        "p99_ms": _latency("p99"),
        "server_cpu_pct": _attr("server_cpu_pct"),
        "us_per_delivery": _attr("us_per_delivery"),
        "server_peak_rss_mb": _attr("server_peak_rss_mb"),
        "loadgen_cpu_pct": _attr("loadgen_cpu_pct"),
        "capacity_per_core": _capacity,
        "ack_p50_ms": lambda run: None if run.ack_latency_ms is None else run.ack_latency_ms["p50"],
        "ack_p99_ms": lambda run: None if run.ack_latency_ms is None else run.ack_latency_ms["p99"],
    }
    if summary.scenario.key == "d":
        figures = {
            "build_s": _late("build_s"),
            "build_updates_per_s": _late("build_updates_per_s"),
            "warm_join_ms": _join_figure("warm", "total_ms"),
            "warm_join_bytes": _join_figure("warm", "bytes_received"),
            "warm_server_cpu_ms": _late("warm_server_cpu_ms"),
            "cold_join_ms": _join_figure("cold", "total_ms"),
            "cold_join_bytes": _join_figure("cold", "bytes_received"),
            "cold_server_cpu_ms": _late("cold_server_cpu_ms"),
            "cold_peak_rss_mb": _late("cold_peak_rss_mb"),
            "doc_update_bytes": _late("doc_update_bytes"),
        }
    return {
        "scenario": summary.scenario.key,
        "server": summary.server,
        "status": "ok" if summary.ok else "FAILED",
        "failure": summary.failure,
        "runs": len(summary.runs),
        "loadgen_saturated": summary.saturated,
        **{f"{name}_median": summary.median(getter) for name, getter in figures.items()},
        **{f"{name}_min_max": summary.span(getter) for name, getter in figures.items()},
    }


def _results_json(
    params: Params,
    placement: Placement,
    *,
    summaries: Sequence[Summary],
    runs: Sequence[RunResult],
    started: str,
    store_dir: Path,
) -> dict[str, Any]:
    loads = [run.load_average for run in runs if run.load_average is not None]
    return {
        "group": GROUP,
        "mode": params.mode,
        "started": started,
        "finished": now_iso(),
        "machine": {**machine_info(), **_versions()},
        "parameters": {
            **asdict(params),
            "scenarios": [asdict(s) for s in params.scenarios()],
            "servers": {
                key: {"label": info.label, "protocol": info.protocol, "stores": info.stores}
                for key, info in SERVERS.items()
                if key in params.servers
            },
            "peer_versions": peer_versions(),
            "relay_command": (
                "python -m relay --host 127.0.0.1 --port 0 --store sqlite:///<run dir>/relay.db "
                "--log-level WARNING (synchronous=full: an fsync per commit)"
            ),
            "store_directory": str(store_dir),
            "store_filesystem": filesystem_type(store_dir),
            "placement": asdict(placement),
            "pinning_failed_runs": [
                f"{run.scenario}/{run.server}#{run.repetition}"
                for run in runs
                if placement.server_cpus is not None and not run.pinning.get("ok")
            ],
            "loadgen_saturated_above_pct": SATURATED,
            "trace": DEFAULT_TRACE.name,
            "load_average_before_runs": (
                {"median": statistics.median(loads), "max": max(loads)} if loads else None
            ),
            "relay_source_sha256": source_digest(PROJECT_DIR / "relay"),
            "max_other_cpu_pct": max(
                (run.other_cpu_pct for run in runs if run.other_cpu_pct is not None),
                default=None,
            ),
            "max_steal_pct": max(
                (share["steal_pct"] for run in runs for share in (run.cpus or {}).values()),
                default=None,
            ),
        },
        "goals": goal_results(summaries),
        "summary": [_summary_json(s) for s in summaries],
        "runs": [asdict(run) for run in runs],
    }


# -- markdown ------------------------------------------------------------------------------


def render_markdown(
    params: Params,
    summaries: Sequence[Summary],
    machine: dict[str, Any],
    parameters: dict[str, Any],
) -> str:
    """The whole report: context, one table per scenario, goals."""
    sections = [f"# Relay benchmark ({params.mode})", _context(params, machine, parameters)]
    for scenario in params.scenarios():
        mine = [s for s in summaries if s.scenario.key == scenario.key]
        if not mine:
            continue
        sections.append(f"## {scenario.about}")
        if scenario.key == "d":
            sections.extend([_late_table(mine), _late_notes(params)])
        else:
            sections.append(_rooms_table(mine, scenario) + _ack_line(mine))
    sections.extend(["## Notes", _notes(params)])
    goals = goal_results(summaries)
    sections.extend(["## Goals (durable ACKs on)", _goals_table(goals), _goals_notes(goals)])
    return "\n\n".join(sections) + "\n"


def _context(params: Params, machine: dict[str, Any], parameters: dict[str, Any]) -> str:
    runs = "1 run" if params.repeat == 1 else f"{params.repeat} runs"
    figures = "one run" if params.repeat == 1 else f"median [min{EN_DASH}max] over the runs"
    commit = machine["git_commit"] or "none (no commit yet)"
    placement = parameters["placement"]
    pinned = parameters.get("pinning_failed_runs") or []
    if placement["server_cpus"] is None:
        pinning = "not pinned (fewer than 2 CPUs available or no sched_setaffinity)"
    else:
        pinning = (
            f"server on CPU {placement['server_cpus']}, load generator(s) on "
            f"{placement['loadgen_cpus']}"
        )
        if pinned:
            pinning += f" (**pinning failed in {len(pinned)} run(s)**: see `pinning` in the JSON)"
        else:
            pinning += " (checked in every run)"
    filesystem = parameters["store_filesystem"] or "unknown filesystem"
    lines = [
        f"- Each scenario and server: {runs} of {params.warmup_s:g} s warm-up + "
        f"{params.duration_s:g} s measured, each with fresh server and load-generator "
        f"processes; figures: {figures}.",
        f"- Machine: {machine['platform']}, {machine['processor']}, {machine['cpu_count']} "
        f"CPUs; Python {machine['python']}, pycrdt {machine['pycrdt']}, websockets "
        f"{machine['websockets']}, msgpack {machine['msgpack']}, crdtsync {machine['crdtsync']}.",
        f"- Pinning: {pinning}.",
        f"- Relay store: SQLite in `{parameters['store_directory']}` ({filesystem}), "
        "`synchronous=full` (an fsync per group commit; ACKs after it).",
        *_server_lines(parameters),
        f"- Commit {commit}; relay sources sha256 "
        f"`{(parameters.get('relay_source_sha256') or 'unknown')[:12]}`.",
    ]
    if parameters.get("relay_source_sha256") != parameters.get(
        "relay_source_sha256_at_start", parameters.get("relay_source_sha256")
    ):
        lines.append("- **Warning: the relay's sources changed during this run.**")
    other = parameters.get("max_other_cpu_pct")
    if other is not None:
        lines.append(
            f"- Other processes: at most {other:.0f}% of a core busy outside the server and the "
            "load generator in a measured window (/proc/stat)."
            + (" **Warning: something else competed for the CPUs.**" if other > 15 else "")
        )
    steal = parameters.get("max_steal_pct")
    if steal is not None:
        lines.append(
            f"- Host: at most {steal:.1f}% of a CPU stolen by the hypervisor in a measured "
            "window (/proc/stat); per-CPU busy/idle/iowait/steal of every window are in the JSON."
            + (" **Warning: the host took CPU time from this machine.**" if steal > 5 else "")
        )
    load = parameters.get("load_average_before_runs")
    if load is not None:
        line = (
            f"- Load average (1 min) before each run: median {load['median']:.2f}, "
            f"max {load['max']:.2f} (the previous run's processes count in it)."
        )
        if load["median"] > BUSY_LOAD:  # fsync waits (D state) count in it too
            line += " **Warning: the machine was busy; the figures are noisy.**"
        lines.append(line)
    return "\n".join(lines)


def _server_lines(parameters: dict[str, Any]) -> list[str]:
    """Which servers ran, what they speak and store, their versions; which could not run."""
    servers = parameters.get("servers") or {}
    versions = parameters.get("peer_versions") or {}
    node, python = versions.get("node", {}), versions.get("pycrdt-websocket", {})
    pinned = {
        "y-websocket": f"@y/websocket-server {node.get('@y/websocket-server', '?')}, yjs "
        f"{node.get('yjs', '?')}, Node {node.get('node', '?')}",
        "hocuspocus": f"@hocuspocus/server {node.get('@hocuspocus/server', '?')}, yjs "
        f"{node.get('yjs', '?')}, Node {node.get('node', '?')}",
        "pycrdt-websocket": f"pycrdt-websocket {python.get('pycrdt-websocket', '?')} on "
        f"websockets {python.get('websockets', '?')}, pycrdt {python.get('pycrdt', '?')}",
    }
    lines = []
    for key, info in servers.items():
        if not isinstance(info, dict):
            continue
        version = f"; {pinned[key]}" if key in pinned else ""
        lines.append(
            f"- Server *{info['label']}*: protocol {info['protocol']}; stores: "
            f"{info['stores']}{version}."
        )
    for key, reason in (parameters.get("unavailable_servers") or {}).items():
        lines.append(f"- Not run: {SERVERS[key].label}: {reason}.")
    return lines


def _cell(summary: Summary, getter: Any, digits: int = 1, spread: bool = False) -> str:
    median = summary.median(getter)
    if median is None:
        return "—"
    text = fmt_float(median, digits)
    span = summary.span(getter)
    if spread and span is not None and len(summary.runs) > 1:
        text += f" [{fmt_float(span[0], digits)}{EN_DASH}{fmt_float(span[1], digits)}]"
    return text


def _status_cell(summary: Summary) -> str:
    if summary.ok:
        return "ok"
    reason = (summary.failure or "").replace("|", "\\|").replace("\n", " ")
    return "**FAILED**: " + (reason if len(reason) <= 120 else reason[:117] + "...")


def _loadgen_cell(summary: Summary) -> str:
    values = [run.loadgen_cpu_pct for run in summary.runs if run.loadgen_cpu_pct is not None]
    if not values:
        return "—"
    text = f"{statistics.median(values):.0f}%"
    if summary.saturated:
        return f"**{text} (max {max(values):.0f}%) ⚠**"
    return text


def _rooms_table(summaries: Sequence[Summary], scenario: Scenario) -> str:
    bare = next((s for s in summaries if s.server == "bare"), None)
    bare_rate = None if bare is None else bare.median(_attr("deliveries_per_s"))
    rows = []
    for s in summaries:
        rate = s.median(_attr("deliveries_per_s"))
        ratio = _ratio(rate, bare_rate) if s.server != "bare" else None
        capacity = _cell(s, _capacity, 0) if scenario.pacing == "max" else "—"
        rows.append(
            [
                SERVERS[s.server].label,
                _cell(s, _attr("deliveries_per_s"), 0, spread=True),
                "—" if ratio is None else f"{ratio:.2f}",
                _cell(s, _latency("p50"), 2),
                _cell(s, _latency("p95"), 2),
                _cell(s, _latency("p99"), 2, spread=True),
                _cell(s, _attr("server_cpu_pct"), 0),
                _cell(s, _attr("us_per_delivery"), 1, spread=scenario.key == "b"),
                capacity,
                _cell(s, _attr("server_peak_rss_mb"), 1),
                _loadgen_cell(s),
                "yes" if s.ok and all(run.converged for run in s.runs) else "—",
                _status_cell(s),
            ]
        )
    headers = [
        "Server",
        "Deliveries/s",
        "vs bare",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "Server CPU %",
        "Server CPU µs/delivery",
        "Est. max/s at 1 core",
        "Peak RSS MB",
        "Load-gen CPU %",
        "Converged",
        "Status",
    ]
    return markdown_table(headers, rows, "lrrrrrrrrrrll")


def _ack_line(summaries: Sequence[Summary]) -> str:
    """The relay's durable-ACK latency under the table."""
    relay = next((s for s in summaries if s.server == "relay"), None)
    if relay is None:
        return ""

    def ack(key: str) -> Any:
        return lambda run: None if run.ack_latency_ms is None else run.ack_latency_ms[key]

    p50, p99 = relay.median(ack("p50")), relay.median(ack("p99"))
    if p50 is None or p99 is None:
        return ""
    return (
        f"\n\n- Relay ACK latency (update sent → ACK after the fsync'd commit): "
        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms."
    )


def _late_table(summaries: Sequence[Summary]) -> str:
    rows = []
    for s in summaries:
        for label, room in (("warm", "in memory"), ("cold", "after a relay restart")):
            rows.append(
                [
                    f"{SERVERS[s.server].label}, room {room}",
                    _cell(s, _join_figure(label, "total_ms"), 1, spread=True),
                    _cell(s, _join_figure(label, "sync_ms"), 1),
                    _cell(s, _join_figure(label, "bytes_received"), 0),
                    _cell(s, _late("doc_update_bytes"), 0),
                    _cell(s, _late(f"{label}_server_cpu_ms"), 0),
                    _cell(s, _late(f"{label}_peak_rss_mb"), 1),
                    "yes" if s.ok else "—",
                    _status_cell(s),
                ]
            )
    rows.append(["bare forwarder", *["n/a (stores nothing)"] + ["—"] * 7])
    headers = [
        "Server",
        "Join until equal, ms",
        "SUBSCRIBE→SYNC ms",
        "Bytes received",
        "Doc state bytes",
        "Server CPU ms",
        "Peak RSS MB",
        "Equal",
        "Status",
    ]
    table = markdown_table(headers, rows, "lrrrrrrll")
    build = [
        f"{fmt_int(int(v))} updates acknowledged in {_cell(s, _late('build_s'), 2, spread=True)} s "
        f"({_cell(s, _late('build_updates_per_s'), 0)} updates/s, relay CPU "
        f"{_cell(s, _late('build_server_cpu_s'), 2)} s)"
        for s in summaries
        if (v := s.median(_late("updates"))) is not None
    ]
    return table + ("\n\n- Building the document: " + build[0] + "." if build else "")


def _late_notes(params: Params) -> str:
    return "\n".join(
        [
            f"- The writer makes the first {params.late_updates:,} edits of the "
            "automerge-paper trace, one transaction (one update, one UPDATE frame) per edit, "
            f"with at most {params.late_window} unacknowledged, and waits for every ACK. Then "
            "a new client connects, says HELLO, subscribes with an empty state vector and "
            "applies the SYNC; *join until equal* runs from the start of its TCP connection "
            "until its text equals the writer's (state vectors and delete sets compared too).",
            "- *Room in memory*: the writer is still subscribed. *After a relay restart*: the "
            "writer disconnects, the relay is stopped (SIGTERM) and started again on the same "
            "store, so the room loads from SQLite (snapshot + log) on SUBSCRIBE.",
            "- *Bytes received*: websocket message payloads (WELCOME + SYNC); *doc state bytes*: "
            "`len(writer_doc.get_update())`. *Server CPU ms*: the relay's on-CPU time during the "
            "join (sum of its threads' schedstat); *peak RSS*: `VmHWM` of the relay process "
            "after the join.",
        ]
    )


def _notes(params: Params) -> str:
    return "\n".join(
        f"- {note}"
        for note in [
            "*Deliveries/s*: updates observed by a receiving client (decoded, applied to its "
            "pycrdt document and its value read back) during the measured window, divided by its "
            "length; an update sent to a room of N clients is N-1 deliveries. *vs bare*: over "
            "the bare forwarder's median in the same invocation.",
            "*Latency*: from just before the writer's edit (the `time.monotonic_ns()` written in "
            "the value) to after the receiver applied the update and read the value back, for "
            "deliveries observed in the window. In (a) and (c) it is dominated by the window's "
            "queueing: compare it only within a scenario.",
            f"*Windows*: a writer stops while {params.a_window} (a) or {params.c_window} (c) of "
            "its updates are not yet observed by every peer or, against the relay, not yet "
            "acknowledged (ACKs follow the fsync), and resumes when half of them are.",
            "*Server CPU*: user + system time of the server process (all threads, "
            "/proc/<pid>/stat) over the measured window; % of one core. *µs/delivery*: that "
            "CPU over the deliveries of the window (the load generator cannot distort it).",
            "*Est. max/s at 1 core* ((a), (c)): deliveries/s over the fraction of one core the "
            "server used: what it would deliver at 100% of its core at the same cost per "
            "delivery. An estimate, but one the load generator does not cap.",
            "*Peak RSS*: `VmHWM` of the server process at the end of the run.",
            f"*Load-gen CPU %*: the busiest load-generator process over the window. **⚠** "
            f"marks a run above {SATURATED:.0f}%: the load generator was the bottleneck, the "
            "server may have had spare capacity, and its deliveries/s are a lower bound.",
            "*Converged*: after the writers stop, every update reached every peer (and, relay, "
            "was acknowledged); every client's map content (`to_py()`) and state vector + delete "
            "set are equal in each room, the counters match what was sent, and (relay) a fresh "
            "subscriber gets that same state from the relay. A run failing any of this is "
            "FAILED, not a number.",
        ]
    )


def _goals_table(goals: Sequence[dict[str, Any]]) -> str:
    rows = []
    for goal in goals:
        value = goal["measured"]
        if value is None:
            measured = "—"
        elif goal["kind"] == "abs_max":
            measured = f"{value:.1f} µs"
        else:
            measured = f"{value:.2f}x"
        if goal["loadgen_saturated"]:
            measured += " ⚠"
        normalized = goal["cpu_normalized"]
        rows.append(
            [
                goal["description"],
                measured,
                "—" if normalized is None else f"{normalized:.2f}",
                goal["target"],
                f"**{goal['status']}**",
            ]
        )
    headers = ["Goal", "Measured", "CPU-normalized", "Target", "Result"]
    return markdown_table(headers, rows, "lrrrl")


def _goals_notes(goals: Sequence[dict[str, Any]]) -> str:
    notes = [
        "Ratios are medians of this invocation (our relay over the other server, same load, "
        "same machine): *native* is our relay through its own protocol, */yjs* through its "
        "y-websocket path, against the peers speaking y-websocket (Hocuspocus: its framing). "
        "Our relay stores every update (SQLite, fsync'd group commit) before the native ACK; "
        "the peers keep documents in memory only. Measured earlier on this kind of machine "
        "under load (b) with a y-websocket load: bare forwarder 24 µs, @y/websocket-server "
        "32 µs, Hocuspocus 39 µs, pycrdt-websocket 86 µs of server CPU per delivered update."
    ]
    notes.append(
        "*CPU-normalized*: the same ratio of *est. max/s at 1 core* (deliveries/s divided by "
        "the fraction of a core the server used), which the load generator cannot cap. It "
        "assumes the cost per delivery stays the same up to a full core."
    )
    if any(goal["loadgen_saturated"] for goal in goals):
        notes.append(
            "⚠ The load generator was saturated in a run behind this ratio: when it was the "
            "other server's run, its figure is a lower bound of its capacity and the measured "
            "ratio flatters our relay; read the CPU-normalized one."
        )
    return "\n".join(f"- {note}" for note in notes)


# -- command line (one run; users run ``python -m benchmarks``) ----------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.relay``: one run of one scenario."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.relay",
        description="One run of one relay-benchmark scenario against one server, written as "
        "JSON. To run the benchmark use: python -m benchmarks --only relay",
    )
    parser.add_argument("--scenario", choices=["a", "b", "c", "d"], default="a")
    parser.add_argument("--server", choices=ALL_SERVERS, default="relay")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds (default 0.5)")
    parser.add_argument("--duration", type=float, default=1.0, help="seconds (default 1)")
    parser.add_argument("--rooms", type=int, help="rooms in (c) (default 100)")
    parser.add_argument("--clients", type=int, help="clients in (b) (default 20)")
    parser.add_argument("--updates", type=int, help="document size in (d) (default 20,000)")
    parser.add_argument(
        "--loadgen-processes",
        type=int,
        help="load-generator processes (default: one per core left after the server's); "
        "with fewer rooms than processes the rooms' clients are split over them",
    )
    parser.add_argument("--out", type=Path, required=True, help="write the run's JSON here")
    parser.add_argument("--tmpdir", type=Path, help="where the store and logs go")
    args = parser.parse_args(argv)
    base = Params.for_mode("quick")
    params = Params(
        "quick",
        warmup_s=args.warmup,
        duration_s=args.duration,
        repeat=1,
        b_clients=args.clients or base.b_clients,
        c_rooms=args.rooms or base.c_rooms,
        late_updates=args.updates or base.late_updates,
        loadgen_processes=args.loadgen_processes,
    )
    peer = SERVERS[args.server].peer
    if peer is not None:
        status = ensure_peers()[peer]
        if not status.ok:
            parser.error(f"{args.server} is not available: {status.detail}")
    scenario = next(s for s in params.scenarios() if s.key == args.scenario)
    if scenario.key == "d" and args.server != "relay":
        parser.error("scenario d runs against the relay only (python -m benchmarks.sync: all)")
    placement = Placement.plan()
    with (
        tempfile.TemporaryDirectory(prefix="crdtsync-relay-run-", dir=args.tmpdir) as tmp,
        own_affinity(placement.all_loadgen_cpus()),
    ):
        work = Path(tmp)
        if scenario.key == "d":
            cache = work / "trace.bin"
            prepare_trace(cache)
            result = run_late_once(params, placement, work, cache)
        else:
            result = run_rooms_once(scenario, args.server, params, placement=placement, work=work)
    args.out.write_text(json.dumps(asdict(result), indent=2), encoding="utf-8")
    print(_progress(result), file=sys.stderr)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
