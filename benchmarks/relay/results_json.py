"""``results/relay.json``: machine, parameters, goals, a summary per scenario and
server (medians and min-max of every figure) and every run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import PROJECT_DIR, peers
from ..harness.group import envelope
from ..harness.machine import filesystem_type, machine_info, package_versions, source_digest
from ..harness.outcome import Figure
from ..harness.placement import Placement
from ..harness.stats import load_summary
from ..servers import SERVERS
from ..trace import DEFAULT_TRACE
from .goals import goal_results
from .result import SATURATED, RunResult
from .scenarios import Params
from .summary import Summary, ack_latency, capacity, join_figure, late_figure, latency

__all__ = ["GROUP", "results_json", "summary_json"]

GROUP = "relay"
ROOMS_FIGURES: dict[str, Figure] = {
    "deliveries_per_s": "deliveries_per_s",
    "p50_ms": latency("p50"),
    "p95_ms": latency("p95"),
    "p99_ms": latency("p99"),
    "server_cpu_pct": "server_cpu_pct",
    "us_per_delivery": "us_per_delivery",
    "server_peak_rss_mb": "server_peak_rss_mb",
    "loadgen_cpu_pct": "loadgen_cpu_pct",
    "capacity_per_core": capacity,
    "ack_p50_ms": ack_latency("p50"),
    "ack_p99_ms": ack_latency("p99"),
}
"""The figures summarized for scenarios a, b and c (JSON name -> figure)."""
LATE_FIGURES: dict[str, Figure] = {
    "build_s": late_figure("build_s"),
    "build_updates_per_s": late_figure("build_updates_per_s"),
    "warm_join_ms": join_figure("warm", "total_ms"),
    "warm_join_bytes": join_figure("warm", "bytes_received"),
    "warm_server_cpu_ms": late_figure("warm_server_cpu_ms"),
    "cold_join_ms": join_figure("cold", "total_ms"),
    "cold_join_bytes": join_figure("cold", "bytes_received"),
    "cold_server_cpu_ms": late_figure("cold_server_cpu_ms"),
    "cold_peak_rss_mb": late_figure("cold_peak_rss_mb"),
    "doc_update_bytes": late_figure("doc_update_bytes"),
}
"""The figures summarized for scenario d."""


def summary_json(summary: Summary) -> dict[str, Any]:
    """One scenario against one server: status, and the median and min-max of each figure."""
    figures = LATE_FIGURES if summary.scenario.key == "d" else ROOMS_FIGURES
    return {
        "scenario": summary.scenario.key,
        "server": summary.server,
        "status": "ok" if summary.ok else "FAILED",
        "failure": summary.failure,
        "runs": len(summary.runs),
        "loadgen_saturated": summary.saturated,
        **{f"{name}_median": summary.median(figure) for name, figure in figures.items()},
        **{f"{name}_min_max": summary.span(figure) for name, figure in figures.items()},
    }


def results_json(
    params: Params,
    placement: Placement,
    *,
    summaries: Sequence[Summary],
    runs: Sequence[RunResult],
    started: str,
    store_dir: Path,
) -> dict[str, Any]:
    """The whole JSON of the group."""
    machine = {**machine_info(), **package_versions("websockets", "msgpack", "pycrdt")}
    return {
        **envelope(GROUP, params.mode, started, machine),
        "parameters": {
            **asdict(params),
            "scenarios": [asdict(s) for s in params.scenarios()],
            "servers": {
                key: {"label": info.label, "protocol": info.protocol, "stores": info.stores}
                for key, info in SERVERS.items()
                if key in params.servers
            },
            "peer_versions": peers.versions(),
            "relay_command": (
                "python -m relay --host 127.0.0.1 --port 0 --store sqlite:///<run dir>/relay.db "
                "--log-level WARNING (synchronous=full: an fsync per commit)"
            ),
            "store_directory": str(store_dir),
            "store_filesystem": filesystem_type(store_dir),
            "placement": asdict(placement),
            "pinning_failed_runs": [
                f"{run.scenario}/{run.server}#{run.repetition}"
                for run in runs
                if placement.server_cpus is not None and not run.pinning.get("ok")
            ],
            "loadgen_saturated_above_pct": SATURATED,
            "trace": DEFAULT_TRACE.name,
            "load_average_before_runs": load_summary(run.load_average for run in runs),
            "relay_source_sha256": source_digest(PROJECT_DIR / "relay"),
            "max_other_cpu_pct": max(
                (run.other_cpu_pct for run in runs if run.other_cpu_pct is not None),
                default=None,
            ),
            "max_steal_pct": max(
                (share["steal_pct"] for run in runs for share in (run.cpus or {}).values()),
                default=None,
            ),
        },
        "goals": goal_results(summaries),
        "summary": [summary_json(s) for s in summaries],
        "runs": [asdict(run) for run in runs],
    }
