"""``results/sync.md`` and the sync goals: catch-up and late-joiner tables from the runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from ..comparison import not_run_lines
from ..harness.goals import GoalRow, goal_status, goals_table
from ..harness.render import (
    fmt_float,
    fmt_int,
    fmt_ratio,
    machine_line,
    markdown_table,
    status_cell,
)
from ..harness.stats import median, ratio
from ..servers import SERVERS
from .params import GOALS, Goal, Params

__all__ = ["catchup_figure", "goal_results", "join_figure", "render_markdown"]


def _ok_runs(runs: Sequence[dict[str, Any]], server: str) -> list[dict[str, Any]]:
    return [r for r in runs if r["server"] == server and r["status"] == "ok"]


def catchup_figure(runs: Sequence[dict[str, Any]], server: str, lag: int, key: str) -> float | None:
    """Median of one catch-up figure over the server's runs that passed."""
    return median(c[key] for r in _ok_runs(runs, server) for c in r["catchups"] if c["lag"] == lag)


def join_figure(runs: Sequence[dict[str, Any]], server: str, key: str) -> float | None:
    """Median of one late-joiner figure over the server's runs that passed."""
    return median(j[key] for r in _ok_runs(runs, server) for j in r["joins"])


def goal_results(runs: Sequence[dict[str, Any]], params: Params) -> list[dict[str, Any]]:
    """The sync goals for our relay, through each protocol."""
    results = []
    for ours in ("relay", "relay-yjs"):
        ratios = [
            ratio(
                catchup_figure(runs, ours, lag, "bytes_received"),
                catchup_figure(runs, ours, lag, "minimal_diff_bytes"),
            )
            for lag in params.lags
        ]
        worst = max((r for r in ratios if r is not None), default=None)
        results.append(_goal(GOALS[0], ours, worst, worst is not None and worst <= 1.2))
        join = ratio(
            join_figure(runs, ours, "time_ms"), join_figure(runs, "pycrdt-websocket", "time_ms")
        )
        results.append(_goal(GOALS[1], ours, join, join is not None and join <= 1.0))
    return results


def _goal(goal: Goal, ours: str, value: float | None, met: bool) -> dict[str, Any]:
    name = "native" if ours == "relay" else "/yjs"
    return {
        **asdict(goal),
        "key": f"{goal.key}_{name}",
        "description": f"{goal.description} ({name})",
        "measured": value,
        "status": goal_status(value, met),
    }


def _status(runs: Sequence[dict[str, Any]], server: str) -> str:
    failed = [r for r in runs if r["server"] == server and r["status"] != "ok"]
    return status_cell(not failed, failed[0]["failure"] if failed else None)


def _int(value: float | None) -> str:
    return "—" if value is None else fmt_int(round(value))


def render_markdown(data: dict[str, Any]) -> str:
    """The report: catch-up table, late-joiner table, goals."""
    params = data["parameters"]
    runs = data["runs"]
    built = next((r for r in runs if r["status"] == "ok"), None)
    edits = built["edits"] if built else params["edits"]
    context = [
        f"- The automerge-paper trace, {fmt_int(edits)} edits, one update per edit, "
        f"replayed through each server (at most {params['window']} ahead of an online "
        "observer); replicas go offline at their lag and reconnect at the end.",
        machine_line(data["machine"]),
        "- Our relay stores every update (SQLite, fsync'd group commit); the peers keep "
        "documents in memory only.",
        *not_run_lines(params.get("unavailable_servers", {})),
    ]
    goals = [
        GoalRow(goal["description"], fmt_ratio(goal["measured"]), goal["target"], goal["status"])
        for goal in data["goals"]
    ]
    sections = [
        f"# Sync benchmark ({data['mode']})",
        "\n".join(context),
        "## Catch-up after being offline",
        _catchup_table(runs, list(params["servers"]), params["lags"]),
        _CATCHUP_NOTES,
        "## Late joiner",
        _join_table(runs, list(params["servers"]), built),
        _JOIN_NOTES,
        "## Goals",
        goals_table(goals),
    ]
    return "\n\n".join(sections) + "\n"


def _catchup_table(runs: Sequence[dict[str, Any]], servers: list[str], lags: list[int]) -> str:
    rows = []
    for lag in lags:
        for server in servers:

            def fig(key: str, server: str = server, lag: int = lag) -> float | None:
                return catchup_figure(runs, server, lag, key)

            received, minimal = fig("bytes_received"), fig("minimal_diff_bytes")
            rows.append(
                [
                    fmt_int(lag),
                    SERVERS[server].label,
                    fmt_float(fig("time_ms"), 1),
                    _int(received),
                    _int(fig("bytes_sent")),
                    _int(minimal),
                    fmt_ratio(ratio(received, minimal)),
                    _int(fig("missed_update_bytes")),
                    _int(fig("doc_update_bytes")),
                    fmt_float(fig("server_cpu_ms"), 1),
                    _status(runs, server),
                ]
            )
    headers = [
        "Offline for (edits)",
        "Server",
        "Time to synced ms",
        "Bytes received",
        "Bytes sent",
        "Minimal diff bytes",
        "Received / minimal",
        "Missed updates, bytes",
        "Whole document bytes",
        "Server CPU ms",
        "Status",
    ]
    return markdown_table(headers, rows, "rlrrrrrrrrl")


_CATCHUP_NOTES = "\n".join(
    [
        "- *Time to synced*: from the start of the replica's TCP connection until its "
        "text equals the writer's (state vectors and delete sets compared too).",
        "- *Bytes*: websocket message payloads until synced, each way. Native: HELLO + "
        "SUBSCRIBE out, WELCOME + SYNC in. y-websocket: sync step 1 + step 2 each way "
        "(the replica's step 2 carries its delete set even when the server lacks "
        "nothing). Hocuspocus adds the auth exchange and the document name.",
        "- *Minimal diff*: `len(writer_doc.get_update(replica_state_vector))` (pycrdt). "
        "*Missed updates*: the updates made while the replica was away, as sent (what "
        "an operation log would resend); *whole document*: `len(doc.get_update())`.",
    ]
)


def _join_table(
    runs: Sequence[dict[str, Any]], servers: list[str], built: dict[str, Any] | None
) -> str:
    rows = []
    for server in servers:
        ok = _ok_runs(runs, server)
        rows.append(
            [
                SERVERS[server].label,
                fmt_float(join_figure(runs, server, "time_ms"), 1),
                _int(join_figure(runs, server, "bytes_received")),
                _int(built["doc_update_bytes"] if built else None),
                fmt_float(join_figure(runs, server, "server_cpu_ms"), 1),
                fmt_float(median(r.get("build_updates_per_s") for r in ok), 0),
                fmt_float(median(r.get("server_peak_rss_mb") for r in ok), 1),
                _status(runs, server),
            ]
        )
    headers = [
        "Server",
        "Time to final text ms",
        "Bytes received",
        "Document bytes",
        "Server CPU ms",
        "Build: updates/s",
        "Server peak RSS MB",
        "Status",
    ]
    return markdown_table(headers, rows, "lrrrrrrl")


_JOIN_NOTES = (
    "- A new client with an empty document connects and syncs; *time* runs until its text "
    "equals the trace's final text (checked) and its state the writer's. *Build*: how fast "
    "the server took the trace one update at a time (with an observer receiving it)."
)
