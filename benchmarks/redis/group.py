"""The redis group: the relay on Redis next to SQLite, one vs two relay processes, and
Hocuspocus with its Redis extension, under the relay group's loads (scenarios a, b = S2,
c), interleaved; then the report and ``results/redis.json``."""

from __future__ import annotations

import sys
from dataclasses import asdict, replace
from typing import Any

from .. import RunOptions, peers
from ..comparison import workdir
from ..harness.group import envelope, now_iso, publish, run_repeated
from ..harness.placement import Placement
from ..harness.stats import median
from ..relay.group import progress
from ..relay.result import RunResult
from ..relay.rooms import run_rooms_once
from ..relay.scenarios import Params, Scenario
from .cluster import CONFIGS, ServerCluster, redis_missing
from .report import render_markdown

__all__ = ["PLAN", "run"]

PLAN: dict[str, tuple[str, ...]] = {
    "a": ("relay-sqlite", "relay-redis"),
    "b": ("relay-sqlite", "relay-redis", "relay-redis-x2", "hocuspocus-redis-x2"),
    "c": (
        "relay-sqlite",
        "relay-redis",
        "relay-redis-x2",
        "hocuspocus-redis",
        "hocuspocus-redis-x2",
    ),
}
"""Scenario -> configurations, in report order."""


def _unavailable(options: RunOptions) -> dict[str, str]:
    """Configurations that cannot run here, and why."""
    reasons: dict[str, str] = {}
    missing = redis_missing()
    statuses = peers.ensure(install=options.install_peers)
    node = statuses.get("node")
    for key, config in CONFIGS.items():
        if config.redis and missing:
            reasons[key] = missing
        elif config.member == "hocuspocus" and (node is None or not node.ok):
            reasons[key] = f"node peers: {node.detail if node else 'not checked'}"
    for key, reason in reasons.items():
        print(f"redis group: skipping {CONFIGS[key].label}: {reason}", file=sys.stderr)
    return reasons


def run(options: RunOptions) -> bool:
    """Run the redis group, print the report, write the results; True if no run FAILED."""
    started = now_iso()
    unavailable = _unavailable(options)
    params = replace(Params.for_mode(options.mode), servers=())
    placement = Placement.plan()
    plan = [
        (params.scenario(key), config)
        for key, configs in PLAN.items()
        for config in configs
        if config not in unavailable
    ]
    splits: dict[int, tuple[float, float] | None] = {}

    with workdir("crdtsync-redis-bench-", options.tmpdir, placement) as work:

        def one(item: tuple[Scenario, str], repetition: int) -> RunResult:
            scenario, key = item
            run_dir = work / f"run-{scenario.key}-{key}-{repetition}"
            run_dir.mkdir()
            cluster = ServerCluster(CONFIGS[key], run_dir, placement.server_cpus)
            result = run_rooms_once(
                scenario,
                key,
                params,
                placement=placement,
                work=run_dir,
                repetition=repetition,
                server=cluster,
            )
            splits[id(result)] = cluster.cpu_split()
            return result

        runs = run_repeated(
            plan,
            params.repeat,
            one,
            lambda i: f"{i[0].title}, {CONFIGS[i[1]].label}",
            progress,
        )
    rows = _rows(params, runs, splits)
    data = envelope("redis", options.mode, started)
    data["parameters"] = {
        **{k: v for k, v in asdict(params).items() if k != "servers"},
        "plan": {key: list(configs) for key, configs in PLAN.items()},
        "unavailable": unavailable,
        "placement": asdict(placement),
        "configs": {key: asdict(config) for key, config in CONFIGS.items()},
    }
    data["rows"] = rows
    data["runs"] = [{**asdict(run), "cpu_split_s": splits.get(id(run))} for run in runs]
    markdown = render_markdown(params, rows, data["machine"], unavailable)
    publish(options.results_dir, data, markdown)
    return all(run.ok for run in runs)


def _rows(
    params: Params, runs: list[RunResult], splits: dict[int, tuple[float, float] | None]
) -> list[dict[str, Any]]:
    """One row per scenario and configuration: medians over its runs."""
    rows = []
    for key, configs in PLAN.items():
        for config in configs:
            mine = [r for r in runs if r.scenario == key and r.server == config and r.ok]
            if not mine:
                failed = [r.failure for r in runs if r.scenario == key and r.server == config]
                if failed:
                    rows.append({"scenario": key, "config": config, "failure": failed[0]})
                continue
            relay_cpu = [(splits.get(id(r)) or (None, None))[0] for r in mine]
            redis_cpu = [(splits.get(id(r)) or (None, None))[1] for r in mine]
            deliveries = [r.deliveries for r in mine]
            rows.append(
                {
                    "scenario": key,
                    "config": config,
                    "runs": len(mine),
                    "deliveries_per_s": median(r.deliveries_per_s for r in mine),
                    "p50_ms": median((r.latency_ms or {}).get("p50") for r in mine),
                    "p99_ms": median((r.latency_ms or {}).get("p99") for r in mine),
                    "ack_p99_ms": median((r.ack_latency_ms or {}).get("p99") for r in mine),
                    "server_cpu_pct": median(
                        (c / params.duration_s * 100) if c is not None else None for c in relay_cpu
                    ),
                    "redis_cpu_pct": median(
                        (c / params.duration_s * 100) if c is not None else None for c in redis_cpu
                    ),
                    "us_per_delivery": median(r.us_per_delivery for r in mine),
                    "redis_us_per_delivery": median(
                        c / d * 1e6 if c is not None and d else None
                        for c, d in zip(redis_cpu, deliveries, strict=True)
                    ),
                    "loadgen_cpu_pct": median(r.loadgen_cpu_pct for r in mine),
                }
            )
    return rows
