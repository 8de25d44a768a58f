"""``results/joins.md`` and the joins goals: memory per joiner, ``/health`` during joins."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..harness.goals import GoalRow, goal_status, goals_table
from ..harness.render import fmt_float, fmt_ratio, machine_line, markdown_table, status_cell
from ..harness.stats import median

__all__ = ["MAX_DOC_RATIO", "goal_results", "render_markdown"]

MAX_DOC_RATIO = 2.0
"""Issue 18: peak RSS over idle, per concurrent joiner, at most about 2x the document."""


def _figure(runs: Sequence[dict[str, Any]], joiners: int, key: str) -> float | None:
    return median(r.get(key) for r in runs if r["joiners"] == joiners and r["status"] == "ok")


def _health(runs: Sequence[dict[str, Any]], joiners: int, key: str) -> float | None:
    return median(
        r["health_ms"].get(key)
        for r in runs
        if r["joiners"] == joiners and r["status"] == "ok" and r.get("health_ms")
    )


def goal_results(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Joiners at once (the largest configuration): peak over idle per joiner /
    document size ≤ 2x (with one joiner the room's own load dominates: reported)."""
    goals = []
    for joiners in sorted({r["joiners"] for r in runs})[-1:]:
        value = _figure(runs, joiners, "per_joiner_doc_ratio")
        goals.append(
            {
                "key": f"per_joiner_{joiners}",
                "description": f"relay peak RSS over idle per joiner / document size, "
                f"{joiners} joiner(s) at once",
                "target": f"≤ {MAX_DOC_RATIO:.2f}x",
                "measured": value,
                "status": goal_status(value, value is not None and value <= MAX_DOC_RATIO),
            }
        )
    return goals


def render_markdown(data: dict[str, Any]) -> str:
    """The report: one table, notes, the goals."""
    runs = data["runs"]
    params = data["parameters"]
    rows = []
    for joiners in params["joiners"]:
        failed = [r for r in runs if r["joiners"] == joiners and r["status"] != "ok"]

        def cell(key: str, digits: int = 1, joiners: int = joiners) -> str:
            return fmt_float(_figure(runs, joiners, key), digits)

        rows.append(
            [
                str(joiners),
                cell("rss_idle_mb"),
                cell("rss_peak_mb"),
                cell("rss_after_mb"),
                cell("per_joiner_mb"),
                fmt_ratio(_figure(runs, joiners, "per_joiner_doc_ratio")),
                cell("per_joiner_beyond_room_mb"),
                fmt_float(_health(runs, joiners, "p50"), 1),
                fmt_float(_health(runs, joiners, "p99"), 1),
                fmt_float(_health(runs, joiners, "max"), 1),
                cell("health_failures", 0),
                cell("join_s"),
                status_cell(not failed, failed[0]["failure"] if failed else None),
            ]
        )
    headers = [
        "Joiners at once",
        "Relay RSS idle MB",
        "Peak MB",
        "After MB",
        "Peak over idle per joiner MB",
        "Per joiner / document",
        "Peak over the loaded room per joiner MB",
        "/health p50 ms",
        "p99 ms",
        "max ms",
        "/health failed",
        "Joins took s",
        "Status",
    ]
    goals = [
        GoalRow(g["description"], fmt_ratio(g["measured"]), g["target"], g["status"])
        for g in data["goals"]
    ]
    doc_mb = params["doc_bytes"] / 1e6
    notes = [
        f"- One document of {doc_mb:.1f} MB encoded (a text pasted at once: one item) in the "
        "relay's SQLite store, not loaded when the joiners arrive; real replicas "
        "(`Replica(':memory:')`) join at once from a worker process on another core; each "
        "copy is checked by digest. A fresh relay per row; figures are medians over "
        f"{params['repeat']} run(s).",
        "- *Idle*: `VmRSS` before anyone joins; *peak*: `VmHWM`; *after*: `VmRSS` once every "
        "joiner has the document (the room stays loaded). *Peak over idle per joiner* counts "
        "the room's load too (the document in pycrdt, and its stored bytes while it loads), "
        "shared by the joiners; *over the loaded room* leaves the room out (peak - after).",
        "- `/health` asked every 50 ms by the orchestrator during the joins (time to the "
        "whole answer; a probe failing or over 10 s counts as failed). New replicas get "
        "the room's stored snapshot (read in a thread, shared by all of them) in pieces; "
        "the longest pauses left are loading the room (one pycrdt call) and the "
        "orchestrator's own scheduling.",
        machine_line(data["machine"]),
    ]
    sections = [
        f"# Joins benchmark ({data['mode']})",
        markdown_table(headers, rows, "rrrrrrrrrrrrl"),
        "\n".join(notes),
        "## Goals",
        goals_table(goals),
    ]
    return "\n\n".join(sections) + "\n"
