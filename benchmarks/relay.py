"""The relay benchmark: crdtsync's relay against a bare websocket forwarder.

Servers under test run as separate processes on 127.0.0.1: ``python -m relay``
on a SQLite store with durable ACKs (``synchronous=full``, the default) and
``python -m benchmarks.bare_forwarder`` (forwards bytes, no CRDT work, no
storage: the practical limit of a Python relay). Real clients (pycrdt documents
over websockets, :mod:`benchmarks.loadgen`) run in separate load-generator
processes. The server is pinned to one core and the load generator to the
other(s) where the platform allows it. Scenarios:

- **a**: one room, 2 writers, as fast as a window of unacknowledged/undelivered
  updates per writer allows;
- **b**: one room, 20 clients, 20 updates/s each (paced);
- **c**: 100 rooms, 2 clients each, as fast as the window allows;
- **d**: a late joiner on a 20,000-update document (relay only: the bare
  forwarder stores nothing), with the room in memory and after a relay restart.

See ``benchmarks/README.md`` for what is measured and how to read the report.
One run of one scenario against one server, without the rest of the group::

    python -m benchmarks.relay --scenario a --server relay --warmup 0.2 --duration 0.5 \\
        --out run.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any, Literal, cast

from . import PROJECT_DIR, Mode, RunOptions
from .loadgen import latency_path
from .report import (
    filesystem_type,
    fmt_float,
    fmt_int,
    machine_info,
    markdown_table,
    now_iso,
    source_digest,
    write_results,
)
from .trace import DEFAULT_TRACE

__all__ = ["GOALS", "Params", "RunResult", "Scenario", "main", "run"]

ServerKind = Literal["relay", "bare"]
SERVERS: tuple[ServerKind, ...] = ("relay", "bare")
SERVER_LABELS: dict[str, str] = {
    "relay": "crdtsync relay (SQLite, durable ACKs)",
    "bare": "bare forwarder",
}

GROUP = "relay"
EN_DASH = "\N{EN DASH}"
SATURATED = 85.0
"""Load-generator CPU (% of one core) above which its figures are load-generator-bound."""
BUSY_LOAD = 4.0
"""Load average above which the report warns (this benchmark itself accounts for 2-3:
server, load generator, and the relay's SQLite thread waiting in fsync)."""
START_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
GO_MARGIN_S = 0.3
"""Time between ``go`` and the writers' start, so every process receives it first."""


# -- what to run ---------------------------------------------------------------------------


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

    @classmethod
    def for_mode(cls, mode: Mode) -> Params:
        """``quick``: 1 s warm-up, 3 s measured, one run; ``full``: 2 s + 10 s, three runs."""
        if mode == "quick":
            return cls(mode, warmup_s=1.0, duration_s=3.0, repeat=1)
        return cls(mode, warmup_s=2.0, duration_s=10.0, repeat=3)

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


@dataclass(frozen=True, slots=True)
class Goal:
    """A target from the issue; reported as met or not met, never asserted."""

    key: str
    description: str
    target: str


GOALS = (
    Goal("b_cpu", "(b) relay CPU per delivered update", "≤ 30 µs"),
    Goal("a_rate", "(a) deliveries/s, relay / bare", "≥ 0.70"),
    Goal("c_rate", "(c) deliveries/s, relay / bare", "≥ 0.70"),
    Goal("b_p99", "(b) p99 latency, relay / bare", "≤ 1.5x"),
)


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
        """How many load-generator processes a many-room scenario uses."""
        return len(self.loadgen_cpus) if self.loadgen_cpus else 1

    def all_loadgen_cpus(self) -> list[int] | None:
        """The union of the load generators' cores."""
        if not self.loadgen_cpus:
            return None
        return sorted({cpu for cpus in self.loadgen_cpus for cpu in cpus})


# -- results -------------------------------------------------------------------------------


@dataclass(slots=True)
class RunResult:
    """One run of one scenario against one server."""

    scenario: str
    server: str
    repetition: int = 0
    status: str = "ok"
    failure: str | None = None
    warmup_s: float = 0.0
    duration_s: float = 0.0
    rooms: int = 0
    clients: int = 0
    loadgen_processes: int = 0
    pinning: dict[str, Any] = field(default_factory=dict)
    """Requested and actual CPU affinity of the server and load generators."""
    load_average: float | None = None
    connect_s: float | None = None
    sent_total: int | None = None
    sent_in_window: int | None = None
    deliveries: int | None = None
    """Deliveries observed by clients inside the measured window."""
    deliveries_per_s: float | None = None
    deliveries_total: int | None = None
    late_sends: int | None = None
    acks_received: int | None = None
    latency_ms: dict[str, float] | None = None
    """p50, p95, p99, max and mean of edit-to-remote-observe latency in the window."""
    latency_samples: int | None = None
    ack_latency_ms: dict[str, float] | None = None
    """Relay: from sending an update to the ACK covering it (durably stored), in the window."""
    server_cpu_s: float | None = None
    """Server process CPU (user + system, all threads) over the measured window."""
    server_cpu_pct: float | None = None
    us_per_delivery: float | None = None
    server_peak_rss_mb: float | None = None
    """``VmHWM`` of the server process at the end of the run."""
    loadgen_cpu_pct: float | None = None
    """The busiest load-generator process's CPU over the window, % of one core."""
    loadgen_cpu_pcts: list[float] | None = None
    cpus: dict[str, Any] | None = None
    """Per CPU over the window (/proc/stat): busy, idle, iowait and stolen %."""
    other_cpu_pct: float | None = None
    """CPU busy over the window, summed over CPUs, minus the server's and the load
    generators' (% of one core): other processes (the orchestrator, the kernel's threads)."""
    loadgen_self_cpu_pct: float | None = None
    """The same measured inside the load generator (``time.process_time``), cross-check."""
    drain_s: float | None = None
    converged: bool | None = None
    convergence: str | None = None
    late: dict[str, Any] | None = None
    """Scenario d: the build and each join (see :func:`_run_late`)."""
    server_exit: int | None = None
    errors: list[str] = field(default_factory=list)

    def fail(self, reason: str) -> None:
        """Mark the run FAILED (its numbers stay in the JSON but are not reported)."""
        self.status = "FAILED"
        self.failure = reason if self.failure is None else f"{self.failure}; {reason}"

    @property
    def ok(self) -> bool:
        """True if every check passed."""
        return self.status == "ok"

    @property
    def loadgen_saturated(self) -> bool:
        """True when a load-generator process was above :data:`SATURATED`."""
        return self.loadgen_cpu_pct is not None and self.loadgen_cpu_pct > SATURATED


# -- processes -----------------------------------------------------------------------------


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


def _stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> int | None:
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


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])


class ServerProcess:
    """The relay or the bare forwarder in a subprocess on 127.0.0.1, a free port."""

    def __init__(self, kind: ServerKind, work: Path, cpus: Sequence[int] | None) -> None:
        self.kind = kind
        self.work = work
        self.cpus = cpus
        self.db = work / "relay.db"
        self.log = work / f"{kind}-server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pinned: list[int] | None = None
        self.url = ""

    def command(self) -> list[str]:
        """The server's command line."""
        if self.kind == "relay":
            # An absolute path gives sqlite://// + path; synchronous=full is the default.
            return [
                sys.executable,
                "-m",
                "relay",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--store",
                f"sqlite:///{self.db}",
                "--log-level",
                "WARNING",
            ]
        return [sys.executable, "-m", "benchmarks.bare_forwarder", "--host", "127.0.0.1"]

    def start(self) -> str:
        """Start, pin and wait for the ``listening on ws://...`` line; return the URL."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=PROJECT_DIR,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.pinned = pin(self.proc.pid, self.cpus)
        assert self.proc.stdout is not None
        try:
            line = LineReader(self.proc.stdout).readline(START_TIMEOUT_S)
        except (TimeoutError, EOFError) as exc:
            raise RuntimeError(f"{self.kind} did not start ({exc}): {_tail(self.log)}") from exc
        if "listening on " not in line:
            raise RuntimeError(f"{self.kind} did not start: {line!r} {_tail(self.log)}")
        self.url = line.split("listening on ", 1)[1].split()[0]
        return self.url

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None
        return self.proc.pid

    def cpu_s(self) -> float | None:
        """CPU seconds so far."""
        return process_cpu_s(self.pid) if self.proc is not None else None

    def peak_rss_mb(self) -> float | None:
        """Peak RSS so far."""
        return process_status_mb(self.pid) if self.proc is not None else None

    def stop(self) -> int | None:
        """Graceful stop (SIGTERM; SIGKILL after a timeout); the exit status."""
        if self.proc is None:
            return None
        return _stop_process(self.proc)


class LoadgenProcess:
    """One ``python -m benchmarks.loadgen`` process and its stdin/stdout conversation."""

    def __init__(
        self, spec: dict[str, Any], work: Path, index: int, cpus: Sequence[int] | None
    ) -> None:
        self.spec_path = work / f"loadgen-{index}.spec.json"
        self.out = work / f"loadgen-{index}.out.json"
        self.log = work / f"loadgen-{index}.log"
        self.spec_path.write_text(json.dumps(spec), encoding="utf-8")
        self.cpus = cpus
        self.proc: subprocess.Popen[bytes] | None = None
        self.reader: LineReader | None = None
        self.pinned: list[int] | None = None

    def start(self) -> None:
        """Start and pin the process."""
        command = [
            sys.executable,
            "-m",
            "benchmarks.loadgen",
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
                f"load generator: no {word!r} ({exc}); log: {_tail(self.log)}"
            ) from exc
        if line.split()[:1] != [word]:
            raise RuntimeError(f"load generator said {line!r}, expected {word!r}")
        return line.split()

    def send(self, line: str) -> None:
        """Write one command line to the process."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        """The result JSON it wrote."""
        return cast(dict[str, Any], json.loads(self.out.read_text(encoding="utf-8")))

    def latencies(self, kind: str = "lat") -> array[int]:
        """Latencies (ns) it wrote (rooms scenarios; ``kind``: ``lat`` or ``ack``)."""
        values: array[int] = array("q")
        path = latency_path(self.out, kind)
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
        return _stop_process(self.proc)


@contextmanager
def _own_affinity(cpus: Sequence[int] | None) -> Iterator[None]:
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


def _sleep_until(deadline_ns: int) -> None:
    delay = (deadline_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


# -- one run -------------------------------------------------------------------------------


def _pinning(
    placement: Placement, server: ServerProcess | None, loadgens: Sequence[LoadgenProcess]
) -> dict[str, Any]:
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


def _split_rooms(names: Sequence[str], processes: int) -> list[list[str]]:
    """Rooms dealt round-robin over at most ``processes`` load generators."""
    count = max(1, min(processes, len(names)))
    return [list(names[index::count]) for index in range(count)]


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


def run_rooms_once(
    scenario: Scenario,
    server_kind: ServerKind,
    params: Params,
    *,
    placement: Placement,
    work: Path,
    repetition: int = 0,
) -> RunResult:
    """One run of scenario a, b or c against a fresh server process."""
    result = RunResult(
        scenario.key,
        server_kind,
        repetition,
        warmup_s=params.warmup_s,
        duration_s=params.duration_s,
        rooms=scenario.rooms,
        clients=scenario.rooms * scenario.clients_per_room,
        load_average=_load_average(),
    )
    server = ServerProcess(server_kind, work, placement.server_cpus)
    loadgens: list[LoadgenProcess] = []
    try:
        url = server.start()
        names = [f"bench-{scenario.key}-{index}" for index in range(scenario.rooms)]
        groups = _split_rooms(names, placement.loadgen_processes)
        for index, rooms in enumerate(groups):
            spec = {
                "scenario": scenario.key,
                "server": server_kind,
                "url": url,
                "rooms": rooms,
                "clients_per_room": scenario.clients_per_room,
                "pacing": scenario.pacing,
                "rate": scenario.rate,
                "window": scenario.window,
                "warmup_s": params.warmup_s,
                "duration_s": params.duration_s,
                "drain_timeout_s": params.drain_timeout_s,
                "seed": 1000 * repetition + index + 1,
            }
            cpus = placement.loadgen_cpus[index] if placement.loadgen_cpus else None
            loadgens.append(LoadgenProcess(spec, work, index, cpus))
        result.loadgen_processes = len(loadgens)
        for lg in loadgens:
            lg.start()
        for lg in loadgens:
            lg.expect("ready", READY_TIMEOUT_S)
        result.pinning = _pinning(placement, server, loadgens)
        _measure_window(params, server, loadgens, result)
        for lg in loadgens:
            lg.expect("done", params.drain_timeout_s + 60)
        result.server_peak_rss_mb = server.peak_rss_mb()
        _merge_loadgen_results(result, loadgens, params)
    except (RuntimeError, OSError, ValueError, KeyError, TypeError) as exc:
        result.fail(f"{type(exc).__name__}: {exc}")
    finally:
        for lg in loadgens:
            lg.stop()
        result.server_exit = server.stop()
    if result.ok and result.server_exit not in (0, None):
        result.fail(f"the server exited with status {result.server_exit}: {_tail(server.log)}")
    return result


def _measure_window(
    params: Params, server: ServerProcess, loadgens: Sequence[LoadgenProcess], result: RunResult
) -> None:
    """Send ``go``; sample server and load-generator CPU at the window's edges."""
    t0 = time.monotonic_ns() + int(GO_MARGIN_S * 1e9)
    for lg in loadgens:
        lg.send(f"go {t0}")
    window_start = t0 + int(params.warmup_s * 1e9)
    window_end = window_start + int(params.duration_s * 1e9)
    _sleep_until(window_start)
    server_before = server.cpu_s()
    loadgen_before = [process_cpu_s(lg.pid) for lg in loadgens]
    system_before = cpu_times()
    _sleep_until(window_end)
    server_after = server.cpu_s()
    loadgen_after = [process_cpu_s(lg.pid) for lg in loadgens]
    result.cpus = cpu_shares(system_before, cpu_times())
    if server_before is not None and server_after is not None:
        result.server_cpu_s = server_after - server_before
        result.server_cpu_pct = 100 * result.server_cpu_s / params.duration_s
    pcts = [
        100 * (after - before) / params.duration_s
        for before, after in zip(loadgen_before, loadgen_after, strict=True)
        if before is not None and after is not None
    ]
    if pcts:
        result.loadgen_cpu_pcts = pcts
        result.loadgen_cpu_pct = max(pcts)
    if result.cpus and result.server_cpu_pct is not None:
        busy = sum(share["busy_pct"] for share in result.cpus.values())
        result.other_cpu_pct = max(0.0, busy - result.server_cpu_pct - sum(pcts))


def _merge_loadgen_results(
    result: RunResult, loadgens: Sequence[LoadgenProcess], params: Params
) -> None:
    parts = [lg.result() for lg in loadgens]
    latencies: array[int] = array("q")
    ack_latencies: array[int] = array("q")
    for lg in loadgens:
        latencies.extend(lg.latencies())
        ack_latencies.extend(lg.latencies("ack"))
    result.connect_s = max((p["connect_s"] or 0.0) for p in parts)
    result.sent_total = sum(p["sent_total"] for p in parts)
    result.sent_in_window = sum(p["sent_in_window"] for p in parts)
    result.deliveries = sum(p["deliveries_in_window"] for p in parts)
    result.deliveries_total = sum(p["deliveries_total"] for p in parts)
    result.deliveries_per_s = result.deliveries / params.duration_s
    result.late_sends = sum(p["late_sends"] for p in parts)
    result.acks_received = sum(p["acks_received"] for p in parts)
    result.drain_s = max((p["drain_s"] or 0.0) for p in parts)
    result.latency_ms = percentiles(latencies)
    result.latency_samples = len(latencies)
    result.ack_latency_ms = percentiles(ack_latencies)
    self_cpu = [p["process_cpu_s"] for p in parts if p["process_cpu_s"] is not None]
    if self_cpu:
        result.loadgen_self_cpu_pct = 100 * max(self_cpu) / params.duration_s
    if result.server_cpu_s is not None and result.deliveries:
        result.us_per_delivery = result.server_cpu_s / result.deliveries * 1e6
    result.errors = [error for p in parts for error in p["errors"]][:20]
    result.converged = all(p["converged"] for p in parts)
    result.convergence = "; ".join(p["convergence"] or "not checked" for p in parts)
    for part in parts:
        if part["status"] != "ok":
            result.fail(part["failure"] or "the load generator reported a failure")
    if result.ok and not result.deliveries:
        result.fail("no delivery observed in the measured window")


def run_late_once(
    params: Params, placement: Placement, work: Path, trace_cache: Path, repetition: int = 0
) -> RunResult:
    """Scenario d against the relay: build, join with the room in memory (warm), then
    restart the relay on the same store and join again (cold: the room loads from disk)."""
    result = RunResult(
        "d",
        "relay",
        repetition,
        rooms=1,
        clients=2,
        loadgen_processes=1,
        load_average=_load_average(),
    )
    late: dict[str, Any] = {"updates_requested": params.late_updates}
    result.late = late
    spec = {
        "scenario": "d",
        "server": "relay",
        "url": "",
        "rooms": ["bench-d-0"],
        "clients_per_room": 1,
        "window": params.late_window,
        "drain_timeout_s": params.drain_timeout_s,
        "updates": params.late_updates,
        "trace_cache": str(trace_cache),
        "seed": 1000 * repetition + 1,
    }
    servers: list[ServerProcess] = []
    cpus = placement.loadgen_cpus[0] if placement.loadgen_cpus else None
    loadgen: LoadgenProcess | None = None
    build_timeout = params.drain_timeout_s + params.late_updates / 200
    try:
        server = ServerProcess("relay", work, placement.server_cpus)
        servers.append(server)
        spec["url"] = server.start()
        loadgen = LoadgenProcess(spec, work, 0, cpus)
        loadgen.start()
        loadgen.expect("ready", READY_TIMEOUT_S)
        result.pinning = _pinning(placement, server, [loadgen])
        before = server.cpu_s()
        loadgen.send("go")
        loadgen.expect("built", build_timeout)
        after = server.cpu_s()
        late["build_server_cpu_s"] = _diff(before, after)
        late["build_peak_rss_mb"] = server.peak_rss_mb()
        late["warm_server_cpu_ms"] = _join(loadgen, server, "warm")
        late["warm_peak_rss_mb"] = server.peak_rss_mb()
        loadgen.send("disconnect")
        loadgen.expect("disconnected", 30)
        exit_status = server.stop()
        if exit_status != 0:
            result.fail(f"the relay exited with status {exit_status} on SIGTERM")
        restarted = ServerProcess("relay", work, placement.server_cpus)
        servers.append(restarted)
        restarted.start()
        late["cold_server_cpu_ms"] = _join(loadgen, restarted, "cold")
        late["cold_peak_rss_mb"] = restarted.peak_rss_mb()
        result.server_peak_rss_mb = late["cold_peak_rss_mb"]
        loadgen.send("finish")
        loadgen.expect("done", 60)
        _merge_late(result, loadgen.result())
        loadgen.stop()
        result.server_exit = restarted.stop()
        if result.server_exit != 0:
            result.fail(f"the restarted relay exited with status {result.server_exit}")
    except (RuntimeError, OSError, ValueError, KeyError, TypeError) as exc:
        result.fail(f"{type(exc).__name__}: {exc}")
    finally:
        if loadgen is not None:
            loadgen.stop()
        for server in servers:
            server.stop()
    return result


def _diff(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _join(loadgen: LoadgenProcess, server: ServerProcess, label: str) -> float | None:
    """One late joiner; the server's CPU (ms) while it joined (schedstat, else ticks)."""
    before_ns, before = process_cpu_ns_threads(server.pid), server.cpu_s()
    loadgen.send(f"join {server.url} {label}")
    loadgen.expect("joined", 120)
    after_ns, after = process_cpu_ns_threads(server.pid), server.cpu_s()
    if before_ns is not None and after_ns is not None:
        return (after_ns - before_ns) / 1e6
    cpu = _diff(before, after)
    return None if cpu is None else cpu * 1000


def _merge_late(result: RunResult, part: dict[str, Any]) -> None:
    late = result.late
    assert late is not None
    for key in ("updates", "update_bytes_sent", "build_s", "doc_update_bytes", "text_length"):
        late[key] = part[key]
    if part["build_s"]:
        late["build_updates_per_s"] = part["updates"] / part["build_s"]
    late["joins"] = part["joins"]
    result.errors = part["errors"]
    equal = [join["status"] == "ok" for join in part["joins"]]
    result.converged = bool(equal) and all(equal)
    result.convergence = (
        "each joiner's text equals the writer's and their state vectors and delete sets match"
        if result.converged
        else "a joiner's document differs from the writer's"
    )
    if part["status"] != "ok":
        result.fail(part["failure"] or "the load generator reported a failure")


# -- the group -----------------------------------------------------------------------------


def run(options: RunOptions) -> bool:
    """Run the relay group, print the report, write the results; True if no run FAILED."""
    started = now_iso()
    params = Params.for_mode(options.mode)
    placement = Placement.plan()
    digest_at_start = source_digest(PROJECT_DIR / "relay")
    with (
        tempfile.TemporaryDirectory(prefix="crdtsync-relay-bench-", dir=options.tmpdir) as tmp,
        _own_affinity(placement.all_loadgen_cpus()),
    ):
        work = Path(tmp)
        trace_cache = work / "trace.bin"
        _prepare_trace(trace_cache)
        runs = _run_all(params, placement, work, trace_cache)
        store_dir = work.parent
    summaries = summarize(params, runs)
    data = _results_json(
        params,
        placement,
        summaries=summaries,
        runs=runs,
        started=started,
        store_dir=store_dir,
    )
    data["parameters"]["relay_source_sha256_at_start"] = digest_at_start
    markdown = render_markdown(params, summaries, data["machine"], data["parameters"])
    print(markdown)
    json_path, md_path = write_results(options.results_dir, GROUP, data, markdown)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return all(run.ok for run in runs)


def _prepare_trace(destination: Path) -> None:
    """The compact trace for scenario d, written by a helper process (see local.py)."""
    command = [sys.executable, "-m", "benchmarks.local", "--prepare-trace", str(destination)]
    done = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"preparing the trace failed:\n{done.stderr}")


def _run_all(
    params: Params, placement: Placement, work: Path, trace_cache: Path
) -> list[RunResult]:
    """Every scenario and server ``params.repeat`` times, interleaved (repetition-major)."""
    plan: list[tuple[Scenario, ServerKind]] = []
    for scenario in params.scenarios():
        servers: tuple[ServerKind, ...] = ("relay",) if scenario.key == "d" else SERVERS
        plan.extend((scenario, server) for server in servers)
    runs = []
    total = len(plan) * params.repeat
    for repetition in range(params.repeat):
        for index, (scenario, server) in enumerate(plan):
            number = repetition * len(plan) + index + 1
            print(
                f"[{number}/{total}] {scenario.title}, {SERVER_LABELS[server]} ...",
                end=" ",
                file=sys.stderr,
                flush=True,
            )
            run_dir = work / f"run-{scenario.key}-{server}-{repetition}"
            run_dir.mkdir()
            if scenario.key == "d":
                result = run_late_once(params, placement, run_dir, trace_cache, repetition)
            else:
                result = run_rooms_once(
                    scenario,
                    server,
                    params,
                    placement=placement,
                    work=run_dir,
                    repetition=repetition,
                )
            print(_progress(result), file=sys.stderr, flush=True)
            runs.append(result)
    return runs


def _progress(result: RunResult) -> str:
    if not result.ok:
        return f"FAILED: {result.failure}"
    if result.scenario == "d" and result.late:
        joins = ", ".join(
            f"{join['label']} join {join['total_ms']:.0f} ms" for join in result.late["joins"]
        )
        return f"built in {result.late['build_s']:.1f} s; {joins}"
    latency = result.latency_ms or {}
    return (
        f"{result.deliveries_per_s or 0:,.0f} deliveries/s, p99 {latency.get('p99', 0):.1f} ms, "
        f"server CPU {result.server_cpu_pct or 0:.0f}%, "
        f"load generator {result.loadgen_cpu_pct or 0:.0f}%"
    )


# -- summaries -----------------------------------------------------------------------------


@dataclass(slots=True)
class Summary:
    """All runs of one scenario against one server."""

    scenario: Scenario
    server: ServerKind
    runs: list[RunResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True if there were runs and none FAILED."""
        return bool(self.runs) and all(run.ok for run in self.runs)

    @property
    def failure(self) -> str | None:
        """The first failure reason, if any run FAILED."""
        return next((run.failure or "FAILED" for run in self.runs if not run.ok), None)

    def values(self, getter: Any) -> list[float]:
        """A figure of every run (none if any run FAILED)."""
        if not self.ok:
            return []
        values = [getter(run) for run in self.runs]
        return [float(v) for v in values if v is not None]

    def median(self, getter: Any) -> float | None:
        """Median of a figure over the runs."""
        values = self.values(getter)
        return statistics.median(values) if values else None

    def span(self, getter: Any) -> tuple[float, float] | None:
        """(min, max) of a figure over the runs."""
        values = self.values(getter)
        return (min(values), max(values)) if values else None

    @property
    def saturated(self) -> bool:
        """True if the load generator was above :data:`SATURATED` in any run."""
        return any(run.loadgen_saturated for run in self.runs)


def _attr(name: str) -> Any:
    return lambda run: getattr(run, name)


def _capacity(run: RunResult) -> float | None:
    """Deliveries/s the server would reach at 100% of one core at its measured CPU cost
    (deliveries/s over the fraction of a core it used): an estimate not bounded by the
    load generator."""
    if run.deliveries_per_s is None or not run.server_cpu_pct:
        return None
    return run.deliveries_per_s / (run.server_cpu_pct / 100)


def _latency(key: str) -> Any:
    return lambda run: None if run.latency_ms is None else run.latency_ms[key]


def _join_figure(label: str, key: str) -> Any:
    def get(run: RunResult) -> float | None:
        joins = (run.late or {}).get("joins") or []
        return next((join[key] for join in joins if join["label"] == label), None)

    return get


def _late(key: str) -> Any:
    return lambda run: (run.late or {}).get(key)


def summarize(params: Params, runs: Sequence[RunResult]) -> list[Summary]:
    """One summary per scenario and server that ran."""
    summaries = []
    for scenario in params.scenarios():
        for server in SERVERS:
            mine = [r for r in runs if r.scenario == scenario.key and r.server == server]
            if mine:
                summaries.append(Summary(scenario, server, mine))
    return summaries


def _find(summaries: Sequence[Summary], scenario: str, server: str) -> Summary | None:
    return next((s for s in summaries if s.scenario.key == scenario and s.server == server), None)


def _ratio(mine: float | None, theirs: float | None) -> float | None:
    return mine / theirs if mine is not None and theirs else None


def goal_results(summaries: Sequence[Summary]) -> list[dict[str, Any]]:
    """Each goal with its measured value and ``met`` / ``not met`` / ``unknown``."""
    deliveries = _attr("deliveries_per_s")
    p99 = _latency("p99")
    measured: dict[str, tuple[float | None, bool, bool]] = {}
    normalized: dict[str, float | None] = {}

    def pair(scenario: str, getter: Any) -> tuple[float | None, bool]:
        ours, bare = _find(summaries, scenario, "relay"), _find(summaries, scenario, "bare")
        value = _ratio(
            None if ours is None else ours.median(getter),
            None if bare is None else bare.median(getter),
        )
        saturated = any(s is not None and s.saturated for s in (ours, bare))
        return value, saturated

    b_relay = _find(summaries, "b", "relay")
    b_cpu = None if b_relay is None else b_relay.median(_attr("us_per_delivery"))
    measured["b_cpu"] = (b_cpu, b_cpu is not None and b_cpu <= 30, False)
    for key, scenario in (("a_rate", "a"), ("c_rate", "c")):
        value, saturated = pair(scenario, deliveries)
        measured[key] = (value, value is not None and value >= 0.70, saturated)
        normalized[key] = pair(scenario, _capacity)[0]
    value, saturated = pair("b", p99)
    measured["b_p99"] = (value, value is not None and value <= 1.5, saturated)
    results = []
    for goal in GOALS:
        value, met, saturated = measured[goal.key]
        status = "met" if met else "not met"
        if value is None:
            status = "unknown (run FAILED or missing)"
        results.append(
            {
                **asdict(goal),
                "measured": value,
                "status": status,
                "loadgen_saturated": saturated,
                "cpu_normalized": normalized.get(goal.key),
            }
        )
    return results


# -- JSON ----------------------------------------------------------------------------------


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in ("websockets", "msgpack", "pycrdt"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _summary_json(summary: Summary) -> dict[str, Any]:
    figures = {
        "deliveries_per_s": _attr("deliveries_per_s"),
        "p50_ms": _latency("p50"),
        "p95_ms": _latency("p95"),
        "p99_ms": _latency("p99"),
        "server_cpu_pct": _attr("server_cpu_pct"),
        "us_per_delivery": _attr("us_per_delivery"),
        "server_peak_rss_mb": _attr("server_peak_rss_mb"),
        "loadgen_cpu_pct": _attr("loadgen_cpu_pct"),
        "capacity_per_core": _capacity,
        "ack_p50_ms": lambda run: None if run.ack_latency_ms is None else run.ack_latency_ms["p50"],
        "ack_p99_ms": lambda run: None if run.ack_latency_ms is None else run.ack_latency_ms["p99"],
    }
    if summary.scenario.key == "d":
        figures = {
            "build_s": _late("build_s"),
            "build_updates_per_s": _late("build_updates_per_s"),
            "warm_join_ms": _join_figure("warm", "total_ms"),
            "warm_join_bytes": _join_figure("warm", "bytes_received"),
            "warm_server_cpu_ms": _late("warm_server_cpu_ms"),
            "cold_join_ms": _join_figure("cold", "total_ms"),
            "cold_join_bytes": _join_figure("cold", "bytes_received"),
            "cold_server_cpu_ms": _late("cold_server_cpu_ms"),
            "cold_peak_rss_mb": _late("cold_peak_rss_mb"),
            "doc_update_bytes": _late("doc_update_bytes"),
        }
    return {
        "scenario": summary.scenario.key,
        "server": summary.server,
        "status": "ok" if summary.ok else "FAILED",
        "failure": summary.failure,
        "runs": len(summary.runs),
        "loadgen_saturated": summary.saturated,
        **{f"{name}_median": summary.median(getter) for name, getter in figures.items()},
        **{f"{name}_min_max": summary.span(getter) for name, getter in figures.items()},
    }


def _results_json(
    params: Params,
    placement: Placement,
    *,
    summaries: Sequence[Summary],
    runs: Sequence[RunResult],
    started: str,
    store_dir: Path,
) -> dict[str, Any]:
    loads = [run.load_average for run in runs if run.load_average is not None]
    return {
        "group": GROUP,
        "mode": params.mode,
        "started": started,
        "finished": now_iso(),
        "machine": {**machine_info(), **_versions()},
        "parameters": {
            **asdict(params),
            "scenarios": [asdict(s) for s in params.scenarios()],
            "servers": SERVER_LABELS,
            "relay_command": (
                "python -m relay --host 127.0.0.1 --port 0 --store sqlite:///<run dir>/relay.db "
                "--log-level WARNING (synchronous=full: an fsync per commit)"
            ),
            "store_directory": str(store_dir),
            "store_filesystem": filesystem_type(store_dir),
            "placement": asdict(placement),
            "pinning_failed_runs": [
                f"{run.scenario}/{run.server}#{run.repetition}"
                for run in runs
                if placement.server_cpus is not None and not run.pinning.get("ok")
            ],
            "loadgen_saturated_above_pct": SATURATED,
            "trace": DEFAULT_TRACE.name,
            "load_average_before_runs": (
                {"median": statistics.median(loads), "max": max(loads)} if loads else None
            ),
            "relay_source_sha256": source_digest(PROJECT_DIR / "relay"),
            "max_other_cpu_pct": max(
                (run.other_cpu_pct for run in runs if run.other_cpu_pct is not None),
                default=None,
            ),
            "max_steal_pct": max(
                (share["steal_pct"] for run in runs for share in (run.cpus or {}).values()),
                default=None,
            ),
        },
        "goals": goal_results(summaries),
        "summary": [_summary_json(s) for s in summaries],
        "runs": [asdict(run) for run in runs],
    }


# -- markdown ------------------------------------------------------------------------------


def render_markdown(
    params: Params,
    summaries: Sequence[Summary],
    machine: dict[str, Any],
    parameters: dict[str, Any],
) -> str:
    """The whole report: context, one table per scenario, goals."""
    sections = [f"# Relay benchmark ({params.mode})", _context(params, machine, parameters)]
    for scenario in params.scenarios():
        mine = [s for s in summaries if s.scenario.key == scenario.key]
        if not mine:
            continue
        sections.append(f"## {scenario.about}")
        if scenario.key == "d":
            sections.extend([_late_table(mine), _late_notes(params)])
        else:
            sections.append(_rooms_table(mine, scenario) + _ack_line(mine))
    sections.extend(["## Notes", _notes(params)])
    goals = goal_results(summaries)
    sections.extend(["## Goals (durable ACKs on)", _goals_table(goals), _goals_notes(goals)])
    return "\n\n".join(sections) + "\n"


def _context(params: Params, machine: dict[str, Any], parameters: dict[str, Any]) -> str:
    runs = "1 run" if params.repeat == 1 else f"{params.repeat} runs"
    figures = "one run" if params.repeat == 1 else f"median [min{EN_DASH}max] over the runs"
    commit = machine["git_commit"] or "none (no commit yet)"
    placement = parameters["placement"]
    pinned = parameters.get("pinning_failed_runs") or []
    if placement["server_cpus"] is None:
        pinning = "not pinned (fewer than 2 CPUs available or no sched_setaffinity)"
    else:
        pinning = (
            f"server on CPU {placement['server_cpus']}, load generator(s) on "
            f"{placement['loadgen_cpus']}"
        )
        if pinned:
            pinning += f" (**pinning failed in {len(pinned)} run(s)**: see `pinning` in the JSON)"
        else:
            pinning += " (checked in every run)"
    filesystem = parameters["store_filesystem"] or "unknown filesystem"
    lines = [
        f"- Each scenario and server: {runs} of {params.warmup_s:g} s warm-up + "
        f"{params.duration_s:g} s measured, each with fresh server and load-generator "
        f"processes; figures: {figures}.",
        f"- Machine: {machine['platform']}, {machine['processor']}, {machine['cpu_count']} "
        f"CPUs; Python {machine['python']}, pycrdt {machine['pycrdt']}, websockets "
        f"{machine['websockets']}, msgpack {machine['msgpack']}, crdtsync {machine['crdtsync']}.",
        f"- Pinning: {pinning}.",
        f"- Relay store: SQLite in `{parameters['store_directory']}` ({filesystem}), "
        "`synchronous=full` (an fsync per group commit; ACKs after it).",
        f"- Commit {commit}; relay sources sha256 "
        f"`{(parameters.get('relay_source_sha256') or 'unknown')[:12]}`.",
    ]
    if parameters.get("relay_source_sha256") != parameters.get(
        "relay_source_sha256_at_start", parameters.get("relay_source_sha256")
    ):
        lines.append("- **Warning: the relay's sources changed during this run.**")
    other = parameters.get("max_other_cpu_pct")
    if other is not None:
        lines.append(
            f"- Other processes: at most {other:.0f}% of a core busy outside the server and the "
            "load generator in a measured window (/proc/stat)."
            + (" **Warning: something else competed for the CPUs.**" if other > 15 else "")
        )
    steal = parameters.get("max_steal_pct")
    if steal is not None:
        lines.append(
            f"- Host: at most {steal:.1f}% of a CPU stolen by the hypervisor in a measured "
            "window (/proc/stat); per-CPU busy/idle/iowait/steal of every window are in the JSON."
            + (" **Warning: the host took CPU time from this machine.**" if steal > 5 else "")
        )
    load = parameters.get("load_average_before_runs")
    if load is not None:
        line = (
            f"- Load average (1 min) before each run: median {load['median']:.2f}, "
            f"max {load['max']:.2f} (the previous run's processes count in it)."
        )
        if load["median"] > BUSY_LOAD:  # fsync waits (D state) count in it too
            line += " **Warning: the machine was busy; the figures are noisy.**"
        lines.append(line)
    return "\n".join(lines)


def _cell(summary: Summary, getter: Any, digits: int = 1, spread: bool = False) -> str:
    median = summary.median(getter)
    if median is None:
        return "—"
    text = fmt_float(median, digits)
    span = summary.span(getter)
    if spread and span is not None and len(summary.runs) > 1:
        text += f" [{fmt_float(span[0], digits)}{EN_DASH}{fmt_float(span[1], digits)}]"
    return text


def _status_cell(summary: Summary) -> str:
    if summary.ok:
        return "ok"
    reason = (summary.failure or "").replace("|", "\\|").replace("\n", " ")
    return "**FAILED**: " + (reason if len(reason) <= 120 else reason[:117] + "...")


def _loadgen_cell(summary: Summary) -> str:
    values = [run.loadgen_cpu_pct for run in summary.runs if run.loadgen_cpu_pct is not None]
    if not values:
        return "—"
    text = f"{statistics.median(values):.0f}%"
    if summary.saturated:
        return f"**{text} (max {max(values):.0f}%) ⚠**"
    return text


def _rooms_table(summaries: Sequence[Summary], scenario: Scenario) -> str:
    bare = next((s for s in summaries if s.server == "bare"), None)
    bare_rate = None if bare is None else bare.median(_attr("deliveries_per_s"))
    rows = []
    for s in summaries:
        rate = s.median(_attr("deliveries_per_s"))
        ratio = _ratio(rate, bare_rate) if s.server != "bare" else None
        capacity = _cell(s, _capacity, 0) if scenario.pacing == "max" else "—"
        rows.append(
            [
                SERVER_LABELS[s.server],
                _cell(s, _attr("deliveries_per_s"), 0, spread=True),
                "—" if ratio is None else f"{ratio:.2f}",
                _cell(s, _latency("p50"), 2),
                _cell(s, _latency("p95"), 2),
                _cell(s, _latency("p99"), 2, spread=True),
                _cell(s, _attr("server_cpu_pct"), 0),
                _cell(s, _attr("us_per_delivery"), 1, spread=scenario.key == "b"),
                capacity,
                _cell(s, _attr("server_peak_rss_mb"), 1),
                _loadgen_cell(s),
                "yes" if s.ok and all(run.converged for run in s.runs) else "—",
                _status_cell(s),
            ]
        )
    headers = [
        "Server",
        "Deliveries/s",
        "vs bare",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "Server CPU %",
        "Server CPU µs/delivery",
        "Est. max/s at 1 core",
        "Peak RSS MB",
        "Load-gen CPU %",
        "Converged",
        "Status",
    ]
    return markdown_table(headers, rows, "lrrrrrrrrrrll")


def _ack_line(summaries: Sequence[Summary]) -> str:
    """The relay's durable-ACK latency under the table."""
    relay = next((s for s in summaries if s.server == "relay"), None)
    if relay is None:
        return ""

    def ack(key: str) -> Any:
        return lambda run: None if run.ack_latency_ms is None else run.ack_latency_ms[key]

    p50, p99 = relay.median(ack("p50")), relay.median(ack("p99"))
    if p50 is None or p99 is None:
        return ""
    return (
        f"\n\n- Relay ACK latency (update sent → ACK after the fsync'd commit): "
        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms."
    )


def _late_table(summaries: Sequence[Summary]) -> str:
    rows = []
    for s in summaries:
        for label, room in (("warm", "in memory"), ("cold", "after a relay restart")):
            rows.append(
                [
                    f"{SERVER_LABELS[s.server]}, room {room}",
                    _cell(s, _join_figure(label, "total_ms"), 1, spread=True),
                    _cell(s, _join_figure(label, "sync_ms"), 1),
                    _cell(s, _join_figure(label, "bytes_received"), 0),
                    _cell(s, _late("doc_update_bytes"), 0),
                    _cell(s, _late(f"{label}_server_cpu_ms"), 0),
                    _cell(s, _late(f"{label}_peak_rss_mb"), 1),
                    "yes" if s.ok else "—",
                    _status_cell(s),
                ]
            )
    rows.append(["bare forwarder", *["n/a (stores nothing)"] + ["—"] * 7])
    headers = [
        "Server",
        "Join until equal, ms",
        "SUBSCRIBE→SYNC ms",
        "Bytes received",
        "Doc state bytes",
        "Server CPU ms",
        "Peak RSS MB",
        "Equal",
        "Status",
    ]
    table = markdown_table(headers, rows, "lrrrrrrll")
    build = [
        f"{fmt_int(int(v))} updates acknowledged in {_cell(s, _late('build_s'), 2, spread=True)} s "
        f"({_cell(s, _late('build_updates_per_s'), 0)} updates/s, relay CPU "
        f"{_cell(s, _late('build_server_cpu_s'), 2)} s)"
        for s in summaries
        if (v := s.median(_late("updates"))) is not None
    ]
    return table + ("\n\n- Building the document: " + build[0] + "." if build else "")


def _late_notes(params: Params) -> str:
    return "\n".join(
        [
            f"- The writer makes the first {params.late_updates:,} edits of the "
            "automerge-paper trace, one transaction (one update, one UPDATE frame) per edit, "
            f"with at most {params.late_window} unacknowledged, and waits for every ACK. Then "
            "a new client connects, says HELLO, subscribes with an empty state vector and "
            "applies the SYNC; *join until equal* runs from the start of its TCP connection "
            "until its text equals the writer's (state vectors and delete sets compared too).",
            "- *Room in memory*: the writer is still subscribed. *After a relay restart*: the "
            "writer disconnects, the relay is stopped (SIGTERM) and started again on the same "
            "store, so the room loads from SQLite (snapshot + log) on SUBSCRIBE.",
            "- *Bytes received*: websocket message payloads (WELCOME + SYNC); *doc state bytes*: "
            "`len(writer_doc.get_update())`. *Server CPU ms*: the relay's on-CPU time during the "
            "join (sum of its threads' schedstat); *peak RSS*: `VmHWM` of the relay process "
            "after the join.",
        ]
    )


def _notes(params: Params) -> str:
    return "\n".join(
        f"- {note}"
        for note in [
            "*Deliveries/s*: updates observed by a receiving client (decoded, applied to its "
            "pycrdt document and its value read back) during the measured window, divided by its "
            "length; an update sent to a room of N clients is N-1 deliveries. *vs bare*: over "
            "the bare forwarder's median in the same invocation.",
            "*Latency*: from just before the writer's edit (the `time.monotonic_ns()` written in "
            "the value) to after the receiver applied the update and read the value back, for "
            "deliveries observed in the window. In (a) and (c) it is dominated by the window's "
            "queueing: compare it only within a scenario.",
            f"*Windows*: a writer stops while {params.a_window} (a) or {params.c_window} (c) of "
            "its updates are not yet observed by every peer or, against the relay, not yet "
            "acknowledged (ACKs follow the fsync), and resumes when half of them are.",
            "*Server CPU*: user + system time of the server process (all threads, "
            "/proc/<pid>/stat) over the measured window; % of one core. *µs/delivery*: that "
            "CPU over the deliveries of the window (the load generator cannot distort it).",
            "*Est. max/s at 1 core* ((a), (c)): deliveries/s over the fraction of one core the "
            "server used: what it would deliver at 100% of its core at the same cost per "
            "delivery. An estimate, but one the load generator does not cap.",
            "*Peak RSS*: `VmHWM` of the server process at the end of the run.",
            f"*Load-gen CPU %*: the busiest load-generator process over the window. **⚠** "
            f"marks a run above {SATURATED:.0f}%: the load generator was the bottleneck, the "
            "server may have had spare capacity, and its deliveries/s are a lower bound.",
            "*Converged*: after the writers stop, every update reached every peer (and, relay, "
            "was acknowledged); every client's map content (`to_py()`) and state vector + delete "
            "set are equal in each room, the counters match what was sent, and (relay) a fresh "
            "subscriber gets that same state from the relay. A run failing any of this is "
            "FAILED, not a number.",
        ]
    )


def _goals_table(goals: Sequence[dict[str, Any]]) -> str:
    rows = []
    for goal in goals:
        value = goal["measured"]
        if value is None:
            measured = "—"
        elif goal["key"] == "b_cpu":
            measured = f"{value:.1f} µs"
        elif goal["key"] == "b_p99":
            measured = f"{value:.2f}x"
        else:
            measured = f"{value:.2f}"
        if goal["loadgen_saturated"]:
            measured += " ⚠"
        normalized = goal["cpu_normalized"]
        rows.append(
            [
                goal["description"],
                measured,
                "—" if normalized is None else f"{normalized:.2f}",
                goal["target"],
                f"**{goal['status']}**",
            ]
        )
    headers = ["Goal", "Measured", "CPU-normalized", "Target", "Result"]
    return markdown_table(headers, rows, "lrrrl")


def _goals_notes(goals: Sequence[dict[str, Any]]) -> str:
    notes = [
        "Ratios are medians of this invocation (relay over bare forwarder, same load, same "
        "machine). Peer relays measured on this machine under load (b): bare forwarder 24 µs, "
        "@y/websocket-server 32 µs, pycrdt-websocket 86 µs per delivered update."
    ]
    notes.append(
        "*CPU-normalized*: the same ratio of *est. max/s at 1 core* (deliveries/s divided by "
        "the fraction of a core the server used), which the load generator cannot cap. It "
        "assumes the cost per delivery stays the same up to a full core."
    )
    if any(goal["loadgen_saturated"] for goal in goals):
        notes.append(
            "⚠ The load generator was saturated in a run behind this ratio: when it was the "
            "bare forwarder's run, the bare figure is a lower bound of the forwarder's capacity "
            "and the measured ratio flatters the relay; read the CPU-normalized one."
        )
    return "\n".join(f"- {note}" for note in notes)


# -- command line (one run; users run ``python -m benchmarks``) ----------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.relay``: one run of one scenario."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.relay",
        description="One run of one relay-benchmark scenario against one server, written as "
        "JSON. To run the benchmark use: python -m benchmarks --only relay",
    )
    parser.add_argument("--scenario", choices=["a", "b", "c", "d"], default="a")
    parser.add_argument("--server", choices=SERVERS, default="relay")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds (default 0.5)")
    parser.add_argument("--duration", type=float, default=1.0, help="seconds (default 1)")
    parser.add_argument("--rooms", type=int, help="rooms in (c) (default 100)")
    parser.add_argument("--clients", type=int, help="clients in (b) (default 20)")
    parser.add_argument("--updates", type=int, help="document size in (d) (default 20,000)")
    parser.add_argument("--out", type=Path, required=True, help="write the run's JSON here")
    parser.add_argument("--tmpdir", type=Path, help="where the store and logs go")
    args = parser.parse_args(argv)
    base = Params.for_mode("quick")
    params = Params(
        "quick",
        warmup_s=args.warmup,
        duration_s=args.duration,
        repeat=1,
        b_clients=args.clients or base.b_clients,
        c_rooms=args.rooms or base.c_rooms,
        late_updates=args.updates or base.late_updates,
    )
    scenario = next(s for s in params.scenarios() if s.key == args.scenario)
    if scenario.key == "d" and args.server != "relay":
        parser.error("scenario d runs against the relay only (the bare forwarder stores nothing)")
    placement = Placement.plan()
    with (
        tempfile.TemporaryDirectory(prefix="crdtsync-relay-run-", dir=args.tmpdir) as tmp,
        _own_affinity(placement.all_loadgen_cpus()),
    ):
        work = Path(tmp)
        if scenario.key == "d":
            cache = work / "trace.bin"
            _prepare_trace(cache)
            result = run_late_once(params, placement, work, cache)
        else:
            result = run_rooms_once(scenario, args.server, params, placement=placement, work=work)
    args.out.write_text(json.dumps(asdict(result), indent=2), encoding="utf-8")
    print(_progress(result), file=sys.stderr)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
