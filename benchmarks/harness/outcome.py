"""A run's outcome (ok, or FAILED with the reasons) and the summary of several runs.

A FAILED run keeps its numbers in the JSON but is never reported as a number: a
summary of runs has no figures as soon as one of them FAILED.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any

from . import stats

__all__ = ["Figure", "Outcome", "RunSet"]

Figure = str | Callable[[Any], Any]
"""A figure of a run: the name of one of its attributes, or a function of the run."""


class Outcome:
    """Mixin of a result dataclass with a ``status`` ("ok" or "FAILED") and a
    ``failure`` (the reasons) field."""

    status: str
    failure: str | None

    def fail(self, reason: str) -> None:
        """Mark the run FAILED (its numbers stay in the JSON but are not reported)."""
        self.status = "FAILED"
        self.failure = reason if self.failure is None else f"{self.failure}; {reason}"

    @property
    def ok(self) -> bool:
        """True if every check passed."""
        return self.status == "ok"


class RunSet:
    """Mixin of a summary dataclass with a ``runs`` field (:class:`Outcome` results)."""

    __slots__ = ()
    runs: list[Any]

    @property
    def ok(self) -> bool:
        """True if there were runs and none FAILED."""
        return bool(self.runs) and all(run.ok for run in self.runs)

    @property
    def failure(self) -> str | None:
        """The first failure reason, if any run FAILED."""
        return next((run.failure or "FAILED" for run in self.runs if not run.ok), None)

    def values(self, figure: Figure) -> list[float]:
        """A figure of every run that has it (none if any run FAILED)."""
        if not self.ok:
            return []
        getter = attrgetter(figure) if isinstance(figure, str) else figure
        values = [getter(run) for run in self.runs]
        return [float(v) for v in values if v is not None]

    def median(self, figure: Figure) -> float | None:
        """Median of a figure over the runs."""
        return stats.median(self.values(figure))

    def span(self, figure: Figure) -> tuple[float, float] | None:
        """(min, max) of a figure over the runs."""
        return stats.span(self.values(figure))
