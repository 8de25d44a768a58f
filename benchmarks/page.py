"""``benchmarks/RESULTS.md``: every group's latest results on one page, with the plots.

:func:`write_page` reads ``<results dir>/<group>.json`` for the groups that have
results (whichever run last, in whichever mode: the page says which), draws the
plots (:mod:`benchmarks.plots`) and writes the page: one side-by-side table (a
row per server), every goal of the issues with its ratio and whether it is met,
where we lose and by how much, and links to the full reports.
``python -m benchmarks`` calls it after the groups; ``python -m benchmarks.page``
regenerates it from the JSON alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import PACKAGE_DIR, RESULTS_DIR
from .harness.render import fmt_float, fmt_int, fmt_ratio, machine_line, markdown_table
from .harness.stats import ratio
from .plots import PLOTS, write_plots
from .redis.cluster import CONFIGS
from .redis.report import goals as redis_goals
from .servers import ALL_SERVERS, SERVERS

__all__ = ["main", "page_path", "render_page", "write_page"]

GROUPS = ("relay", "sync", "memory", "redis", "local", "store", "offline", "records", "joins")

FAMILIES = {
    "cpu": (
        "Server CPU per update",
        "Per delivered update our relay decodes the message, applies the update to the "
        "room's live `pycrdt.Doc` (validation: nothing pycrdt refuses is stored or "
        "forwarded), encodes it once per kind of connection, appends it to SQLite with an "
        "fsync per group commit and, natively, sends an ACK. The bare forwarder does none of "
        "this; the peers apply the update too but store nothing (and Node's Yjs applies a "
        "small update faster than pycrdt through Python).",
    ),
    "rate": (
        "Fan-out throughput",
        "With rooms flat out the server's core is the limit, so throughput follows the CPU "
        "per update above (apply + store + ACK on one core). Where the load generator was "
        "saturated (⚠) the measured ratio is capped by it: read the CPU-normalized ratio "
        "(deliveries/s per core used).",
    ),
    "p99": (
        "Tail latency",
        "The relay's extra per-update work runs on the event loop before the fan-out; with "
        "20 clients at 20 updates/s a burst queues behind it.",
    ),
    "join": (
        "Late joiner",
        "Joining is a couple of milliseconds for every server at these sizes: connection "
        "set-up and one round trip dominate, and differences of a fraction of a millisecond "
        "are within the noise of a single run. Judge it on `--full` (the whole trace).",
    ),
    "bytes": (
        "Catch-up bytes",
        "The native SYNC carries the diff plus the relay's state vector, WELCOME adds a few "
        "bytes; y-websocket adds the server's sync step 1.",
    ),
    "connection": (
        "Memory per idle connection",
        "A connection on our relay is a `websockets` connection (the library "
        "pycrdt-websocket is measured on too) plus a session with its subscriptions, queue "
        "and presence state; Node's `ws` connections are smaller.",
    ),
    "document": (
        "Memory per loaded document",
        "A loaded document is a live `pycrdt.Doc` with its room, its storage bookkeeping and "
        "Python objects.",
    ),
    "unload": (
        "Memory given back after unloading",
        "The rooms and their documents are freed when they unload, but CPython's allocator "
        "keeps the arenas it grew (and glibc the heap top) unless they empty completely, so "
        "RSS stays above where it started; the memory is reused by the next documents.",
    ),
    "local": (
        "Local durable transactions",
        "A one-edit transaction on a replica's document is stored in SQLite (a commit, "
        "synchronous=normal) with its pending-upload bookkeeping before the call returns; "
        "bare pycrdt keeps it in memory only. With one edit per transaction that fixed cost "
        "is not shared.",
    ),
    "records": (
        "Records",
        "A record update reads the record's heads (to replace those it has seen), writes the "
        "new head and its `heads` entry and deletes the replaced ones: a read and four pycrdt "
        "map operations, and a larger update to store, against one set for the raw baseline.",
    ),
}
"""Goal families: the heading under *Where we lose* and the likely cause."""


def page_path(results_dir: Path) -> Path:
    """``benchmarks/RESULTS.md`` for the default results directory, else beside the results."""
    if results_dir.resolve() == RESULTS_DIR.resolve():
        return PACKAGE_DIR / "RESULTS.md"
    return results_dir / "RESULTS.md"


def load_results(results_dir: Path) -> dict[str, dict[str, Any]]:
    """The latest JSON of every group that has one."""
    results = {}
    for group in GROUPS:
        path = results_dir / f"{group}.json"
        if path.exists():
            results[group] = json.loads(path.read_text(encoding="utf-8"))
    return results


def write_page(results_dir: Path = RESULTS_DIR) -> Path:
    """Draw the plots and write the page; its path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    results = load_results(results_dir)
    plots = write_plots(results, results_dir)
    path = page_path(results_dir)
    path.write_text(render_page(results, results_dir, path.parent, plots), encoding="utf-8")
    return path


# -- the side-by-side table ----------------------------------------------------------------


def _relay_figure(relay: dict[str, Any] | None, scenario: str, server: str, key: str) -> Any:
    if relay is None:
        return None
    entry = next(
        (s for s in relay["summary"] if s["scenario"] == scenario and s["server"] == server),
        None,
    )
    if entry is None or entry["status"] != "ok":
        return None
    return entry.get(f"{key}_median")


def _saturated(relay: dict[str, Any] | None, scenario: str, server: str) -> bool:
    if relay is None:
        return False
    return any(
        s["loadgen_saturated"]
        for s in relay["summary"]
        if s["scenario"] == scenario and s["server"] == server
    )


def side_by_side(results: dict[str, dict[str, Any]]) -> str:
    """One row per server: the figures users ask about, from every group."""
    relay, sync, memory = results.get("relay"), results.get("sync"), results.get("memory")
    lags = [] if sync is None else list(sync["parameters"]["lags"])
    lag = 10_000 if 10_000 in lags else (lags[-1] if lags else None)
    rows = []
    for server in ALL_SERVERS:
        present = [
            relay is not None and any(s["server"] == server for s in relay["summary"]),
            sync is not None and any(r["server"] == server for r in sync["runs"]),
            memory is not None and any(r["server"] == server for r in memory["runs"]),
        ]
        if not any(present):
            continue

        def rate(scenario: str, server: str = server) -> str:
            value = _relay_figure(relay, scenario, server, "deliveries_per_s")
            text = fmt_float(value, 0)
            return text + (
                " ⚠" if value is not None and _saturated(relay, scenario, server) else ""
            )

        catchup = join = idle = per_doc = None
        if sync is not None and lag is not None:
            from .sync.report import catchup_figure, join_figure  # noqa: PLC0415

            received = catchup_figure(sync["runs"], server, lag, "bytes_received")
            minimal = catchup_figure(sync["runs"], server, lag, "minimal_diff_bytes")
            catchup = ratio(received, minimal)
            join = join_figure(sync["runs"], server, "time_ms")
        if memory is not None:
            from .memory.report import figure  # noqa: PLC0415

            idle = figure(memory["runs"], server, "kb_per_idle_connection")
            per_doc = figure(memory["runs"], server, "kb_per_document")
        rows.append(
            [
                SERVERS[server].label,
                SERVERS[server].stores,
                rate("a"),
                rate("c"),
                fmt_float(_relay_figure(relay, "b", server, "us_per_delivery"), 1),
                fmt_float(_relay_figure(relay, "b", server, "p99_ms"), 2),
                fmt_float(_relay_figure(relay, "b", server, "server_peak_rss_mb"), 1),
                fmt_ratio(catchup),
                fmt_float(join, 1),
                fmt_float(idle, 1),
                fmt_float(per_doc, 1),
            ]
        )
    headers = [
        "Server",
        "Stores",
        "(a) deliveries/s",
        "(c) deliveries/s",
        "(b) CPU µs/delivery",
        "(b) p99 ms",
        "(b) peak RSS MB",
        f"Catch-up {fmt_int(lag) if lag else '—'} edits: bytes / minimal diff",
        "Late joiner ms",
        "KB / idle connection",
        "KB / loaded document",
    ]
    return markdown_table(headers, rows, "llrrrrrrrrr")


# -- goals ---------------------------------------------------------------------------------


def _goal(group: str, key: str, goal: dict[str, Any], measured: str, value: Any) -> dict[str, Any]:
    """One row of :func:`all_goals`."""
    return {
        "group": group,
        "key": key,
        "description": goal["description"],
        "measured": measured,
        "value": value,
        "target": goal["target"] if "target" in goal else f"≤ {goal['max_ratio']:.1f}x",
        "status": goal["status"],
    }


def all_goals(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every goal of every group: group, description, measured (text), target, status."""
    goals = []
    for group in ("relay", "sync", "memory", "redis"):
        data = results.get(group)
        found = [] if data is None else data.get("goals", [])
        if group == "redis" and data is not None:
            found = redis_goals(data.get("rows", []))
        for goal in found:
            value = goal["measured"]
            if value is None:
                measured = "—"
            elif goal.get("kind") == "abs_max":
                measured = f"{value:.1f} µs"
            else:
                measured = f"{value:.2f}x"
            if goal.get("loadgen_saturated"):
                measured += " ⚠"
            if goal.get("cpu_normalized") is not None:
                measured += f" (CPU-normalized {goal['cpu_normalized']:.2f}x)"
            goals.append(_goal(group, goal["key"], goal, measured, value))
    local = results.get("local")
    for goal in [] if local is None else local["goals"]:
        goals.append(
            _goal("local", goal["config"], goal, fmt_ratio(goal.get("ratio")), goal.get("ratio"))
        )
    records = results.get("records")
    for goal in [] if records is None else records["goals"]:
        value = goal["measured"]
        if value is None:
            measured = "—"
        elif goal["key"] == "update_vs_raw_set":
            measured = fmt_ratio(value)
        else:
            measured = f"{value:.2f} ms"
        goals.append(_goal("records", goal["key"], goal, measured, value))
    return goals


def family(goal: dict[str, Any]) -> str:
    """Which :data:`FAMILIES` entry a goal belongs to."""
    key = goal["key"]
    if goal["group"] in ("records", "local"):
        return str(goal["group"])
    if goal["group"] == "memory":
        if key.startswith("unload"):
            return "unload"
        return "connection" if "idle_connection" in key else "document"
    if goal["group"] == "sync":
        return "join" if key.startswith("late_join") else "bytes"
    if "_cpu_" in key:
        return "cpu"
    if "_p99_" in key:
        return "p99"
    return "rate"


def losses(goals: Sequence[dict[str, Any]]) -> str:
    """The goals not met, by family: by how much, and the likely cause."""
    lines = []
    for name, (title, why) in FAMILIES.items():
        lost = [g for g in goals if g["status"] == "not met" and family(g) == name]
        if not lost:
            continue
        lines.append(f"- **{title}.** {why}")
        lines.extend(
            f"  - {goal['description']}: {goal['measured']} against {goal['target']}"
            for goal in lost
        )
    unknown = [g for g in goals if g["status"].startswith("unknown")]
    if unknown:
        lines.append(
            f"- Not measured (a run FAILED or the server was not run): "
            f"{', '.join(g['description'] for g in unknown)}."
        )
    return "\n".join(lines) or "- Every goal measured in these results is met."


def redis_table(rows: Sequence[dict[str, Any]]) -> str:
    """The redis group's rows in one table."""
    lines = [
        "| scenario | configuration | deliveries/s | CPU µs/delivery | of which Redis |",
        "|:--|:--|--:|--:|--:|",
    ]
    for row in rows:
        if "runs" not in row:
            continue
        label = CONFIGS[row["config"]].label if row["config"] in CONFIGS else row["config"]
        per, redis = row.get("us_per_delivery"), row.get("redis_us_per_delivery")
        lines.append(
            f"| ({row['scenario']}) | {label} | {row.get('deliveries_per_s') or 0:,.0f} | "
            f"{'n/a' if per is None else f'{per:.1f}'} | "
            f"{'n/a' if redis is None else f'{redis:.1f}'} |"
        )
    return "\n".join(lines)


# -- the page ------------------------------------------------------------------------------


def render_page(
    results: dict[str, dict[str, Any]],
    results_dir: Path,
    page_dir: Path,
    plots: list[Path] | str,
) -> str:
    """The markdown of the page."""
    link = Path(os.path.relpath(results_dir, page_dir)).as_posix()
    lines = ["# crdtsync benchmark results", ""]
    lines.append(
        "Regenerated by `make bench` (`python -m benchmarks --quick`), `make bench-full` "
        "(`--full`: the numbers to quote) or `python -m benchmarks.page` (from the JSON "
        "results alone). How everything is measured: [README.md](README.md)."
    )
    lines.append("")
    for group in GROUPS:
        data = results.get(group)
        if data is not None:
            lines.append(
                f"- `{group}`: {data['mode']} run finished {data['finished']} "
                f"([report]({link}/{group}.md), [JSON]({link}/{group}.json))"
            )
    machine = next(iter(results.values()))["machine"] if results else None
    if machine is not None:
        lines.append(machine_line(machine))
    relay = results.get("relay")
    versions = (relay or {}).get("parameters", {}).get("peer_versions")
    if versions:
        node = versions.get("node", {})
        python = versions.get("pycrdt-websocket", {})
        lines.append(
            f"- Peers (pinned, installed into `benchmarks/.peers/`): @y/websocket-server "
            f"{node.get('@y/websocket-server', '?')}, @hocuspocus/server "
            f"{node.get('@hocuspocus/server', '?')} (yjs {node.get('yjs', '?')}, Node "
            f"{node.get('node', '?')}); pycrdt-websocket {python.get('pycrdt-websocket', '?')} "
            f"(pycrdt {python.get('pycrdt', '?')}, websockets {python.get('websockets', '?')})."
        )
    if any(data["mode"] == "quick" for data in results.values()):
        lines.append(
            "- **Some groups are `--quick` runs** (one short run each, on a machine that may "
            "have been busy): a smoke test of the suite, not numbers to quote."
        )
    lines += ["", "## Side by side", "", side_by_side(results), ""]
    if "redis" in results:
        lines += [
            "Several relays on Redis (CPU per delivery counts Redis's own; the redis group's "
            f"[report]({link}/redis.md)):",
            "",
            redis_table(results["redis"].get("rows", [])),
            "",
        ]
    lines.append(
        "- (a) one room, 2 writers flat out; (b) one room, 20 clients x 20 updates/s; (c) 100 "
        "rooms x 2 clients flat out. *CPU µs/delivery*: server CPU over the updates delivered "
        "(the figure the load generator cannot distort). ⚠: the load generator was saturated "
        "(the figure is a lower bound). *Catch-up*: bytes the returning replica received over "
        "the minimal diff (pycrdt). Memory: RSS growth of the server process."
    )
    goals = all_goals(results)
    lines += ["", "## Goals", ""]
    lines.append(
        markdown_table(
            ["Group", "Goal", "Measured", "Target", "Result"],
            [
                [g["group"], g["description"], g["measured"], g["target"], f"**{g['status']}**"]
                for g in goals
            ],
            "llrrl",
        )
        if goals
        else "No results yet: run `make bench`."
    )
    lines += ["", "## Where we lose", ""]
    lines.append(
        "Each goal not met, by how much, under the likely cause (from how each server works; "
        "profile before acting on it: see README.md)."
    )
    lines += ["", losses(goals), ""]
    lines += ["## Plots", ""]
    if isinstance(plots, str):
        lines.append(f"No plots: {plots}.")
    else:
        for path in plots:
            lines.append(f"![{PLOTS.get(path.name, path.name)}]({link}/{path.name})")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.page [RESULTS_DIR]``: regenerate the page and the plots."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.page",
        description="Regenerate RESULTS.md and the plots from every group's latest JSON.",
    )
    parser.add_argument(
        "results_dir",
        nargs="?",
        type=Path,
        default=RESULTS_DIR,
        metavar="RESULTS_DIR",
        help="where the groups' JSON is (default: benchmarks/results; the page goes to "
        "benchmarks/RESULTS.md, for another directory into it)",
    )
    print(write_page(parser.parse_args(argv).results_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
