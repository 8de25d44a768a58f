"""The memory group's orchestrator: per server, the idle-connections phase and the
documents phase, each on a fresh server process, RSS read between the worker's steps."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import RunOptions
from ..comparison import Comparison, worker_on_server
from ..harness.group import publish
from ..harness.placement import Placement
from ..harness.processes import WorkerProcess
from ..harness.render import fmt_float
from ..servers import ALL_SERVERS, SERVERS, ServerProcess
from .params import Params
from .report import goal_results, render_markdown

__all__ = ["GROUP", "progress", "run", "run_server"]

GROUP = "memory"
STEP_TIMEOUT_S = 600.0

Rss = Callable[[], float | None]
"""Reads the server's RSS (MB) after the settle time."""
Phase = Callable[[WorkerProcess, Params, Rss, dict[str, Any]], None]


def run(options: RunOptions) -> bool:
    """Run the memory group, print the report, write the results; True if no run FAILED."""
    comparison = Comparison.begin(GROUP, options, ALL_SERVERS)
    params = replace(Params.for_mode(options.mode), servers=comparison.servers)
    with comparison.workdir() as work:

        def one(server: str, run_dir: Path) -> dict[str, Any]:
            return run_server(server, params, comparison.placement, run_dir)

        runs = comparison.run_each_server(params, work, one, progress)
    parameters = {"relay_idle_timeout_s": params.relay_idle_timeout_s}
    data = comparison.results(params, parameters, goal_results(runs), runs)
    publish(options.results_dir, data, render_markdown(data))
    return all(r["status"] == "ok" for r in runs)


def run_server(
    server_kind: str, params: Params, placement: Placement, work: Path
) -> dict[str, Any]:
    """Both measurements against one server, each on a fresh server process (so memory
    the first freed and kept cannot hide what the second allocates)."""
    run: dict[str, Any] = {"server": server_kind, "status": "ok", "failure": None}
    phases: list[tuple[str, Phase]] = [("connections", _connections_phase)]
    if server_kind != "bare":
        phases.append(("documents", _documents_phase))
    for name, phase in phases:
        phase_dir = work / name
        phase_dir.mkdir()
        _run_phase(server_kind, params, placement, phase_dir, run=run, phase=phase)
        if run["status"] != "ok":
            break
    _derive(run, params)
    return run


def _connections_phase(
    worker: WorkerProcess, params: Params, rss: Rss, run: dict[str, Any]
) -> None:
    run["rss_start_mb"] = rss()
    worker.step(f"idle {params.connections}", "opened", STEP_TIMEOUT_S)
    run["rss_idle_mb"] = rss()
    worker.step("close", "closed", STEP_TIMEOUT_S)
    run["rss_idle_closed_mb"] = rss()


def _documents_phase(worker: WorkerProcess, params: Params, rss: Rss, run: dict[str, Any]) -> None:
    run["rss_documents_start_mb"] = rss()
    worker.step(f"documents {params.documents}", "loaded", STEP_TIMEOUT_S)
    run["rss_documents_mb"] = rss()
    worker.step("close", "closed", STEP_TIMEOUT_S)
    time.sleep(params.unload_wait_s)
    run["rss_unloaded_mb"] = rss()


def _run_phase(
    server_kind: str,
    params: Params,
    placement: Placement,
    work: Path,
    *,
    run: dict[str, Any],
    phase: Phase,
) -> None:
    relay_args = ["--idle-timeout", f"{params.relay_idle_timeout_s:g}"]
    server = ServerProcess(
        server_kind, work, placement.server_cpus, relay_args if SERVERS[server_kind].ours else ()
    )

    def rss() -> float | None:
        time.sleep(params.settle_s)
        return server.rss_mb()

    with worker_on_server(
        run, server, "benchmarks.memory", {}, work=work, cpus=placement.cpus_of(0)
    ) as worker:
        phase(worker, params, rss, run)
        part = worker.finish()
        peak = server.peak_rss_mb()
        if peak is not None:
            run["peak_rss_mb"] = max(peak, run.get("peak_rss_mb") or 0.0)
        if part["status"] != "ok":
            run["status"], run["failure"] = "FAILED", part["failure"]


def _derive(run: dict[str, Any], params: Params) -> None:
    """Per-connection and per-document figures (KB) from the RSS samples (MB)."""

    def diff(a: str, b: str) -> float | None:
        x, y = run.get(a), run.get(b)
        return None if x is None or y is None else y - x

    idle = diff("rss_start_mb", "rss_idle_mb")
    run["kb_per_idle_connection"] = None if idle is None else idle * 1000 / params.connections
    docs = diff("rss_documents_start_mb", "rss_documents_mb")
    run["kb_per_document"] = None if docs is None else docs * 1000 / params.documents
    per_conn = run["kb_per_idle_connection"]
    own_connection = SERVERS[run["server"]].protocol != "native"
    if run["kb_per_document"] is not None and per_conn is not None:
        run["kb_per_document_net"] = run["kb_per_document"] - (per_conn if own_connection else 0)
    given_back = diff("rss_documents_mb", "rss_unloaded_mb")
    run["unload_returned_fraction"] = None if given_back is None or not docs else -given_back / docs
    closed, opened = run.get("rss_idle_closed_mb"), run.get("rss_start_mb")
    run["closed_vs_start"] = None if closed is None or not opened else closed / opened
    start, end = run.get("rss_documents_start_mb"), run.get("rss_unloaded_mb")
    run["unloaded_vs_start"] = None if start is None or end is None or not start else end / start


def progress(run: dict[str, Any]) -> str:
    """The end of a run's progress line."""
    if run["status"] != "ok":
        return f"FAILED: {run['failure']}"
    return (
        f"{fmt_float(run.get('kb_per_idle_connection'), 1)} KB/connection, "
        f"{fmt_float(run.get('kb_per_document'), 1)} KB/document, unloaded: "
        f"{fmt_float(run.get('unloaded_vs_start'), 2)}x of the start"
    )
