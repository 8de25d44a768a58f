"""The figures of one run of one scenario against one server (``runs`` in the JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..harness.outcome import Outcome

__all__ = ["SATURATED", "RunResult"]

SATURATED = 85.0
"""Load-generator CPU (% of one core) above which its figures are load-generator-bound."""


@dataclass(slots=True)
class RunResult(Outcome):
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
    echoes: int | None = None
    """Updates the server sent back to their own writer (not deliveries)."""
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
    """Scenario d: the build and each join (see :func:`benchmarks.relay.late.run_late_once`)."""
    server_exit: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def loadgen_saturated(self) -> bool:
        """True when a load-generator process was above :data:`SATURATED`."""
        return self.loadgen_cpu_pct is not None and self.loadgen_cpu_pct > SATURATED
