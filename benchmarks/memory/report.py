"""``results/memory.md`` and the memory goals: one table of RSS figures per server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..comparison import not_run_lines
from ..harness.goals import GoalRow, goal_status, goals_table
from ..harness.render import fmt_float, fmt_ratio, markdown_table, status_cell
from ..harness.stats import median, ratio
from ..servers import SERVERS
from .params import NATIVE_DOCS_PER_CONNECTION, TEXT_LENGTH

__all__ = ["figure", "goal_results", "render_markdown"]


def figure(runs: Sequence[dict[str, Any]], server: str, key: str) -> float | None:
    """Median of one figure over the server's runs that passed."""
    return median(r.get(key) for r in runs if r["server"] == server and r["status"] == "ok")


def goal_results(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Memory goals for our relay through each protocol."""
    goals = []
    for ours, name in (("relay", "native"), ("relay-yjs", "/yjs")):
        for key, what in (
            ("kb_per_idle_connection", "per idle connection"),
            ("kb_per_document", "per loaded document"),
        ):
            mine = figure(runs, ours, key)
            for theirs, limit in (("pycrdt-websocket", 1.0), ("y-websocket", 2.0)):
                value = ratio(mine, figure(runs, theirs, key))
                strict = theirs == "pycrdt-websocket"
                met = value is not None and (value < limit if strict else value <= limit)
                goals.append(
                    {
                        "key": f"{key}_{name}_{theirs}",
                        "description": f"memory {what}, {name} / {SERVERS[theirs].label}",
                        "target": f"< {limit:.2f}x" if strict else f"≤ {limit:.2f}x",
                        "measured": value,
                        "status": goal_status(value, met),
                    }
                )
        back = figure(runs, ours, "unloaded_vs_start")
        goals.append(
            {
                "key": f"unload_{name}",
                "description": f"RSS after the documents unload / before they loaded, {name}",
                "target": "≤ 1.10x",
                "measured": back,
                "status": goal_status(back, back is not None and back <= 1.10),
            }
        )
    return goals


def render_markdown(data: dict[str, Any]) -> str:
    """The report: one table, the goals."""
    params = data["parameters"]
    goals = [
        GoalRow(goal["description"], fmt_ratio(goal["measured"]), goal["target"], goal["status"])
        for goal in data["goals"]
    ]
    sections = [
        f"# Memory benchmark ({data['mode']})",
        _table(data["runs"], params["servers"]),
        "\n".join(_notes(params)),
        "## Goals",
        goals_table(goals),
    ]
    return "\n\n".join(sections) + "\n"


def _table(runs: Sequence[dict[str, Any]], servers: Sequence[str]) -> str:
    rows = []
    for server in servers:
        failed = [r for r in runs if r["server"] == server and r["status"] != "ok"]

        def cell(key: str, digits: int = 1, server: str = server) -> str:
            return fmt_float(figure(runs, server, key), digits)

        rows.append(
            [
                SERVERS[server].label,
                cell("rss_start_mb"),
                cell("kb_per_idle_connection"),
                cell("closed_vs_start", 2),
                cell("kb_per_document"),
                cell("kb_per_document_net"),
                cell("rss_documents_mb"),
                cell("rss_unloaded_mb"),
                cell("unloaded_vs_start", 2),
                cell("peak_rss_mb"),
                status_cell(not failed, failed[0]["failure"] if failed else None),
            ]
        )
    headers = [
        "Server",
        "RSS at start MB",
        "KB per idle connection",
        "Connections closed / at start",
        "KB per loaded document",
        "KB per document, net of its connection",
        "RSS, documents loaded MB",
        "RSS after unload MB",
        "After unload / before load",
        "Peak RSS MB",
        "Status",
    ]
    return markdown_table(headers, rows, "lrrrrrrrrrl")


def _notes(params: dict[str, Any]) -> list[str]:
    return [
        f"- {params['connections']:,} idle connections on one document; "
        f"{params['documents']:,} documents of {TEXT_LENGTH} characters, each written by its "
        "client. Native: the documents share connections "
        f"({NATIVE_DOCS_PER_CONNECTION} per connection, the protocol multiplexes); the "
        "y-websocket protocols: one connection per document, so *per loaded document* "
        "includes a connection (*net* subtracts an idle connection's cost).",
        "- Each measurement on a fresh server process: connections first, documents on "
        "another (memory freed by the first and kept by the allocator would hide the second). "
        f"RSS is `VmRSS` of the server process after {params['settle_s']:g} s of quiet. "
        f"*After unload*: every connection closed, then {params['unload_wait_s']:g} s (our "
        f"relay's `--idle-timeout` is {params['relay_idle_timeout_s']:g} s here); compared "
        "with the RSS just before the documents loaded. @y/websocket-server without "
        "persistence never drops a document; Hocuspocus and pycrdt-websocket drop a "
        "document when its last connection leaves.",
        "- A sample of the documents is read back from each server by a fresh client "
        "before they unload (a run where one differs is FAILED).",
        *not_run_lines(params.get("unavailable_servers", {})),
    ]
