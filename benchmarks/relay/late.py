"""One run of scenario d: our relay builds a document, then late joiners subscribe
with the room in memory (warm) and after a relay restart (cold: loaded from disk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..comparison import RUN_ERRORS
from ..harness.machine import load_average
from ..harness.placement import Placement, pinning_report
from ..harness.processes import WorkerProcess
from ..harness.procfs import process_cpu_ns_threads
from ..servers import ServerProcess
from .result import RunResult
from .rooms import READY_TIMEOUT_S
from .scenarios import Params

__all__ = ["run_late_once"]


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
    loadgen: WorkerProcess | None = None
    build_timeout = params.drain_timeout_s + params.late_updates / 200
    try:
        server = ServerProcess("relay", work, placement.server_cpus)
        servers.append(server)
        spec["url"] = server.start()
        loadgen = WorkerProcess("benchmarks.loadgen", spec, work, "loadgen-0", placement.cpus_of(0))
        loadgen.start()
        loadgen.expect("ready", timeout=READY_TIMEOUT_S)
        result.pinning = pinning_report(placement, server, [loadgen])
        before = server.cpu_s()
        loadgen.send("go")
        loadgen.expect("built", timeout=build_timeout)
        after = server.cpu_s()
        late["build_server_cpu_s"] = _diff(before, after)
        late["build_peak_rss_mb"] = server.peak_rss_mb()
        late["warm_server_cpu_ms"] = _join(loadgen, server, "warm")
        late["warm_peak_rss_mb"] = server.peak_rss_mb()
        loadgen.send("disconnect")
        loadgen.expect("disconnected", timeout=30)
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
        loadgen.expect("done", timeout=60)
        _merge_late(result, loadgen.result())
        loadgen.stop()
        result.server_exit = restarted.stop()
        if result.server_exit != 0:
            result.fail(f"the restarted relay exited with status {result.server_exit}")
    except RUN_ERRORS as exc:
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
    loadgen.expect("joined", timeout=120)
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
