"""CPU and memory of processes, read from ``/proc`` (Linux; None elsewhere).

The orchestrator reads a server's or a load generator's figures from outside, so the
process measured does nothing but its work; a worker reads its own peak memory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "CLOCK_TICKS",
    "CPU_FIELDS",
    "cpu_shares",
    "cpu_times",
    "peak_rss_mb",
    "process_cpu_ns_threads",
    "process_cpu_s",
    "process_status_mb",
    "vm_hwm_mb",
]


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 100


CLOCK_TICKS = _clock_ticks()
CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def process_cpu_s(pid: int) -> float | None:
    """utime + stime of a process (every thread, including exited ones), /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_cpu_ns_threads(pid: int) -> int | None:
    """On-CPU nanoseconds of a process's live threads (sum of /proc/<pid>/task/*/schedstat):
    finer than the 10 ms ticks of /proc/<pid>/stat, but a thread that exits takes its
    time with it, so only for short intervals without thread exits."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text(encoding="ascii").split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total or None


def cpu_times() -> dict[str, list[int]]:
    """Per-CPU tick counters from /proc/stat (``cpu0``... -> the fields of CPU_FIELDS)."""
    try:
        lines = Path("/proc/stat").read_text(encoding="ascii").splitlines()
    except OSError:
        return {}
    times = {}
    for line in lines:
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            times[name] = [int(v) for v in values[: len(CPU_FIELDS)]]
    return times


def cpu_shares(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, Any]:
    """Per CPU, the % of the interval spent busy, idle, in iowait and stolen by the host."""
    shares: dict[str, Any] = {}
    for name, end in after.items():
        start = before.get(name)
        if start is None:
            continue
        delta = dict(
            zip(CPU_FIELDS, (b - a for a, b in zip(start, end, strict=False)), strict=False)
        )
        total = sum(delta.values())
        if total <= 0:
            continue
        idle = delta.get("idle", 0)
        iowait = delta.get("iowait", 0)
        steal = delta.get("steal", 0)
        shares[name] = {
            "busy_pct": 100 * (total - idle - iowait - steal) / total,
            "idle_pct": 100 * idle / total,
            "iowait_pct": 100 * iowait / total,
            "steal_pct": 100 * steal / total,
        }
    return shares


def process_status_mb(pid: int | str, key: str = "VmHWM") -> float | None:
    """A memory line of /proc/<pid>/status (``VmHWM``: peak RSS; ``VmRSS``: RSS), in MB;
    ``pid`` may be ``"self"``."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024 / 1e6
    return None


def vm_hwm_mb() -> float | None:
    """This process's own peak RSS (``VmHWM`` in /proc/self/status, Linux), in MB."""
    return process_status_mb("self")


def peak_rss_mb() -> float | None:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in MB (None where unsupported).

    On Linux this value is inherited across fork+exec: a child reports at least
    its parent's peak at the time it was started. Keep the parent small.
    """
    try:
        import resource  # noqa: PLC0415 - Unix only
    except ImportError:
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return maxrss * scale / 1e6
