"""Child processes of the benchmarks: start, pin, talk to, stop; CPU and memory from /proc.

Servers, load generators and workers run as separate processes so that the
process measured is only what it is (the orchestrator reads its CPU and RSS
from ``/proc/<pid>``). Pinning happens before ``exec`` (``preexec_fn``), so
every thread a server starts (Node's worker threads, the relay's SQLite
thread) inherits the core.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import IO, Any, cast

from . import PROJECT_DIR

__all__ = [
    "CLOCK_TICKS",
    "LineReader",
    "WorkerProcess",
    "affinity_of_threads",
    "cpu_shares",
    "cpu_times",
    "pin",
    "pinning_preexec",
    "process_cpu_ns_threads",
    "process_cpu_s",
    "process_status_mb",
    "stop_process",
    "tail",
]

STOP_TIMEOUT_S = 15.0


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 100


CLOCK_TICKS = _clock_ticks()


def process_cpu_s(pid: int) -> float | None:
    """utime + stime of a process (every thread, including exited ones), /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


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


def process_status_mb(pid: int, key: str = "VmHWM") -> float | None:
    """A memory line of /proc/<pid>/status (``VmHWM``: peak RSS), in MB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024 / 1e6
    return None


def pin(pid: int, cpus: Sequence[int] | None) -> list[int] | None:
    """Set a process's CPU affinity; return the affinity read back (None if not pinned)."""
    if not cpus:
        return None
    try:
        os.sched_setaffinity(pid, set(cpus))
        return sorted(os.sched_getaffinity(pid))
    except (AttributeError, OSError):
        return None


class LineReader:
    """Lines from a child's stdout pipe, with a timeout (select on the descriptor)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.fd = stream.fileno()
        self.buffer = b""
        self.eof = False

    def readline(self, timeout: float) -> str:
        """The next line without its newline; raises TimeoutError or EOFError."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            if self.eof:
                raise EOFError("the process closed its output")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no output within {timeout:.0f} s")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                chunk = os.read(self.fd, 65536)
                if chunk:
                    self.buffer += chunk
                else:
                    self.eof = True
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode(errors="replace").strip()


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout``; the exit status (negative: a signal)."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                proc.kill()
            proc.wait(10)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with suppress(OSError):
                stream.close()
    return proc.returncode


def tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])


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


class WorkerProcess:
    """One ``python -m benchmarks.<module>`` process and its stdin/stdout conversation:
    the orchestrator writes command lines, the worker answers one line each."""

    def __init__(
        self,
        module: str,
        spec: dict[str, Any],
        work: Path,
        name: str,
        cpus: Sequence[int] | None,
    ) -> None:
        self.module = module
        self.spec_path = work / f"{name}.spec.json"
        self.out = work / f"{name}.out.json"
        self.log = work / f"{name}.log"
        self.spec_path.write_text(json.dumps(spec), encoding="utf-8")
        self.cpus = cpus
        self.proc: subprocess.Popen[bytes] | None = None
        self.reader: LineReader | None = None
        self.pinned: list[int] | None = None

    def start(self) -> None:
        """Start the process (pinned from the start where asked)."""
        command = [
            sys.executable,
            "-m",
            self.module,
            "--spec",
            str(self.spec_path),
            "--out",
            str(self.out),
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=PROJECT_DIR,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                preexec_fn=pinning_preexec(self.cpus),  # noqa: PLW1509 - no threads here
            )
        self.pinned = pin(self.proc.pid, self.cpus)
        assert self.proc.stdout is not None
        self.reader = LineReader(self.proc.stdout)

    @property
    def pid(self) -> int:
        """The process id."""
        assert self.proc is not None
        return self.proc.pid

    def expect(self, word: str, timeout: float) -> list[str]:
        """Wait for a line starting with ``word``; raise RuntimeError otherwise."""
        assert self.reader is not None
        try:
            line = self.reader.readline(timeout)
        except (TimeoutError, EOFError) as exc:
            raise RuntimeError(
                f"{self.module}: no {word!r} ({exc}); log: {tail(self.log)}"
            ) from exc
        if line.split()[:1] != [word]:
            raise RuntimeError(f"{self.module} said {line!r}, expected {word!r}")
        return line.split()

    def expect_any(self, words: Sequence[str], timeout: float) -> list[str]:
        """Wait for a line starting with one of ``words``; raise RuntimeError otherwise."""
        assert self.reader is not None
        try:
            line = self.reader.readline(timeout)
        except (TimeoutError, EOFError) as exc:
            raise RuntimeError(
                f"{self.module}: no {' or '.join(words)} ({exc}); log: {tail(self.log)}"
            ) from exc
        if line.split()[:1] not in ([word] for word in words):
            raise RuntimeError(f"{self.module} said {line!r}, expected one of {list(words)}")
        return line.split()

    def send(self, line: str) -> None:
        """Write one command line to the process."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        """The result JSON it wrote."""
        return cast(dict[str, Any], json.loads(self.out.read_text(encoding="utf-8")))

    def read_array(self, path: Path) -> array[int]:
        """int64 values a worker wrote with ``array.tofile`` (empty if none)."""
        values: array[int] = array("q")
        if path.exists():
            values.frombytes(path.read_bytes())
        return values

    def stop(self) -> int | None:
        """Close its stdin and wait; SIGTERM/SIGKILL if it does not exit."""
        if self.proc is None:
            return None
        if self.proc.stdin is not None:
            with suppress(OSError):
                self.proc.stdin.close()
        with suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        return stop_process(self.proc)
