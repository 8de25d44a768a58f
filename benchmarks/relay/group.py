"""The relay group: every scenario against every server that can run, interleaved,
then the report and ``results/relay.json``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .. import PROJECT_DIR, RunOptions
from ..comparison import Comparison
from ..harness.group import publish, run_repeated
from ..harness.machine import source_digest
from ..harness.placement import Placement
from ..servers import ALL_SERVERS, SERVERS
from ..trace import prepare_trace
from .late import run_late_once
from .report import render_markdown
from .result import RunResult
from .results_json import results_json
from .rooms import run_rooms_once
from .scenarios import Params, Scenario
from .summary import summarize

__all__ = ["progress", "run", "run_one"]


def run(options: RunOptions) -> bool:
    """Run the relay group, print the report, write the results; True if no run FAILED."""
    comparison = Comparison.begin("relay", options, ALL_SERVERS)
    params = replace(Params.for_mode(options.mode), servers=comparison.servers)
    placement = comparison.placement
    digest_at_start = source_digest(PROJECT_DIR / "relay")
    with comparison.workdir() as work:
        trace_cache = work / "trace.bin"
        prepare_trace(trace_cache)

        def one(item: tuple[Scenario, str], repetition: int) -> RunResult:
            scenario, server = item
            run_dir = work / f"run-{scenario.key}-{server}-{repetition}"
            run_dir.mkdir()
            return run_one(
                scenario,
                server,
                params,
                placement=placement,
                work=run_dir,
                trace_cache=trace_cache,
                repetition=repetition,
            )

        runs = run_repeated(
            _plan(params),
            params.repeat,
            one,
            lambda i: f"{i[0].title}, {SERVERS[i[1]].label}",
            progress,
        )
        store_dir = work.parent
    summaries = summarize(params, runs)
    data = results_json(
        params,
        placement,
        summaries=summaries,
        runs=runs,
        started=comparison.started,
        store_dir=store_dir,
    )
    data["parameters"]["relay_source_sha256_at_start"] = digest_at_start
    data["parameters"]["unavailable_servers"] = comparison.unavailable
    markdown = render_markdown(params, summaries, data["machine"], data["parameters"])
    publish(options.results_dir, data, markdown)
    return all(run.ok for run in runs)


def _plan(params: Params) -> list[tuple[Scenario, str]]:
    """Every scenario against every server; d against our relay only (if it runs)."""
    plan: list[tuple[Scenario, str]] = []
    for scenario in params.scenarios():
        if scenario.key != "d":
            plan.extend((scenario, server) for server in params.servers)
        elif "relay" in params.servers:
            plan.append((scenario, "relay"))
    return plan


def run_one(
    scenario: Scenario,
    server: str,
    params: Params,
    *,
    placement: Placement,
    work: Path,
    trace_cache: Path,
    repetition: int = 0,
) -> RunResult:
    """One run of ``scenario`` against ``server`` in the directory ``work``."""
    if scenario.key == "d":
        return run_late_once(params, placement, work, trace_cache, repetition)
    return run_rooms_once(
        scenario, server, params, placement=placement, work=work, repetition=repetition
    )


def progress(result: RunResult) -> str:
    """The end of a run's progress line."""
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
