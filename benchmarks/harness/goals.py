"""Goals: targets from the issues, reported as met or not met, never asserted."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from .render import markdown_table

__all__ = ["UNKNOWN", "GoalRow", "goal_status", "goals_table"]

UNKNOWN = "unknown (run FAILED or missing)"


def goal_status(value: float | None, met: bool) -> str:
    """``met`` / ``not met``, or :data:`UNKNOWN` when nothing was measured."""
    if value is None:
        return UNKNOWN
    return "met" if met else "not met"


class GoalRow(NamedTuple):
    """One goal in a report's table."""

    description: str
    measured: str
    target: str
    status: str
    extra: Sequence[str] = ()
    """Cells of the table's extra columns, between *Measured* and *Target*."""


def goals_table(rows: Iterable[GoalRow], extra: Sequence[str] = ()) -> str:
    """Goal, Measured, the ``extra`` columns, Target, Result (in bold)."""
    headers = ["Goal", "Measured", *extra, "Target", "Result"]
    body = [
        [row.description, row.measured, *row.extra, row.target, f"**{row.status}**"] for row in rows
    ]
    return markdown_table(headers, body, "l" + "r" * (len(extra) + 2) + "l")
