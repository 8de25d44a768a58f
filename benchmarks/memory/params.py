"""What the memory group runs per mode."""

from __future__ import annotations

from dataclasses import dataclass

from .. import Mode
from ..servers import ALL_SERVERS

__all__ = ["NATIVE_DOCS_PER_CONNECTION", "TEXT_LENGTH", "Params"]

NATIVE_DOCS_PER_CONNECTION = 250
"""Documents one native connection carries (the protocol multiplexes them)."""
TEXT_LENGTH = 100
"""Characters in each loaded document."""


@dataclass(frozen=True, slots=True)
class Params:
    """Sizes for one mode."""

    mode: Mode
    connections: int
    documents: int
    settle_s: float
    unload_wait_s: float
    repeat: int
    servers: tuple[str, ...] = ALL_SERVERS

    @classmethod
    def for_mode(cls, mode: Mode) -> Params:
        """1,000 idle connections and 1,000 documents in both modes; ``full`` waits longer
        for the memory to settle and to unload, and runs twice."""
        if mode == "quick":
            return cls(mode, 1000, 1000, settle_s=1.0, unload_wait_s=4.0, repeat=1)
        return cls(mode, 1000, 1000, settle_s=2.0, unload_wait_s=8.0, repeat=2)

    @property
    def relay_idle_timeout_s(self) -> float:
        """The relay's ``--idle-timeout`` in this benchmark (unloads before the wait ends)."""
        return max(1.0, self.unload_wait_s / 2)
