"""``results/relay.md``: the context of the run, one table per scenario, the goals."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from ..comparison import not_run_lines
from ..harness.goals import GoalRow, goals_table
from ..harness.outcome import Figure
from ..harness.render import (
    EN_DASH,
    fmt_int,
    machine_line,
    markdown_table,
    median_text,
    status_cell,
)
from ..harness.stats import ratio
from ..servers import SERVERS
from . import notes
from .goals import goal_results
from .scenarios import Params, Scenario
from .summary import Summary, ack_latency, capacity, join_figure, late_figure, latency

__all__ = ["render_markdown"]

BUSY_LOAD = 4.0
"""Load average above which the report warns (this benchmark itself accounts for 2-3:
server, load generator, and the relay's SQLite thread waiting in fsync)."""


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
            sections.extend([_late_table(mine), notes.late_notes(params)])
        else:
            sections.append(_rooms_table(mine, scenario) + _ack_line(mine))
    sections.extend(["## Notes", notes.rooms_notes(params)])
    goals = goal_results(summaries)
    sections.extend(["## Goals (durable ACKs on)", _goals_table(goals), notes.goals_notes(goals)])
    return "\n\n".join(sections) + "\n"


def _context(params: Params, machine: dict[str, Any], parameters: dict[str, Any]) -> str:
    runs = "1 run" if params.repeat == 1 else f"{params.repeat} runs"
    figures = "one run" if params.repeat == 1 else f"median [min{EN_DASH}max] over the runs"
    commit = machine["git_commit"] or "none (no commit yet)"
    filesystem = parameters["store_filesystem"] or "unknown filesystem"
    lines = [
        f"- Each scenario and server: {runs} of {params.warmup_s:g} s warm-up + "
        f"{params.duration_s:g} s measured, each with fresh server and load-generator "
        f"processes; figures: {figures}.",
        machine_line(
            machine, ("websockets", "websockets"), ("msgpack", "msgpack"), ("crdtsync", "crdtsync")
        ),
        f"- Pinning: {_pinning(parameters)}.",
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
    return "\n".join(lines + _machine_state_lines(parameters))


def _pinning(parameters: dict[str, Any]) -> str:
    placement = parameters["placement"]
    if placement["server_cpus"] is None:
        return "not pinned (fewer than 2 CPUs available or no sched_setaffinity)"
    pinning = (
        f"server on CPU {placement['server_cpus']}, load generator(s) on "
        f"{placement['loadgen_cpus']}"
    )
    failed = parameters.get("pinning_failed_runs") or []
    if failed:
        return pinning + f" (**pinning failed in {len(failed)} run(s)**: see `pinning` in the JSON)"
    return pinning + " (checked in every run)"


def _machine_state_lines(parameters: dict[str, Any]) -> list[str]:
    """What else used the machine: other processes, the hypervisor, the load average."""
    lines = []
    for key, line, limit, warning in (
        (
            "max_other_cpu_pct",
            "- Other processes: at most {:.0f}% of a core busy outside the server and the "
            "load generator in a measured window (/proc/stat).",
            15,
            " **Warning: something else competed for the CPUs.**",
        ),
        (
            "max_steal_pct",
            "- Host: at most {:.1f}% of a CPU stolen by the hypervisor in a measured "
            "window (/proc/stat); per-CPU busy/idle/iowait/steal of every window are in the JSON.",
            5,
            " **Warning: the host took CPU time from this machine.**",
        ),
    ):
        value = parameters.get(key)
        if value is not None:
            lines.append(line.format(value) + (warning if value > limit else ""))
    load = parameters.get("load_average_before_runs")
    if load is not None:
        line = (
            f"- Load average (1 min) before each run: median {load['median']:.2f}, "
            f"max {load['max']:.2f} (the previous run's processes count in it)."
        )
        if load["median"] > BUSY_LOAD:  # fsync waits (D state) count in it too
            line += " **Warning: the machine was busy; the figures are noisy.**"
        lines.append(line)
    return lines


def _server_lines(parameters: dict[str, Any]) -> list[str]:
    """Which servers ran, what they speak and store, their versions; which could not run."""
    versions = parameters.get("peer_versions") or {}
    lines = []
    for key, info in (parameters.get("servers") or {}).items():
        if not isinstance(info, dict):
            continue
        pinned = _peer_versions(key, versions)
        lines.append(
            f"- Server *{info['label']}*: protocol {info['protocol']}; stores: "
            f"{info['stores']}{'' if pinned is None else f'; {pinned}'}."
        )
    return lines + not_run_lines(parameters.get("unavailable_servers") or {})


def _peer_versions(key: str, versions: dict[str, dict[str, str]]) -> str | None:
    """The pinned versions behind a peer server (None for ours and the bare forwarder)."""
    if key == "pycrdt-websocket":
        python = versions.get("pycrdt-websocket", {})
        return (
            f"pycrdt-websocket {python.get('pycrdt-websocket', '?')} on websockets "
            f"{python.get('websockets', '?')}, pycrdt {python.get('pycrdt', '?')}"
        )
    package = {"y-websocket": "@y/websocket-server", "hocuspocus": "@hocuspocus/server"}.get(key)
    if package is None:
        return None
    node = versions.get("node", {})
    return (
        f"{package} {node.get(package, '?')}, yjs {node.get('yjs', '?')}, "
        f"Node {node.get('node', '?')}"
    )


def _cell(summary: Summary, figure: Figure, digits: int = 1, spread: bool = False) -> str:
    return median_text(summary.values(figure), digits, spread)


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
    bare_rate = None if bare is None else bare.median("deliveries_per_s")
    rows = []
    for s in summaries:
        vs_bare = ratio(s.median("deliveries_per_s"), bare_rate) if s.server != "bare" else None
        rows.append(
            [
                SERVERS[s.server].label,
                _cell(s, "deliveries_per_s", 0, spread=True),
                "—" if vs_bare is None else f"{vs_bare:.2f}",
                _cell(s, latency("p50"), 2),
                _cell(s, latency("p95"), 2),
                _cell(s, latency("p99"), 2, spread=True),
                _cell(s, "server_cpu_pct", 0),
                _cell(s, "us_per_delivery", 1, spread=scenario.key == "b"),
                _cell(s, capacity, 0) if scenario.pacing == "max" else "—",
                _cell(s, "server_peak_rss_mb", 1),
                _loadgen_cell(s),
                "yes" if s.ok and all(run.converged for run in s.runs) else "—",
                status_cell(s.ok, s.failure),
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
    p50, p99 = relay.median(ack_latency("p50")), relay.median(ack_latency("p99"))
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
                    _cell(s, join_figure(label, "total_ms"), 1, spread=True),
                    _cell(s, join_figure(label, "sync_ms"), 1),
                    _cell(s, join_figure(label, "bytes_received"), 0),
                    _cell(s, late_figure("doc_update_bytes"), 0),
                    _cell(s, late_figure(f"{label}_server_cpu_ms"), 0),
                    _cell(s, late_figure(f"{label}_peak_rss_mb"), 1),
                    "yes" if s.ok else "—",
                    status_cell(s.ok, s.failure),
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
        f"{fmt_int(int(v))} updates acknowledged in "
        f"{_cell(s, late_figure('build_s'), 2, spread=True)} s "
        f"({_cell(s, late_figure('build_updates_per_s'), 0)} updates/s, relay CPU "
        f"{_cell(s, late_figure('build_server_cpu_s'), 2)} s)"
        for s in summaries
        if (v := s.median(late_figure("updates"))) is not None
    ]
    return table + ("\n\n- Building the document: " + build[0] + "." if build else "")


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
        extra = ["—" if normalized is None else f"{normalized:.2f}"]
        rows.append(GoalRow(goal["description"], measured, goal["target"], goal["status"], extra))
    return goals_table(rows, extra=["CPU-normalized"])
