"""One load-generator client: writing with a window or on a schedule, receiving and
checking every update, and the room and counters it shares with the others."""

from __future__ import annotations

import asyncio
import os
import random
import time
from array import array
from collections import deque
from contextlib import suppress
from typing import Any

import pycrdt
from websockets.asyncio.client import ClientConnection

from ..clients.connection import HANDSHAKE_TIMEOUT_S, Connection
from ..wire import EMPTY_UPDATE, Codec, codec, update_client_id
from .shared import SharedCounters, client_id_for
from .spec import MAP_NAME, Spec

__all__ = ["Client", "Room", "Stats"]

REMOTE_POLL_S = 0.0005
"""How often a writer blocked on peers in another process looks at the shared counters."""


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

    def received_all(self, client: Client) -> bool:
        """True once ``client`` saw everything every other (stopped) writer sent."""
        return all(
            self.done(sender) and self.seen(client.index, sender) == self.sent(sender)
            for sender in range(self.size)
            if sender != client.index
        )


class Client(Connection):
    """One replica: a pycrdt document, a websocket, the writer's window bookkeeping."""

    def __init__(self, room: Room, index: int, spec: Spec, stats: Stats) -> None:
        self.key = f"c{index}"
        super().__init__(f"{self.key}@{room.name}")
        self.room = room
        self.index = index
        self.stats = stats
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
        room.clients.append(self)

    def error(self, message: str) -> None:
        self.stats.error(f"{self.name}: {message}")

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

    async def receive(self, ws: ClientConnection) -> None:
        """Decode and apply every message until the connection closes."""
        stats = self.stats
        decode = self.codec.decode
        async for message in ws:
            if isinstance(message, str):
                self.error("text message received")
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
                    await ws.send(self.codec.step2(self.doc.get_update(event.payload)))
                elif kind == "error":
                    self.error(event.text)

    def stopped(self) -> None:
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
                self.error("update from an unknown client")
            return
        if sender == self.index:
            stats.echoes += 1  # our own update, sent back by the server
            return
        self.doc.apply_update(update)
        value = self.map.get(f"c{sender}")
        now = time.monotonic_ns()
        if not isinstance(value, str):
            self.error(f"no value for c{sender}")
            return
        counter_text, _, sent_text = value.partition(" ")
        counter = int(counter_text)
        seen_index = self._seen_base + sender
        previous = self._values[seen_index]
        if counter != previous + 1:
            stats.order_errors += 1
            self.error(f"from c{sender} got #{counter} after #{previous}")
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
        ws = await self.connect(self.codec.path(url), open_timeout=HANDSHAKE_TIMEOUT_S)
        for message in self.codec.opening(self.doc.get_state()):
            await ws.send(message)
        if self.codec.handshake:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                await self.synced.wait()
            if self.disconnected:
                raise ConnectionError(f"{self.name}: closed before sync")

    async def close(self) -> None:
        """Stop writing, close the connection and stop the reader."""
        self.closing = True
        self.wake.set()
        await super().close()
