"""What the relay group runs: the load shapes (scenarios) and their sizes per mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .. import Mode
from ..servers import ALL_SERVERS

__all__ = ["Params", "Scenario"]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One load shape."""

    key: str
    title: str
    rooms: int
    clients_per_room: int
    pacing: Literal["max", "rate"] = "max"
    rate: float = 0.0
    window: int = 100

    @property
    def about(self) -> str:
        """One line saying what the scenario does."""
        if self.key == "d":
            return self.title
        shape = (
            f"{self.rate:g} updates/s per client"
            if self.pacing == "rate"
            else f"as fast as possible, window {self.window} per writer"
        )
        return f"{self.title}: {self.rooms} room(s) x {self.clients_per_room} clients, {shape}"


@dataclass(frozen=True, slots=True)
class Params:
    """Durations, sizes and repetitions for one mode."""

    mode: Mode
    warmup_s: float
    duration_s: float
    repeat: int
    drain_timeout_s: float = 60.0
    a_window: int = 100
    b_clients: int = 20
    b_rate: float = 20.0
    c_rooms: int = 100
    c_window: int = 10
    late_updates: int = 20_000
    late_window: int = 100
    servers: tuple[str, ...] = ALL_SERVERS
    """The servers to run (those whose peers are installed)."""
    loadgen_processes: int | None = None
    """Load-generator processes per run (None: one per core left to them)."""

    @classmethod
    def for_mode(cls, mode: Mode) -> Params:
        """``quick``: 1 s warm-up, 3 s measured, one run; ``full``: 2 s + 8 s, three runs."""
        if mode == "quick":
            return cls(mode, warmup_s=1.0, duration_s=3.0, repeat=1)
        return cls(mode, warmup_s=2.0, duration_s=8.0, repeat=3)

    def scenarios(self) -> list[Scenario]:
        """The four scenarios with these sizes."""
        return [
            Scenario("a", "(a) one room, 2 writers", 1, 2, "max", window=self.a_window),
            Scenario("b", "(b) one room, paced", 1, self.b_clients, "rate", rate=self.b_rate),
            Scenario("c", "(c) many rooms", self.c_rooms, 2, "max", window=self.c_window),
            Scenario(
                "d",
                f"(d) late joiner on a {self.late_updates:,}-update document",
                1,
                1,
                window=self.late_window,
            ),
        ]

    def scenario(self, key: str) -> Scenario:
        """The scenario ``key`` with these sizes."""
        return next(s for s in self.scenarios() if s.key == key)
