"""What the local group runs: sizes per mode, the configurations, the goals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .. import Mode

__all__ = [
    "DOC_ID",
    "GOALS",
    "STORE_KINDS",
    "Config",
    "DurabilityMode",
    "Goal",
    "Params",
    "StoreKind",
    "plan",
]

StoreKind = Literal["bare", "normal", "full", "memory"]
STORE_KINDS: tuple[StoreKind, ...] = ("bare", "normal", "full", "memory")
DurabilityMode = Literal["normal", "full", "memory"]

DOC_ID = "trace"
GROUP_SIZE = 100
QUICK_EDITS = 60_000
QUICK_FULL_ONE_EDITS = 3_000
FULL_FULL_ONE_EDITS = 20_000


@dataclass(frozen=True, slots=True)
class Params:
    """Sizes and repetitions for one mode."""

    mode: Mode
    trace_edits: int
    """Edits in the whole trace."""
    edits: int
    """Edits replayed by every configuration except one-edit transactions in "full"."""
    full_one_edits: int
    """Edits replayed with one edit per transaction in "full" (an fsync per edit)."""
    group_size: int
    repeat: int

    @classmethod
    def for_mode(cls, mode: Mode, trace_edits: int) -> Params:
        """``quick``: a 60,000-edit prefix, one run each; ``full``: the whole trace, three."""
        if mode == "quick":
            return cls(
                mode,
                trace_edits,
                min(QUICK_EDITS, trace_edits),
                min(QUICK_FULL_ONE_EDITS, trace_edits),
                GROUP_SIZE,
                repeat=1,
            )
        return cls(
            mode,
            trace_edits,
            trace_edits,
            min(FULL_FULL_ONE_EDITS, trace_edits),
            GROUP_SIZE,
            repeat=3,
        )


@dataclass(frozen=True, slots=True)
class Config:
    """One configuration: where the document lives, transaction size, trace prefix."""

    store: StoreKind
    per_transaction: int
    edits: int

    @property
    def name(self) -> str:
        """A stable identifier such as ``normal/1@259778``."""
        return f"{self.store}/{self.per_transaction}@{self.edits}"

    @property
    def label(self) -> str:
        """How the table names the configuration."""
        return "pycrdt (bare)" if self.store == "bare" else f'Replica "{self.store}"'

    @property
    def durability(self) -> DurabilityMode:
        """The ``Replica`` durability of a crdtsync configuration."""
        if self.store == "bare":
            raise ValueError("bare pycrdt has no durability mode")
        return self.store

    @property
    def file_backed(self) -> bool:
        """True for the SQLite durability modes."""
        return self.store in ("normal", "full")

    def baseline(self) -> Config:
        """Bare pycrdt with the same transaction size on the same edits."""
        return Config("bare", self.per_transaction, self.edits)


@dataclass(frozen=True, slots=True)
class Goal:
    """A target ratio against bare pycrdt; reported as met or not met, never asserted."""

    description: str
    store: StoreKind
    per_transaction: int
    max_ratio: float


GOALS = (
    Goal('one-edit transactions in "normal" within 2.0x of bare pycrdt', "normal", 1, 2.0),
    Goal(
        'one-edit transactions in "normal" within 1.5x of bare pycrdt (issue 17)', "normal", 1, 1.5
    ),
    Goal('100-edit transactions in "normal" within 1.5x of bare pycrdt', "normal", 100, 1.5),
)


def plan(params: Params) -> list[Config]:
    """Every configuration of one repetition, each baseline next to what it is compared with."""
    n, prefix, group = params.edits, params.full_one_edits, params.group_size
    configs = [
        Config("bare", 1, n),
        Config("normal", 1, n),
        Config("memory", 1, n),
        Config("bare", group, n),
        Config("normal", group, n),
        Config("memory", group, n),
        Config("full", group, n),
        Config("bare", 1, prefix),
        Config("full", 1, prefix),
    ]
    return list(dict.fromkeys(configs))  # drop duplicates when prefix == n
