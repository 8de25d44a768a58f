"""The sync group's orchestrator: one run per server (a fresh server and one worker),
the server's CPU around every catch-up and join, then the report and JSON."""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import RunOptions
from ..comparison import Comparison, worker_on_server
from ..harness.group import publish
from ..harness.machine import load_average
from ..harness.placement import Placement
from ..harness.processes import WorkerProcess
from ..harness.procfs import process_cpu_ns_threads
from ..servers import CRDT_SERVERS, ServerProcess
from ..trace import DEFAULT_TRACE, prepare_trace
from .params import STEP_TIMEOUT_S, Params
from .report import goal_results, render_markdown

__all__ = ["GROUP", "progress", "run", "run_server"]

GROUP = "sync"


def run(options: RunOptions) -> bool:
    """Run the sync group, print the report, write the results; True if no run FAILED."""
    comparison = Comparison.begin(GROUP, options, CRDT_SERVERS)
    params = replace(Params.for_mode(options.mode), servers=comparison.servers)
    with comparison.workdir() as work:
        trace_cache = work / "trace.bin"
        prepare_trace(trace_cache)

        def one(server: str, run_dir: Path) -> dict[str, Any]:
            return run_server(server, params, comparison.placement, run_dir, trace_cache)

        runs = comparison.run_each_server(params, work, one, progress)
    parameters = {"trace": DEFAULT_TRACE.name}
    data = comparison.results(params, parameters, goal_results(runs, params), runs)
    publish(options.results_dir, data, render_markdown(data))
    return all(r["status"] == "ok" for r in runs)


def run_server(
    server_kind: str, params: Params, placement: Placement, work: Path, trace_cache: Path
) -> dict[str, Any]:
    """One run against one server: build, every catch-up, the late joiners."""
    run: dict[str, Any] = {"server": server_kind, "status": "ok", "failure": None}
    server = ServerProcess(server_kind, work, placement.server_cpus)
    spec = {
        "doc_id": "bench-sync",
        "edits": params.edits,
        "lags": list(params.lags),
        "window": params.window,
        "trace_cache": str(trace_cache),
    }
    with worker_on_server(
        run, server, "benchmarks.sync", spec, work=work, cpus=placement.cpus_of(0)
    ) as worker:
        run["load_average"] = load_average()
        worker.step("build", "built", STEP_TIMEOUT_S * 10)
        run["build_peak_rss_mb"] = server.peak_rss_mb()
        cpu: dict[str, float | None] = {}
        for lag in params.lags:
            cpu[f"catchup-{lag}"] = _server_cpu_ms(worker, server, f"catchup {lag}", "caught-up")
        for number in range(params.joins):
            cpu[f"join-{number}"] = _server_cpu_ms(worker, server, f"join {number}", "joined")
        result = worker.finish()
        run["server_cpu_ms"] = cpu
        run["server_peak_rss_mb"] = server.peak_rss_mb()
        run.update(result)
        if run["status"] == "ok" and not all(
            entry["equal"] for entry in run["catchups"] + run["joins"]
        ):
            run["status"] = "FAILED"
            run["failure"] = "a replica's document differs from the writer's after syncing"
    for entry in run.get("catchups", []):
        entry["server_cpu_ms"] = run.get("server_cpu_ms", {}).get(f"catchup-{entry['lag']}")
    for entry in run.get("joins", []):
        entry["server_cpu_ms"] = run.get("server_cpu_ms", {}).get(f"join-{entry['number']}")
    return run


def _server_cpu_ms(
    worker: WorkerProcess, server: ServerProcess, command: str, answer: str
) -> float | None:
    """One step of the worker; the server's CPU (its threads' schedstat) meanwhile, ms."""
    before = process_cpu_ns_threads(server.pid)
    worker.step(command, answer, STEP_TIMEOUT_S)
    after = process_cpu_ns_threads(server.pid)
    return None if before is None or after is None else (after - before) / 1e6


def progress(run: dict[str, Any]) -> str:
    """The end of a run's progress line."""
    if run["status"] != "ok":
        return f"FAILED: {run['failure']}"
    catchups = ", ".join(f"{c['lag']}: {c['time_ms']:.0f} ms" for c in run["catchups"])
    joins = statistics.median(j["time_ms"] for j in run["joins"]) if run["joins"] else 0
    return (
        f"built {run['updates']:,} updates in {run['build_s']:.1f} s; catch-up {catchups}; "
        f"late join {joins:.0f} ms"
    )
