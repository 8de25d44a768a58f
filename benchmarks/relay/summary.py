"""All runs of one scenario against one server, and the figures read from a run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..harness.outcome import Figure, RunSet
from ..servers import ALL_SERVERS
from .result import RunResult
from .scenarios import Params, Scenario

__all__ = [
    "Summary",
    "ack_latency",
    "capacity",
    "find",
    "goal_figure",
    "join_figure",
    "late_figure",
    "latency",
    "summarize",
]


@dataclass(slots=True)
class Summary(RunSet):
    """All runs of one scenario against one server."""

    scenario: Scenario
    server: str
    runs: list[RunResult] = field(default_factory=list)

    @property
    def saturated(self) -> bool:
        """True if the load generator was saturated in any run (see :data:`~.result.SATURATED`)."""
        return any(run.loadgen_saturated for run in self.runs)


def capacity(run: RunResult) -> float | None:
    """Deliveries/s the server would reach at 100% of one core at its measured CPU cost
    (deliveries/s over the fraction of a core it used): an estimate not bounded by the
    load generator."""
    if run.deliveries_per_s is None or not run.server_cpu_pct:
        return None
    return run.deliveries_per_s / (run.server_cpu_pct / 100)


def latency(key: str) -> Callable[[RunResult], float | None]:
    """A percentile (``p50``...) of the edit-to-remote-observe latency, ms."""
    return lambda run: None if run.latency_ms is None else run.latency_ms[key]


def ack_latency(key: str) -> Callable[[RunResult], float | None]:
    """A percentile of the relay's update-to-ACK latency, ms."""
    return lambda run: None if run.ack_latency_ms is None else run.ack_latency_ms[key]


def join_figure(label: str, key: str) -> Callable[[RunResult], Any]:
    """Scenario d: a figure of the ``warm`` or ``cold`` join."""

    def get(run: RunResult) -> Any:
        joins = (run.late or {}).get("joins") or []
        return next((join[key] for join in joins if join["label"] == label), None)

    return get


def late_figure(key: str) -> Callable[[RunResult], Any]:
    """Scenario d: a figure of the build or of the server during a join."""
    return lambda run: (run.late or {}).get(key)


def goal_figure(name: str) -> Figure:
    """The figure a goal is about: a latency percentile or a run's attribute."""
    return latency(name) if name in ("p50", "p95", "p99") else name


def summarize(params: Params, runs: Sequence[RunResult]) -> list[Summary]:
    """One summary per scenario and server that ran."""
    summaries = []
    for scenario in params.scenarios():
        for server in ALL_SERVERS:
            mine = [r for r in runs if r.scenario == scenario.key and r.server == server]
            if mine:
                summaries.append(Summary(scenario, server, mine))
    return summaries


def find(summaries: Sequence[Summary], scenario: str, server: str) -> Summary | None:
    """The summary of ``scenario`` against ``server``, if it ran."""
    return next((s for s in summaries if s.scenario.key == scenario and s.server == server), None)
