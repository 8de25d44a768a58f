"""Load generator of the relay benchmark: real pycrdt clients over real websockets.

Every client is a ``pycrdt.Doc`` with a 32-bit client id and one websocket
connection. A writing client sets its own key of the root map ``m`` to
``"<counter> <time.monotonic_ns()>"`` (one transaction, one Yjs update) and sends
the update in its server's wire format (:mod:`benchmarks.wire`): a native UPDATE
frame (the counter as ``seq``), a y-websocket update message (type 0, step 2), the
same with Hocuspocus' document-name prefix, or, to the bare forwarder, the
y-websocket message with no handshake. A receiving client decodes each message,
applies the update to its own document, reads the sender's value back from its
map and records the latency (time after applying and reading, minus the time
written into the value: ``time.monotonic_ns`` is one clock for every process of
the machine). An update that comes back to its own writer (the y-websocket
server, Hocuspocus and pycrdt-websocket send every update to every connection of
the room, the writer's included) is counted as an echo and not applied.

Handshakes: against the relay's native protocol HELLO, SUBSCRIBE with the state
vector, wait for SYNC (the relay ACKs every update after its durable commit);
y-websocket: sync step 1 both ways, step 2 both ways, in sync after the server's
step 2; Hocuspocus: the auth message first, then the same.

The orchestrator (:mod:`benchmarks.relay`) drives one or several of these
processes through stdin/stdout lines:

- rooms scenarios (``a``, ``b``, ``c``): the process connects every client and
  prints ``ready``; on ``go <t0_ns>`` writers start at ``t0`` (warm-up), the
  measured window is ``[t0 + warmup, t0 + warmup + duration]`` (deliveries are
  counted by the time they were observed), writers stop at its end; then the
  process drains (every update delivered to every other client of its room and,
  against the relay, acknowledged), checks convergence, writes ``--out`` and
  prints ``done``;
- late joiner (``d``): ``ready``; on ``go`` a writer builds a document of
  ``--updates`` updates through the relay (the automerge-paper trace prefix, one
  edit per update) and waits for every ACK, prints ``built``; each
  ``join <url> <label>`` runs a new client that subscribes with an empty state
  vector and measures the time until its text equals the writer's and the bytes
  it received, answering ``joined``; ``disconnect`` closes the writer
  (``disconnected``); ``finish`` writes ``--out`` and prints ``done``.

**Several processes, one room.** When a room has more clients than one process
should drive (one room, 2 writers flat out: one process per writer), the
orchestrator gives each process some of the room's clients (``members``). The
processes share one file of counters (``shared``, memory-mapped: per room, what
every receiver has seen of every sender, what every sender has sent and whether
it has finished), so windows, draining and ordering checks work across
processes; client ids are derived from ``id_seed`` so every process knows whose
update it receives. Each process checks the clients it holds; the orchestrator
compares the final documents across processes (``room_states`` in the result).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mmap
import os
import random
import sys
import time
import zlib
from array import array
from collections import deque
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pycrdt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from crdtsync.ids import DocId, ReplicaId
from crdtsync.protocol import (
    Ack,
    ErrorFrame,
    Hello,
    Subscribe,
    Sync,
    Update,
    Welcome,
    decode_frame,
    encode_frame,
    encode_update,
)
from crdtsync.statevector import same_state

from .trace import Edit, load_compact
from .wire import MAX_FRAME_IN, Codec, Protocol, codec

__all__ = [
    "JoinResult",
    "LateResult",
    "RoomsResult",
    "SharedCounters",
    "Spec",
    "client_id_for",
    "command_line",
    "latency_path",
    "main",
    "say",
    "stdin_lines",
    "update_client_id",
]

Pacing = Literal["max", "rate"]

CONNECT_BATCH = 25
"""Connections opened concurrently (the servers' listen backlog is 100)."""
HANDSHAKE_TIMEOUT_S = 30.0
MAP_NAME = "m"
TEXT_NAME = "text"
EMPTY_UPDATE = b"\x00\x00"
REMOTE_POLL_S = 0.0005
"""How often a writer blocked on peers in another process looks at the shared counters."""


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
    """Most updates one writer has in flight (``pacing="max"``); see :meth:`Client.in_flight`."""
    warmup_s: float = 1.0
    duration_s: float = 3.0
    drain_timeout_s: float = 30.0
    updates: int = 20_000
    """Late joiner: updates the writer makes before anyone joins."""
    trace_cache: str | None = None
    """Late joiner: a compact trace (``python -m benchmarks.local --prepare-trace``)."""
    seed: int = 0
    id_seed: int = 0
    """Client ids are :func:`client_id_for` ``(id_seed, room, index)``, in every process."""
    members: list[list[int]] | None = None
    """Per room, the client indices this process drives (None: all of them)."""
    room_slots: list[int] | None = None
    """Per room, its index in the shared counters file (None: ``0..len(rooms)-1``)."""
    shared: str | None = None
    """The shared counters file (rooms split over processes), None: private counters."""
    total_rooms: int = 0
    """Rooms in the shared counters file."""


# -- results ---------------------------------------------------------------------------


@dataclass(slots=True)
class RoomsResult:
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

    def fail(self, reason: str) -> None:
        """Mark the run FAILED."""
        self.status = "FAILED"
        self.failure = reason if self.failure is None else f"{self.failure}; {reason}"


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
class LateResult:
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

    def fail(self, reason: str) -> None:
        """Mark the run FAILED."""
        self.status = "FAILED"
        self.failure = reason if self.failure is None else f"{self.failure}; {reason}"


# -- clients -----------------------------------------------------------------------------


def update_client_id(update: bytes) -> int | None:
    """The client id of a one-struct-group v1 update (the header of every update a
    writer here makes), or None for any other shape."""
    if len(update) < 3 or update[0] != 1:
        return None
    value = shift = 0
    for index in range(2, min(len(update), 12)):
        byte = update[index]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value
        shift += 7
    return None


def client_id_for(id_seed: int, room: str, index: int) -> int:
    """A 32-bit client id, the same in every process of a run (never 0)."""
    return zlib.crc32(f"{id_seed}/{room}/{index}".encode()) or 1


class SharedCounters:
    """Per room: ``seen[receiver][sender]`` (the last counter a receiver observed from
    a sender), ``sent[sender]`` and ``done[sender]`` (1 once it stopped writing), as
    int64 in one buffer: private, or a memory-mapped file shared by the processes
    that hold clients of the same room."""

    def __init__(self, rooms: int, clients: int, path: str | None = None) -> None:
        self.clients = clients
        self.stride = clients * clients + 2 * clients
        size = max(1, rooms * self.stride) * 8
        self._mmap: mmap.mmap | None = None
        if path is None:
            self._raw = memoryview(bytearray(size))
        else:
            with open(path, "r+b") as fh:
                self._mmap = mmap.mmap(fh.fileno(), size)
            self._raw = memoryview(self._mmap)
        self.values = self._raw.cast("q")

    @staticmethod
    def create(path: Path, rooms: int, clients: int) -> None:
        """Write a zeroed counters file for ``rooms`` rooms of ``clients`` clients."""
        path.write_bytes(bytes(max(1, rooms * (clients * clients + 2 * clients)) * 8))

    def seen_index(self, slot: int, receiver: int, sender: int) -> int:
        """Where ``seen[receiver][sender]`` of room ``slot`` is."""
        return slot * self.stride + receiver * self.clients + sender

    def sent_index(self, slot: int, sender: int) -> int:
        """Where ``sent[sender]`` of room ``slot`` is."""
        return slot * self.stride + self.clients * self.clients + sender

    def done_index(self, slot: int, sender: int) -> int:
        """Where ``done[sender]`` of room ``slot`` is."""
        return self.sent_index(slot, sender) + self.clients

    def close(self) -> None:
        """Release the mapping."""
        self.values.release()
        self._raw.release()
        if self._mmap is not None:
            self._mmap.close()


class Stats:
    """Counters shared by every client of the process."""

    def __init__(self) -> None:
        self.window_start = 1 << 62
        self.window_end = 1 << 62
        self.latencies: array[int] = array("q")
        self.ack_latencies: array[int] = array("q")
        self.deliveries_in_window = 0
        self.deliveries_total = 0
        self.echoes = 0
        self.order_errors = 0
        self.acks = 0
        self.late_sends = 0
        self.sent_at_window_start = 0
        self.cpu_at_window_start: float | None = None
        self.process_cpu_s: float | None = None
        self.errors: list[str] = []

    def error(self, message: str) -> None:
        """Keep the first few error messages."""
        if len(self.errors) < 20:
            self.errors.append(message)


class Room:
    """The clients of one document (every slot; only some may be local)."""

    def __init__(self, name: str, slot: int, counters: SharedCounters) -> None:
        self.name = name
        self.slot = slot
        self.counters = counters
        self.clients: list[Client] = []
        """The clients this process drives."""
        self.size = counters.clients
        self.by_client_id: dict[int, int] = {}
        """Client id -> index in the room, for every client of the room."""
        self.remote = False
        """True when some clients of the room live in another process."""

    def seen(self, receiver: int, sender: int) -> int:
        """The last counter ``receiver`` observed from ``sender``."""
        return int(self.counters.values[self.counters.seen_index(self.slot, receiver, sender)])

    def sent(self, sender: int) -> int:
        """How many updates ``sender`` has sent."""
        return int(self.counters.values[self.counters.sent_index(self.slot, sender)])

    def done(self, sender: int) -> bool:
        """True once ``sender`` has stopped writing."""
        return bool(self.counters.values[self.counters.done_index(self.slot, sender)])


class Client:
    """One replica: a pycrdt document, a websocket, the writer's window bookkeeping."""

    def __init__(self, room: Room, index: int, spec: Spec, stats: Stats) -> None:
        self.room = room
        self.index = index
        self.stats = stats
        self.key = f"c{index}"
        self.native = spec.protocol == "native"
        self.codec: Codec = codec(
            spec.protocol, room.name, f"bench-{os.getpid()}-{room.name}-{self.key}", spec.prefix
        )
        client_id = client_id_for(spec.id_seed, room.name, index)
        self.client_id = client_id
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
        self.map = self.doc.get(MAP_NAME, type=pycrdt.Map)
        self._capture = False
        self._captured: list[bytes] = []
        self.doc.observe(self._on_transaction)
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task[None] | None = None
        self.sent = 0
        self.acked = 0
        self.sent_at: deque[int] = deque()  # relay: send times of unacknowledged updates
        counters = room.counters
        self._values = counters.values
        self._seen_base = counters.seen_index(room.slot, index, 0)
        self._sent_index = counters.sent_index(room.slot, index)
        self.window = 0
        self.low_water = 0
        self.blocked = False
        self.wake = asyncio.Event()
        self.synced = asyncio.Event()
        self.closing = False
        room.clients.append(self)

    # -- writing -------------------------------------------------------------------------

    def _on_transaction(self, event: pycrdt.TransactionEvent) -> None:
        if self._capture:
            self._captured.append(event.update)

    def edit(self) -> bytes:
        """One local change (its own transaction); the message carrying it."""
        self.sent += 1
        self._values[self._sent_index] = self.sent
        self._capture = True
        now = time.monotonic_ns()
        if self.native:
            self.sent_at.append(now)
        try:
            self.map[self.key] = f"{self.sent} {now}"
        finally:
            self._capture = False
        update = self._captured.pop()
        self._captured.clear()
        return self.codec.update(update, self.sent)

    def undelivered(self) -> int:
        """Updates of this writer not yet observed by every other client of the room."""
        room, index = self.room, self.index
        return self.sent - min(
            (room.seen(peer, index) for peer in range(room.size) if peer != index),
            default=self.sent,
        )

    def in_flight(self) -> int:
        """Not yet delivered to every peer or (native relay) not yet acknowledged."""
        if self.native:
            return max(self.undelivered(), self.sent - self.acked)
        return self.undelivered()

    def maybe_wake(self) -> None:
        """Resume a blocked writer once its window is half empty."""
        if self.in_flight() <= self.low_water:
            self.blocked = False
            self.wake.set()

    async def _wait_window(self) -> None:
        self.blocked = True
        if not self.room.remote:
            self.wake.clear()
            await self.wake.wait()
            return
        # A peer in another process cannot wake this writer: look at the shared counters.
        while not self.closing and self.in_flight() > self.low_water:
            if time.monotonic_ns() >= self.stats.window_end:
                break
            self.wake.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), REMOTE_POLL_S)
        self.blocked = False

    async def write_max(self, stop_ns: int) -> None:
        """As fast as the window allows, until ``stop_ns``."""
        assert self.ws is not None
        ws = self.ws
        window = self.window
        clock = time.monotonic_ns
        while True:
            if self.in_flight() >= window:
                await self._wait_window()
            if clock() >= stop_ns or self.closing:
                return
            await ws.send(self.edit())

    async def write_paced(self, start_ns: int, stop_ns: int, rate: float) -> None:
        """``rate`` updates per second on a fixed schedule (random phase), until ``stop_ns``."""
        assert self.ws is not None
        ws = self.ws
        period = int(1e9 / rate)
        next_ns = start_ns + random.randrange(period)
        clock = time.monotonic_ns
        while next_ns < stop_ns and not self.closing:
            delay = next_ns - clock()
            if delay > 0:
                await asyncio.sleep(delay / 1e9)
            elif -delay > period:
                self.stats.late_sends += 1
            await ws.send(self.edit())
            next_ns += period

    # -- receiving -----------------------------------------------------------------------

    async def receive_loop(self) -> None:
        """Decode and apply every message until the connection closes."""
        assert self.ws is not None
        stats = self.stats
        decode = self.codec.decode
        try:
            async for message in self.ws:
                if isinstance(message, str):
                    stats.error(f"{self.key}@{self.room.name}: text message received")
                    continue
                for event in decode(message):
                    kind = event.kind
                    if kind == "update":
                        self._on_update(event.payload)
                    elif kind == "ack":
                        stats.acks += 1
                        if self.native:
                            self._on_ack(event.seq)
                            if self.blocked:
                                self.maybe_wake()
                    elif kind == "step2":
                        self.doc.apply_update(event.payload)
                        self.synced.set()
                    elif kind == "step1":
                        await self.ws.send(self.codec.step2(self.doc.get_update(event.payload)))
                    elif kind == "error":
                        stats.error(f"{self.key}@{self.room.name}: {event.text}")
        except ConnectionClosed as exc:
            if not self.closing:
                stats.error(f"{self.key}@{self.room.name}: connection closed: {exc}")
        except Exception as exc:  # noqa: BLE001 - reported as a FAILED run
            stats.error(f"{self.key}@{self.room.name}: {type(exc).__name__}: {exc}")
        finally:
            self.synced.set()

    def _on_ack(self, seq: int) -> None:
        """Every update up to ``seq`` is durably stored: record how long each waited."""
        now = time.monotonic_ns()
        stats = self.stats
        in_window = stats.window_start <= now <= stats.window_end
        sent_at = self.sent_at
        while self.acked < seq and sent_at:
            self.acked += 1
            sent = sent_at.popleft()
            if in_window:
                stats.ack_latencies.append(now - sent)
        self.acked = max(self.acked, seq)

    def _on_update(self, update: bytes) -> None:
        stats = self.stats
        room = self.room
        sender = room.by_client_id.get(update_client_id(update) or -1)
        if sender is None:
            if update != EMPTY_UPDATE:  # servers may relay an empty transaction
                stats.error(f"{self.key}@{room.name}: update from an unknown client")
            return
        if sender == self.index:
            stats.echoes += 1  # our own update, sent back by the server
            return
        self.doc.apply_update(update)
        value = self.map.get(f"c{sender}")
        now = time.monotonic_ns()
        if not isinstance(value, str):
            stats.error(f"{self.key}@{room.name}: no value for c{sender}")
            return
        counter_text, _, sent_text = value.partition(" ")
        counter = int(counter_text)
        seen_index = self._seen_base + sender
        previous = self._values[seen_index]
        if counter != previous + 1:
            stats.order_errors += 1
            stats.error(f"{self.key}@{room.name}: from c{sender} got #{counter} after #{previous}")
        self._values[seen_index] = max(previous, counter)
        stats.deliveries_total += 1
        if stats.window_start <= now <= stats.window_end:
            stats.deliveries_in_window += 1
            stats.latencies.append(now - int(sent_text))
        if not room.remote:
            writer = room.clients[sender]
            if writer.blocked:
                writer.maybe_wake()

    # -- connection ----------------------------------------------------------------------

    async def open(self, url: str) -> None:
        """Connect and complete the protocol's handshake (in sync with the server)."""
        self.ws = await connect(
            self.codec.path(url),
            compression=None,
            max_size=MAX_FRAME_IN,
            ping_interval=None,
            open_timeout=HANDSHAKE_TIMEOUT_S,
            close_timeout=2,
        )
        self.reader = asyncio.get_running_loop().create_task(self.receive_loop())
        for message in self.codec.opening(self.doc.get_state()):
            await self.ws.send(message)
        if self.codec.handshake:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                await self.synced.wait()
            if self.reader.done():
                raise ConnectionError(f"{self.key}@{self.room.name}: closed before sync")

    async def close(self) -> None:
        """Close the connection and stop the reader."""
        self.closing = True
        self.wake.set()
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), timeout=5)
            except (TimeoutError, OSError):
                self.ws.transport.abort()
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)


# -- rooms scenarios (a, b, c) -----------------------------------------------------------


async def stdin_lines() -> asyncio.StreamReader:
    """stdin as an asyncio stream (the orchestrator's commands)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def command_line(reader: asyncio.StreamReader) -> list[str]:
    line = (await reader.readline()).decode().split()
    if not line:
        raise EOFError("the orchestrator closed stdin")
    return line


def say(message: str) -> None:
    print(message, flush=True)


async def _connect_all(clients: Sequence[Client], url: str) -> None:
    """Open every connection, at most :data:`CONNECT_BATCH` at a time; the first client of
    each room before the others (pycrdt-websocket 0.16 deadlocks when two connections
    race to create the same room: the second waits for the room's start lock forever)."""
    first = [client for client in clients if client is client.room.clients[0]]
    rest = [client for client in clients if client is not client.room.clients[0]]
    for group in (first, rest):
        for start in range(0, len(group), CONNECT_BATCH):
            batch = group[start : start + CONNECT_BATCH]
            await asyncio.gather(*(client.open(url) for client in batch))


def _build_rooms(spec: Spec, stats: Stats) -> tuple[list[Room], list[Client], SharedCounters]:
    slots = spec.room_slots or list(range(len(spec.rooms)))
    counters = SharedCounters(
        spec.total_rooms or len(spec.rooms), spec.clients_per_room, spec.shared
    )
    rooms: list[Room] = []
    clients: list[Client] = []
    for position, name in enumerate(spec.rooms):
        room = Room(name, slots[position], counters)
        room.by_client_id = {
            client_id_for(spec.id_seed, name, index): index
            for index in range(spec.clients_per_room)
        }
        if len(room.by_client_id) != spec.clients_per_room:
            raise ValueError(f"{name}: two clients drew the same client id; change id_seed")
        members = (
            spec.members[position] if spec.members is not None else range(spec.clients_per_room)
        )
        room.remote = len(members) < spec.clients_per_room
        clients.extend(Client(room, index, spec, stats) for index in members)
        rooms.append(room)
    return rooms, clients, counters


async def run_rooms(
    spec: Spec, reader: asyncio.StreamReader
) -> tuple[RoomsResult, array[int], array[int]]:
    """Scenarios a, b, c: connect, wait for ``go``, write, drain, check. Returns the
    result and the latencies (ns) of the deliveries observed in the measured window."""
    stats = Stats()
    result = RoomsResult()
    rooms, clients, counters = _build_rooms(spec, stats)
    for client in clients:
        client.window = spec.window
        client.low_water = spec.window // 2
    result.clients, result.rooms = len(clients), len(rooms)
    try:
        started = time.perf_counter()
        await _connect_all(clients, spec.url)
        result.connect_s = time.perf_counter() - started
        say("ready")
        command = await command_line(reader)
        if command[0] != "go":
            raise RuntimeError(f"expected go, got {command!r}")
        t0 = int(command[1])
        stats.window_start = t0 + int(spec.warmup_s * 1e9)
        stats.window_end = stats.window_start + int(spec.duration_s * 1e9)
        await _write_phase(spec, clients, t0, stats)
        result.sent_in_window = sum(c.sent for c in clients) - stats.sent_at_window_start
        drain_started = time.perf_counter()
        drained = await _drain(spec, rooms, clients)
        result.drain_s = time.perf_counter() - drain_started
        _record(result, stats, rooms, clients)
        if not drained:
            result.fail(_drain_failure(rooms, clients))
        elif result.status == "ok":
            await _check_convergence(spec, rooms, result)
    finally:
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)
        counters.close()
    return result, stats.latencies, stats.ack_latencies


async def _write_phase(spec: Spec, clients: Sequence[Client], t0: int, stats: Stats) -> None:
    """Writers from ``t0`` to the end of the measured window (``time.monotonic`` is the
    event loop's clock, so ``call_at`` takes these instants directly)."""
    loop = asyncio.get_running_loop()
    stop_ns = stats.window_end

    def window_starts() -> None:
        stats.sent_at_window_start = sum(client.sent for client in clients)
        stats.cpu_at_window_start = time.process_time()

    def window_ends() -> None:
        if stats.cpu_at_window_start is not None:
            stats.process_cpu_s = time.process_time() - stats.cpu_at_window_start
        for client in clients:
            client.wake.set()

    delay = (t0 - time.monotonic_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)
    loop.call_at(stats.window_start / 1e9, window_starts)
    loop.call_at(stop_ns / 1e9, window_ends)
    if spec.pacing == "rate":
        writers = [client.write_paced(t0, stop_ns, spec.rate) for client in clients]
    else:
        writers = [client.write_max(stop_ns) for client in clients]
    await asyncio.gather(*writers)
    for client in clients:
        counters = client.room.counters
        counters.values[counters.done_index(client.room.slot, client.index)] = 1


def _received_all(room: Room, client: Client) -> bool:
    """True once ``client`` saw everything every other (stopped) writer of its room sent."""
    return all(
        room.done(sender) and room.seen(client.index, sender) == room.sent(sender)
        for sender in range(room.size)
        if sender != client.index
    )


def _drained(rooms: Sequence[Room], clients: Sequence[Client]) -> bool:
    if any(c.in_flight() for c in clients):
        return False
    return all(_received_all(room, c) for room in rooms if room.remote for c in room.clients)


async def _drain(spec: Spec, rooms: Sequence[Room], clients: Sequence[Client]) -> bool:
    """Wait until every update reached every peer (and, native relay, was acknowledged)."""
    deadline = time.monotonic() + spec.drain_timeout_s
    while time.monotonic() < deadline:
        if _drained(rooms, clients):
            return True
        if any(c.reader and c.reader.done() for c in clients):
            return False
        await asyncio.sleep(0.01)
    return False


def _drain_failure(rooms: Sequence[Room], clients: Sequence[Client]) -> str:
    undelivered = sum(c.undelivered() for c in clients)
    unacked = sum(c.sent - c.acked for c in clients if c.native)
    missing = sum(
        1 for room in rooms if room.remote for c in room.clients if not _received_all(room, c)
    )
    closed = sum(1 for c in clients if c.reader is not None and c.reader.done())
    return (
        f"not drained after the run: {undelivered} update(s) not observed by every peer, "
        f"{unacked} not acknowledged, {missing} client(s) missing updates from another "
        f"process, {closed} connection(s) closed"
    )


def _record(
    result: RoomsResult, stats: Stats, rooms: Sequence[Room], clients: Sequence[Client]
) -> None:
    result.window_start_ns, result.window_end_ns = stats.window_start, stats.window_end
    result.sent_total = sum(c.sent for c in clients)
    result.deliveries_in_window = stats.deliveries_in_window
    result.deliveries_total = stats.deliveries_total
    result.deliveries_expected = sum(
        room.sent(sender)
        for room in rooms
        for client in room.clients
        for sender in range(room.size)
        if sender != client.index
    )
    result.echoes = stats.echoes
    result.late_sends = stats.late_sends
    result.acks_received = stats.acks
    result.order_errors = stats.order_errors
    result.errors = list(stats.errors)
    result.process_cpu_s = stats.process_cpu_s
    if stats.errors:
        result.fail(f"{len(stats.errors)} client error(s), first: {stats.errors[0]}")
    if result.deliveries_total != result.deliveries_expected:
        result.fail(
            f"{result.deliveries_total} deliveries observed, "
            f"{result.deliveries_expected} expected (what the other clients of each room sent)"
        )


async def _check_convergence(spec: Spec, rooms: Sequence[Room], result: RoomsResult) -> None:
    """Every client of a room holds the same content and state; a fresh client gets that
    same state from the server too (every server but the bare forwarder). Rooms split
    over processes: the local clients here, the rest by the orchestrator."""
    problems: list[str] = []
    for room in rooms:
        first = room.clients[0]
        content = first.map.to_py()
        if room.remote:
            result.sent_by_client[room.name] = {c.key: c.sent for c in room.clients}
            result.room_states[room.name] = {
                c.key: {"content": c.map.to_py(), "state": c.doc.get_update().hex()}
                for c in room.clients
            }
        else:
            expected = {c.key: c.sent for c in room.clients if c.sent}
            counters = {key: int(value.split(" ")[0]) for key, value in (content or {}).items()}
            if counters != expected:
                problems.append(f"{room.name}: final counters {counters} != sent {expected}")
        for other in room.clients[1:]:
            if other.map.to_py() != content or not same_state(first.doc, other.doc):
                problems.append(f"{room.name}: {other.key} differs from {first.key}")
    if spec.protocol != "raw" and not problems:
        problems.extend(await _check_server_state(spec, rooms))
        result.server_state_checked = True
    result.converged = not problems
    if problems:
        result.convergence = "; ".join(problems[:5])
        result.fail(f"did not converge: {result.convergence}")
    else:
        clients = sum(len(room.clients) for room in rooms)
        result.convergence = (
            f"{clients} clients in {len(rooms)} room(s): equal map content (to_py) and equal "
            "state vectors and delete sets"
            + (
                "; the server's state (a fresh client) is equal too"
                if spec.protocol != "raw"
                else ""
            )
        )


async def _check_server_state(spec: Spec, rooms: Sequence[Room]) -> list[str]:
    """A fresh client per room (native: one connection for every room) syncs from an
    empty state vector; its document must equal the clients'."""
    if spec.protocol == "native":
        docs = await _native_server_docs(spec, rooms)
    else:
        docs = {}
        for room in rooms:
            docs[room.name] = await fetch_document(spec.protocol, spec.prefix, spec.url, room.name)
    problems = []
    for room in rooms:
        doc = docs.get(room.name)
        first = room.clients[0]
        if doc is None:
            problems.append(f"{room.name}: no state from the server")
        elif doc.get(MAP_NAME, type=pycrdt.Map).to_py() != first.map.to_py() or not same_state(
            doc, first.doc
        ):
            problems.append(f"{room.name}: the server's state differs from the clients'")
    return problems


async def _native_server_docs(spec: Spec, rooms: Sequence[Room]) -> dict[str, pycrdt.Doc[Any]]:
    docs: dict[str, pycrdt.Doc[Any]] = {room.name: pycrdt.Doc() for room in rooms}
    pending = set(docs)
    async with connect(spec.url, compression=None, max_size=MAX_FRAME_IN, ping_interval=None) as ws:
        await ws.send(encode_frame(Hello(ReplicaId(f"bench-verifier-{os.getpid()}"))))
        for name, doc in docs.items():
            await ws.send(encode_frame(Subscribe(DocId(name), doc.get_state())))
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            while pending:
                frame = decode_frame(await ws.recv(decode=False), MAX_FRAME_IN)
                if isinstance(frame, Sync) and frame.doc_id in pending:
                    docs[frame.doc_id].apply_update(frame.update)
                    pending.discard(frame.doc_id)
                elif isinstance(frame, ErrorFrame):
                    raise ConnectionError(f"verifier got ERROR {frame.code}: {frame.message}")
    return docs


async def fetch_document(protocol: Protocol, prefix: str, url: str, doc_id: str) -> pycrdt.Doc[Any]:
    """The server's copy of ``doc_id``: a new client with an empty document syncs once
    (y-websocket or Hocuspocus) and disconnects."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    wire = codec(protocol, doc_id, f"bench-verifier-{os.getpid()}", prefix)
    async with (
        connect(wire.path(url), compression=None, max_size=MAX_FRAME_IN, ping_interval=None) as ws,
        asyncio.timeout(HANDSHAKE_TIMEOUT_S),
    ):
        for message in wire.opening(doc.get_state()):
            await ws.send(message)
        while True:
            message = await ws.recv(decode=False)
            events = wire.decode(message)
            for event in events:
                if event.kind == "step1":
                    await ws.send(wire.step2(doc.get_update(event.payload)))
                elif event.kind == "error":
                    raise ConnectionError(f"verifier: {event.text}")
            step2 = [event for event in events if event.kind == "step2"]
            if step2:
                doc.apply_update(step2[0].payload)
                return doc


# -- late joiner (d) ---------------------------------------------------------------------


class _Peer:
    """A minimal relay client for the late-joiner scenario."""

    def __init__(self, doc_id: str, name: str) -> None:
        self.doc_id = doc_id
        self.name = name
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=random.getrandbits(32) or 1)
        self.text = self.doc.get(TEXT_NAME, type=pycrdt.Text)
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task[None] | None = None
        self.acked = 0
        self.ack_event = asyncio.Event()
        self.welcome = asyncio.Event()
        self.synced = asyncio.Event()
        self.sync_update_bytes = 0
        self.bytes_received = 0
        self.closing = False
        self.errors: list[str] = []
        self.times: dict[str, int] = {}

    async def open(self, url: str) -> None:
        self.ws = await connect(
            url, compression=None, max_size=MAX_FRAME_IN, ping_interval=None, close_timeout=2
        )
        self.reader = asyncio.get_running_loop().create_task(self._receive())

    async def _receive(self) -> None:
        assert self.ws is not None
        try:
            async for message in self.ws:
                self.bytes_received += len(message)
                if isinstance(message, str):
                    self.errors.append(f"{self.name}: text message received")
                    continue
                frame = decode_frame(message, MAX_FRAME_IN)
                if type(frame) is Ack:
                    self.acked = max(self.acked, frame.seq)
                    self.ack_event.set()
                elif type(frame) is Sync:
                    self.times["sync"] = time.monotonic_ns()
                    self.sync_update_bytes = len(frame.update)
                    self.doc.apply_update(frame.update)
                    self.synced.set()
                elif type(frame) is Welcome:
                    self.times["welcome"] = time.monotonic_ns()
                    self.welcome.set()
                elif type(frame) is Update:
                    self.doc.apply_update(frame.update)
                elif type(frame) is ErrorFrame:
                    self.errors.append(f"{self.name}: relay ERROR {frame.code}: {frame.message}")
        except ConnectionClosed as exc:
            if not self.closing:
                self.errors.append(f"{self.name}: connection closed: {exc}")
        except Exception as exc:  # noqa: BLE001 - reported as a FAILED run
            self.errors.append(f"{self.name}: {type(exc).__name__}: {exc}")
        finally:
            self.welcome.set()
            self.synced.set()
            self.ack_event.set()

    async def handshake(self) -> None:
        assert self.ws is not None
        self.times["hello"] = time.monotonic_ns()
        await self.ws.send(encode_frame(Hello(ReplicaId(f"bench-{self.name}-{os.getpid()}"))))
        await self.welcome.wait()
        self.times["subscribe"] = time.monotonic_ns()
        await self.ws.send(encode_frame(Subscribe(DocId(self.doc_id), self.doc.get_state())))
        await self.synced.wait()
        if self.errors or "sync" not in self.times:
            raise ConnectionError("; ".join(self.errors) or f"{self.name}: no SYNC")

    async def close(self) -> None:
        self.closing = True
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), timeout=5)
            except (TimeoutError, OSError):
                self.ws.transport.abort()
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)


def _edit_updates(peer: _Peer, edits: Sequence[Edit], start: str) -> list[bytes]:
    """Apply ``edits`` to the peer's text, one transaction per edit; the updates made."""
    captured: list[bytes] = []
    subscription = peer.doc.observe(lambda event: captured.append(event.update))
    doc, text = peer.doc, peer.text
    try:
        if start:
            text.insert(0, start)
        for pos, deleted, inserted in edits:
            with doc.transaction():
                if deleted:
                    del text[pos : pos + deleted]
                if inserted:
                    text.insert(pos, inserted)
    finally:
        doc.unobserve(subscription)
    return captured


async def run_late(spec: Spec, reader: asyncio.StreamReader) -> LateResult:
    """Scenario d: build a document through the relay, then time late joiners."""
    result = LateResult()
    if spec.trace_cache is None:
        raise ValueError("the late-joiner scenario needs --trace-cache")
    trace = load_compact(Path(spec.trace_cache))
    count = min(spec.updates, len(trace))
    edits = list(trace.edits(count))
    expected = trace.expected_text(count)
    doc_id = spec.rooms[0]
    writer = _Peer(doc_id, "writer")
    try:
        await writer.open(spec.url)
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            await writer.handshake()
        say("ready")
        command = await command_line(reader)
        if command[0] != "go":
            raise RuntimeError(f"expected go, got {command!r}")
        await _build(spec, writer, edits, trace.start_content, result)
        if str(writer.text) != expected:
            result.fail("the writer's text differs from the trace's expected text")
        result.text_length = len(expected)
        result.doc_update_bytes = len(writer.doc.get_update())
        say("built")
        while True:
            command = await command_line(reader)
            if command[0] == "join":
                join = await _join(command[1], command[2], writer, doc_id)
                result.joins.append(join)
                if join.status != "ok":
                    result.fail(f"{join.label} joiner: {join.failure}")
                say("joined")
            elif command[0] == "disconnect":
                await writer.close()
                say("disconnected")
            elif command[0] == "finish":
                break
            else:
                raise RuntimeError(f"unknown command {command!r}")
    finally:
        await writer.close()
    result.errors = writer.errors[:20]
    return result


async def _build(
    spec: Spec, writer: _Peer, edits: Sequence[Edit], start: str, result: LateResult
) -> None:
    """Send one UPDATE per edit, at most ``window`` unacknowledged; wait for every ACK."""
    assert writer.ws is not None
    updates = [u for u in _edit_updates(writer, edits, start) if u != EMPTY_UPDATE]
    # The edits were made up front (the timing below is the relay's); the content and
    # the order of the updates are exactly those of one-edit transactions.
    result.updates = len(updates)
    result.update_bytes_sent = sum(len(u) for u in updates)
    started = time.perf_counter()
    async with asyncio.timeout(spec.drain_timeout_s + spec.updates / 500):
        for seq, update in enumerate(updates, start=1):
            while seq - writer.acked > spec.window:
                writer.ack_event.clear()
                await writer.ack_event.wait()
                if writer.reader is not None and writer.reader.done():
                    raise ConnectionError("; ".join(writer.errors) or "writer disconnected")
            await writer.ws.send(encode_update(writer.doc_id, update, seq))
        while writer.acked < len(updates):
            writer.ack_event.clear()
            await writer.ack_event.wait()
            if writer.reader is not None and writer.reader.done():
                raise ConnectionError("; ".join(writer.errors) or "writer disconnected")
    result.build_s = time.perf_counter() - started


async def _join(url: str, label: str, writer: _Peer, doc_id: str) -> JoinResult:
    join = JoinResult(label)
    joiner = _Peer(doc_id, f"joiner-{label}")
    try:
        start = time.monotonic_ns()
        await joiner.open(url)
        connected = time.monotonic_ns()
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            await joiner.handshake()
        equal = str(joiner.text) == str(writer.text) and same_state(joiner.doc, writer.doc)
        done = time.monotonic_ns()
        times = joiner.times
        join.connect_ms = (connected - start) / 1e6
        join.welcome_ms = (times["welcome"] - times["hello"]) / 1e6
        join.sync_ms = (times["sync"] - times["subscribe"]) / 1e6
        join.apply_ms = (done - times["sync"]) / 1e6
        join.total_ms = (done - start) / 1e6
        join.bytes_received = joiner.bytes_received
        join.sync_update_bytes = joiner.sync_update_bytes
        join.text_length = len(str(joiner.text))
        if not equal:
            join.status = "FAILED"
            join.failure = "the joiner's document differs from the writer's after SYNC"
    except (OSError, ConnectionError, TimeoutError) as exc:
        join.status = "FAILED"
        join.failure = f"{type(exc).__name__}: {exc}"
    finally:
        await joiner.close()
    return join


# -- command line ------------------------------------------------------------------------


async def _main_async(spec: Spec, out: Path) -> None:
    reader = await stdin_lines()
    result: RoomsResult | LateResult
    if spec.scenario == "d":
        result = await run_late(spec, reader)
    else:
        result, latencies, ack_latencies = await run_rooms(spec, reader)
        with latency_path(out).open("wb") as fh:
            latencies.tofile(fh)
        with latency_path(out, "ack").open("wb") as fh:
            ack_latencies.tofile(fh)
    out.write_text(json.dumps(asdict(result)), encoding="utf-8")
    say("done")


def latency_path(out: Path, kind: str = "lat") -> Path:
    """Where a rooms run writes its latencies (int64 nanoseconds, machine byte order):
    ``lat``, edit to remote observe; ``ack``, send to ACK (relay)."""
    return out.with_suffix(f".{kind}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.loadgen`` (started by the orchestrator)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.loadgen",
        description="Load-generator process of the relay benchmark, driven through "
        "stdin/stdout by it. To run the benchmark use: python -m benchmarks --only relay",
    )
    parser.add_argument(
        "--spec", type=Path, required=True, help="JSON Spec written by the orchestrator"
    )
    parser.add_argument("--out", type=Path, required=True, help="where to write the result JSON")
    args = parser.parse_args(argv)
    spec = Spec(**json.loads(args.spec.read_text(encoding="utf-8")))
    random.seed(spec.seed or None)
    asyncio.run(_main_async(spec, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
