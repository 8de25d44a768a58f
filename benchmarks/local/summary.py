"""All runs of one local configuration, the goals judged on them, and the group's JSON."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..harness import stats
from ..harness.goals import goal_status
from ..harness.group import envelope
from ..harness.machine import filesystem_type
from ..harness.outcome import RunSet
from ..harness.procfs import peak_rss_mb
from ..trace import DEFAULT_TRACE
from .configs import DOC_ID, GOALS, Config, Params
from .worker import RunResult

__all__ = ["GROUP", "Summary", "by_config", "goal_results", "results_json"]

GROUP = "local"


@dataclass(slots=True)
class Summary(RunSet):
    """All runs of one configuration."""

    config: Config
    runs: list[RunResult] = field(default_factory=list)

    def store_bytes(self) -> float | None:
        """Median size of db + wal after close."""
        sizes = [r.store_bytes["db"] + r.store_bytes["wal"] for r in self.runs if r.store_bytes]
        return statistics.median(sizes) if self.ok and sizes else None

    def ratio(self, baseline: Summary | None) -> float | None:
        """Median seconds over the baseline's median seconds (same shape, same run)."""
        theirs = None if baseline is None else baseline.median("seconds")
        return stats.ratio(self.median("seconds"), theirs)


def by_config(summaries: Sequence[Summary]) -> dict[Config, Summary]:
    """The summaries by their configuration."""
    return {summary.config: summary for summary in summaries}


def goal_results(params: Params, summaries: Sequence[Summary]) -> list[dict[str, Any]]:
    """Each goal with its measured ratio and ``met`` / ``not met`` / ``unknown``."""
    summary_of = by_config(summaries)
    results = []
    for goal in GOALS:
        config = Config(goal.store, goal.per_transaction, params.edits)
        summary = summary_of.get(config)
        measured = None if summary is None else summary.ratio(summary_of.get(config.baseline()))
        met = measured is not None and measured <= goal.max_ratio
        results.append(
            {
                **asdict(goal),
                "config": config.name,
                "ratio": measured,
                "status": goal_status(measured, met),
            }
        )
    return results


def results_json(
    params: Params,
    summaries: Sequence[Summary],
    runs: Sequence[RunResult],
    started: str,
    store_dir: Path,
) -> dict[str, Any]:
    """The whole JSON of the group: parameters, goals, a summary per configuration, runs."""
    summary_of = by_config(summaries)
    return {
        **envelope(GROUP, params.mode, started),
        "parameters": {
            **asdict(params),
            "trace": DEFAULT_TRACE.name,
            "doc_id": DOC_ID,
            "store_directory": str(store_dir),
            "store_filesystem": filesystem_type(store_dir),
            "orchestrator_peak_rss_mb": peak_rss_mb(),
            "timing": "time.perf_counter around the replay only; gc enabled",
            "load_average_before_runs": stats.load_summary(run.load_average for run in runs),
        },
        "goals": goal_results(params, summaries),
        "summary": [
            {
                "config": s.config.name,
                "store": s.config.store,
                "per_transaction": s.config.per_transaction,
                "edits": s.config.edits,
                "status": "ok" if s.ok else "FAILED",
                "failure": s.failure,
                "runs": len(s.runs),
                "seconds_median": s.median("seconds"),
                "seconds_min_max": s.span("seconds"),
                "cpu_seconds_median": s.median("cpu_seconds"),
                "ratio_vs_bare": s.ratio(summary_of.get(s.config.baseline())),
                "peak_rss_mb_median": s.median("peak_rss_mb"),
                "store_bytes_median": s.store_bytes(),
                "update_bytes_median": s.median("update_bytes"),
                "reopen_seconds_median": s.median("reopen_seconds"),
            }
            for s in summaries
        ],
        "runs": [asdict(run) for run in runs],
    }
