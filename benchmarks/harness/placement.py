"""Which cores the server and the load generators run on, and pinning them there.

The server is pinned to the first available core and each load-generator (or
worker) process to one of the others, before ``exec`` (``preexec_fn``), so that every
thread a server starts (Node's worker threads, the relay's SQLite thread) inherits
its core. The mostly sleeping orchestrator keeps off the server's core meanwhile.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "Pinned",
    "Placement",
    "affinity_of_threads",
    "own_affinity",
    "pin",
    "pinning_preexec",
    "pinning_report",
]


@dataclass(frozen=True, slots=True)
class Placement:
    """Which cores the server and the load generator(s) run on."""

    server_cpus: list[int] | None
    loadgen_cpus: list[list[int]] | None
    """One core set per load-generator process (None: not pinned)."""

    @classmethod
    def plan(cls) -> Placement:
        """Server on the first available core, one load-generator process per other core."""
        try:
            cpus = sorted(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            return cls(None, None)
        if len(cpus) < 2:
            return cls(None, None)
        return cls([cpus[0]], [[cpu] for cpu in cpus[1:]])

    @property
    def loadgen_processes(self) -> int:
        """How many load-generator processes a scenario uses by default."""
        return len(self.loadgen_cpus) if self.loadgen_cpus else 1

    def cpus_of(self, index: int) -> list[int] | None:
        """The cores of load-generator process ``index`` (round-robin when there are more
        processes than cores)."""
        if not self.loadgen_cpus:
            return None
        return self.loadgen_cpus[index % len(self.loadgen_cpus)]

    def all_loadgen_cpus(self) -> list[int] | None:
        """The union of the load generators' cores."""
        if not self.loadgen_cpus:
            return None
        return sorted({cpu for cpus in self.loadgen_cpus for cpu in cpus})


class Pinned(Protocol):
    """A started process: the cores it was asked to run on and its affinity read back."""

    @property
    def cpus(self) -> Sequence[int] | None: ...

    @property
    def pinned(self) -> list[int] | None: ...


def pinning_report(
    placement: Placement, server: Pinned | None, loadgens: Sequence[Pinned]
) -> dict[str, Any]:
    """Requested and actual affinity of a run's server and load generators, and whether
    every pinning asked for held (``ok``; False when nothing was pinned)."""
    requested = placement.server_cpus is not None
    server_ok = server is None or not requested or server.pinned == placement.server_cpus
    loadgens_ok = all(lg.pinned == list(lg.cpus or []) for lg in loadgens) if requested else True
    return {
        "requested": requested,
        "server_cpus": placement.server_cpus,
        "server_affinity": None if server is None else server.pinned,
        "loadgen_cpus": [lg.cpus for lg in loadgens],
        "loadgen_affinity": [lg.pinned for lg in loadgens],
        "ok": requested and server_ok and loadgens_ok,
    }


@contextmanager
def own_affinity(cpus: Sequence[int] | None) -> Iterator[None]:
    """Keep this (mostly sleeping) orchestrator off the server's core meanwhile."""
    try:
        before = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        yield
        return
    if cpus:
        with suppress(OSError):
            os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        with suppress(OSError):
            os.sched_setaffinity(0, before)


def pin(pid: int, cpus: Sequence[int] | None) -> list[int] | None:
    """Set a process's CPU affinity; return the affinity read back (None if not pinned)."""
    if not cpus:
        return None
    try:
        os.sched_setaffinity(pid, set(cpus))
        return sorted(os.sched_getaffinity(pid))
    except (AttributeError, OSError):
        return None


def pinning_preexec(cpus: Sequence[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that pins the child to ``cpus`` before it execs (None: no pinning)."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return None
    wanted = set(cpus)

    def pin_self() -> None:
        with suppress(OSError):
            os.sched_setaffinity(0, wanted)

    return pin_self


def affinity_of_threads(pid: int) -> list[int] | None:
    """The union of the CPU affinities of every thread of ``pid`` (None if unreadable)."""
    cpus: set[int] = set()
    try:
        tasks = [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
    except (OSError, ValueError):
        return None
    for task in tasks:
        with suppress(OSError):
            cpus |= os.sched_getaffinity(task)
    return sorted(cpus) or None
