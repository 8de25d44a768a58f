"""What the sync group runs per mode, and its goals."""

from __future__ import annotations

from dataclasses import dataclass

from .. import Mode
from ..servers import CRDT_SERVERS

__all__ = ["GOALS", "STEP_TIMEOUT_S", "Goal", "Params"]

STEP_TIMEOUT_S = 300.0
"""How long one catch-up or join may take (the build: ten times that)."""


@dataclass(frozen=True, slots=True)
class Params:
    """Sizes and repetitions for one mode."""

    mode: Mode
    edits: int
    """Edits of the trace replayed through the server (0: all of them)."""
    lags: tuple[int, ...]
    joins: int
    """Late joiners, one after the other (the figures are their median)."""
    repeat: int
    window: int = 100
    servers: tuple[str, ...] = CRDT_SERVERS

    @classmethod
    def for_mode(cls, mode: Mode) -> Params:
        """``quick``: 20,000 edits, lags 1,000 and 10,000; ``full``: the whole trace
        (259,778 edits), lags up to 100,000, three joiners."""
        if mode == "quick":
            return cls(mode, edits=20_000, lags=(1_000, 10_000), joins=1, repeat=1)
        return cls(mode, edits=0, lags=(1_000, 10_000, 100_000), joins=3, repeat=1)


@dataclass(frozen=True, slots=True)
class Goal:
    """A target from the issue (reported, never asserted)."""

    key: str
    description: str
    target: str


GOALS = (
    Goal(
        "catchup_bytes", "catch-up bytes received / minimal diff (every lag, our relay)", "≤ 1.2x"
    ),
    Goal("late_join", "late-joiner time to synced, our relay / pycrdt-websocket", "≤ 1.0x"),
)
