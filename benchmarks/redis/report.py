"""The redis group's markdown report: one table per scenario, the goals, and what the
figures say about going past one Redis."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..harness.goals import goal_status
from ..harness.stats import ratio
from ..relay.scenarios import Params
from .cluster import CONFIGS

__all__ = ["goals", "render_markdown"]


def _row(rows: Sequence[dict[str, Any]], scenario: str, config: str) -> dict[str, Any] | None:
    return next(
        (r for r in rows if r["scenario"] == scenario and r["config"] == config and "runs" in r),
        None,
    )


def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _goal(
    rows: Sequence[dict[str, Any]],
    key: str,
    description: str,
    *,
    scenario: str,
    pair: tuple[str, str],
    limit: float,
) -> dict[str, Any]:
    """One goal in the results page's shape: CPU per delivery of ``pair[0]`` over
    ``pair[1]`` in ``scenario``, at most ``limit``."""
    ours, theirs = (_row(rows, scenario, config) for config in pair)
    value = ratio(
        None if ours is None else ours["us_per_delivery"],
        None if theirs is None else theirs["us_per_delivery"],
    )
    return {
        "key": key,
        "description": description,
        "measured": value,
        "target": f"≤ {limit:.2f}x",
        "kind": "ratio_max",
        "status": goal_status(value, value is not None and value <= limit),
    }


def goals(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's goals from the rows, in the results page's shape (``key``,
    ``description``, ``measured``, ``target``, ``status``)."""
    found = [
        _goal(
            rows,
            f"redis_{scenario}_cpu_vs_sqlite",
            f"({scenario}) CPU per delivery, relay on Redis (with Redis's own) / relay on SQLite",
            scenario=scenario,
            pair=("relay-redis", "relay-sqlite"),
            limit=1.2,
        )
        for scenario in ("a", "b", "c")
    ]
    found += [
        _goal(
            rows,
            f"redis_{scenario}_cpu_vs_hocuspocus",
            f"({scenario}) CPU per delivery, two relays on Redis / two Hocuspocus + "
            "extension-redis (each with Redis's own)",
            scenario=scenario,
            pair=("relay-redis-x2", "hocuspocus-redis-x2"),
            limit=1.0,
        )
        for scenario in ("b", "c")
    ]
    return found


def render_markdown(
    params: Params,
    rows: Sequence[dict[str, Any]],
    machine: dict[str, Any],
    unavailable: dict[str, str],
) -> str:
    """The report."""
    lines = [
        "# Several relays on Redis",
        "",
        f"Mode `{params.mode}`: {params.warmup_s:g} s warm-up, {params.duration_s:g} s measured, "
        f"{params.repeat} run(s) per row (medians). Machine: {machine.get('processor', '?')}, "
        f"{machine.get('cpu_count', '?')} CPUs. Every server process and redis-server are "
        "pinned to the server's core; the load generator has the other. *CPU per delivery* "
        "counts every "
        "server process and Redis's own CPU over the measured window.",
        "",
    ]
    for key, about in unavailable.items():
        lines.append(f"- not run: {CONFIGS[key].label}: {about}")
    for scenario in params.scenarios():
        mine = [r for r in rows if r["scenario"] == scenario.key]
        if not mine:
            continue
        lines += [
            f"## {scenario.about}",
            "",
            "| configuration | deliveries/s | p50 ms | p99 ms | servers CPU % | Redis CPU % "
            "| µs CPU / delivery | of which Redis |",
            "|:--|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for row in mine:
            label = CONFIGS[row["config"]].label
            if "runs" not in row:
                lines.append(f"| {label} | FAILED: {row.get('failure')} | | | | | | |")
                continue
            lines.append(
                f"| {label} | {_num(row['deliveries_per_s'], 0)} | {_num(row['p50_ms'])} | "
                f"{_num(row['p99_ms'])} | {_num(row['server_cpu_pct'], 0)} | "
                f"{_num(row['redis_cpu_pct'], 0)} | {_num(row['us_per_delivery'])} | "
                f"{_num(row['redis_us_per_delivery'])} |"
            )
        lines.append("")
    lines += ["## Goals", ""]
    for goal in goals(rows):
        lines.append(
            f"- {goal['description']}: {_num(goal['measured'], 2)}x against {goal['target']}: "
            f"**{goal['status']}**"
        )
    lines += ["", "## Past one Redis", "", _past_one_redis(rows), ""]
    lines += [
        "What stores what: our relay stores every update durably before its ACK (SQLite "
        "fsync'd, or Redis with AOF `appendfsync always`); Hocuspocus with its Redis "
        "extension keeps documents in each process's memory and uses Redis only for pub/sub "
        "between processes (nothing stored, no ACK).",
        "",
    ]
    return "\n".join(lines)


def _past_one_redis(rows: Sequence[dict[str, Any]]) -> str:
    """What the figures say about one Redis's capacity, and what a Cluster would change."""
    row = _row(rows, "c", "relay-redis-x2") or _row(rows, "c", "relay-redis")
    if row is None or not row.get("redis_us_per_delivery"):
        return "No Redis figures in this run."
    per = row["redis_us_per_delivery"]
    capacity = 1e6 / per
    return (
        f"In (c) Redis spent {per:.1f} µs of CPU per delivered update (one update, one "
        f"delivery there: a script that appends it and publishes it, the AOF write and "
        f"fsync, the pub/sub message). One Redis core therefore carries about "
        f"{capacity:,.0f} updates/s before it is the bottleneck, well above what the "
        "relays in front of it can take on this machine. Past that, documents are "
        "independent: every key of a document carries its hash tag and its feed is a "
        "sharded channel of the same slot, so a Redis Cluster would spread documents over "
        "shards with no cross-shard traffic per update. This version does not run on a "
        "Cluster (its append script also bumps the store-wide id counter and index, on "
        "another slot); per-document ids would remove that (see README, 'Running several "
        "relays on Redis'). Not measured on a Cluster."
    )
