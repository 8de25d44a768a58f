"""Numbers over runs: medians that skip missing values, ranges, ratios, percentiles."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

__all__ = ["load_summary", "median", "percentiles", "ratio", "span"]


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values present (None if there are none)."""
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def span(values: Iterable[float | None]) -> tuple[float, float] | None:
    """(min, max) of the values present (None if there are none)."""
    present = [value for value in values if value is not None]
    return (min(present), max(present)) if present else None


def ratio(mine: float | None, theirs: float | None) -> float | None:
    """``mine / theirs``, None when either is missing or ``theirs`` is zero."""
    return mine / theirs if mine is not None and theirs else None


def percentiles(values: Sequence[int]) -> dict[str, float] | None:
    """p50/p95/p99/max/mean in ms (nearest rank) of latencies in ns."""
    if not values:
        return None
    ordered = sorted(values)
    count = len(ordered)

    def rank(q: float) -> float:
        return ordered[min(count - 1, max(0, math.ceil(q * count) - 1))] / 1e6

    return {
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "max": ordered[-1] / 1e6,
        "mean": sum(ordered) / count / 1e6,
    }


def load_summary(loads: Iterable[float | None]) -> dict[str, float] | None:
    """Median and max of the load averages sampled before each run (None if none)."""
    present = [load for load in loads if load is not None]
    if not present:
        return None
    return {"median": statistics.median(present), "max": max(present)}
