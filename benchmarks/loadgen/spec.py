"""What the orchestrator and a load-generator process exchange: the spec it runs
(JSON written by the orchestrator) and the results it writes back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..harness.outcome import Outcome
from ..wire import Protocol

__all__ = [
    "MAP_NAME",
    "TEXT_NAME",
    "JoinResult",
    "LateResult",
    "Pacing",
    "RoomsResult",
    "Spec",
    "latency_path",
]

Pacing = Literal["max", "rate"]

MAP_NAME = "m"
"""The root map the rooms scenarios' writers set their key of."""
TEXT_NAME = "text"
"""The root text of the late-joiner document."""


@dataclass(frozen=True, slots=True)
class Spec:
    """What one load-generator process runs (written as JSON by the orchestrator)."""

    scenario: str
    server: str
    url: str
    rooms: list[str]
    clients_per_room: int = 2
    protocol: Protocol = "native"
    prefix: str = ""
    """y-websocket path prefix (``/yjs`` for the relay)."""
    pacing: Pacing = "max"
    rate: float = 0.0
    """Updates per second per client (``pacing="rate"``)."""
    window: int = 100
    """Most updates one writer has in flight (``pacing="max"``); see
    :meth:`benchmarks.loadgen.client.Client.in_flight`."""
    warmup_s: float = 1.0
    duration_s: float = 3.0
    drain_timeout_s: float = 30.0
    updates: int = 20_000
    """Late joiner: updates the writer makes before anyone joins."""
    trace_cache: str | None = None
    """Late joiner: a compact trace (``python -m benchmarks.local --prepare-trace``)."""
    seed: int = 0
    id_seed: int = 0
    """Client ids are :func:`~.shared.client_id_for` ``(id_seed, room, index)``, in every
    process."""
    members: list[list[int]] | None = None
    """Per room, the client indices this process drives (None: all of them)."""
    room_slots: list[int] | None = None
    """Per room, its index in the shared counters file (None: ``0..len(rooms)-1``)."""
    shared: str | None = None
    """The shared counters file (rooms split over processes), None: private counters."""
    total_rooms: int = 0
    """Rooms in the shared counters file."""
    urls: list[str] | None = None
    """Several server processes sharing the documents (benchmarks.redis): room ``slot``
    goes to ``urls[slot % len(urls)]`` (None: every room to ``url``)."""

    def url_of(self, slot: int) -> str:
        """The server URL of the room in counters slot ``slot``."""
        return self.urls[slot % len(self.urls)] if self.urls else self.url


@dataclass(slots=True)
class RoomsResult(Outcome):
    """What one process measured in a rooms scenario (a, b, c)."""

    status: str = "ok"
    failure: str | None = None
    clients: int = 0
    rooms: int = 0
    connect_s: float | None = None
    window_start_ns: int = 0
    window_end_ns: int = 0
    sent_total: int = 0
    sent_in_window: int = 0
    deliveries_in_window: int = 0
    deliveries_total: int = 0
    deliveries_expected: int = 0
    echoes: int = 0
    """Own updates the server sent back to their writer (not counted as deliveries)."""
    late_sends: int = 0
    """Paced sends that started more than one period behind their schedule."""
    acks_received: int = 0
    order_errors: int = 0
    errors: list[str] = field(default_factory=list)
    drain_s: float | None = None
    converged: bool | None = None
    convergence: str | None = None
    server_state_checked: bool = False
    process_cpu_s: float | None = None
    """This process's CPU time over the measured window (``time.process_time``)."""
    sent_by_client: dict[str, dict[str, int]] = field(default_factory=dict)
    """Rooms split over processes: per room, what each local writer sent."""
    room_states: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Rooms split over processes: per room and local client, its map content and its
    whole state (hex) for the orchestrator's cross-process comparison."""


@dataclass(slots=True)
class JoinResult:
    """One late joiner."""

    label: str
    status: str = "ok"
    failure: str | None = None
    connect_ms: float | None = None
    """TCP + websocket handshake."""
    welcome_ms: float | None = None
    """HELLO sent until WELCOME received."""
    sync_ms: float | None = None
    """SUBSCRIBE sent until SYNC received."""
    apply_ms: float | None = None
    """Applying the SYNC update and checking the text."""
    total_ms: float | None = None
    """Starting to connect until the joiner's text equals the writer's."""
    bytes_received: int = 0
    """Websocket message payload bytes (WELCOME + SYNC)."""
    sync_update_bytes: int = 0
    text_length: int = 0


@dataclass(slots=True)
class LateResult(Outcome):
    """What the late-joiner process measured (scenario d)."""

    status: str = "ok"
    failure: str | None = None
    updates: int = 0
    """Updates the writer sent (one per edit that changed the text)."""
    update_bytes_sent: int = 0
    build_s: float | None = None
    """First update sent until the last ACK."""
    doc_update_bytes: int = 0
    """``len(writer_doc.get_update())`` after the build."""
    text_length: int = 0
    joins: list[JoinResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def latency_path(out: Path, kind: str = "lat") -> Path:
    """Where a rooms run writes its latencies (int64 nanoseconds, machine byte order):
    ``lat``, edit to remote observe; ``ack``, send to ACK (relay)."""
    return out.with_suffix(f".{kind}")
