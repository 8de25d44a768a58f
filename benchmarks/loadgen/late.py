"""Scenario d in one load-generator process: a writer builds a document through the
relay (native protocol), then late joiners subscribe with an empty state vector."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path
from typing import Any

import pycrdt
from websockets.asyncio.client import ClientConnection

from ..clients.connection import HANDSHAKE_TIMEOUT_S, Connection
from ..harness.commands import command_line, say
from ..internals import same_state
from ..trace import load_compact, trace_updates
from ..wire import EMPTY_UPDATE, decode_native, native_hello, native_subscribe, native_update
from .spec import TEXT_NAME, JoinResult, LateResult, Spec

__all__ = ["NativePeer", "run_late"]


class NativePeer(Connection):
    """A minimal relay client for the late-joiner scenario: HELLO, then SUBSCRIBE, each
    timed; counts the payload bytes it receives and the ACKs."""

    def __init__(self, doc_id: str, name: str) -> None:
        super().__init__(name)
        self.doc_id = doc_id
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=random.getrandbits(32) or 1)
        self.text = self.doc.get(TEXT_NAME, type=pycrdt.Text)
        self.acked = 0
        self.ack_event = asyncio.Event()
        self.welcome = asyncio.Event()
        self.synced = asyncio.Event()
        self.sync_update_bytes = 0
        self.bytes_received = 0
        self.times: dict[str, int] = {}

    async def open(self, url: str) -> None:
        """Connect (no handshake yet)."""
        await self.connect(url)

    async def receive(self, ws: ClientConnection) -> None:
        async for message in ws:
            self.bytes_received += len(message)
            if isinstance(message, str):
                self.error("text message received")
                continue
            event = decode_native(message)
            if event.kind == "ack":
                self.acked = max(self.acked, event.seq)
                self.ack_event.set()
            elif event.kind == "step2":
                self.times["sync"] = time.monotonic_ns()
                self.sync_update_bytes = len(event.payload)
                self.doc.apply_update(event.payload)
                self.synced.set()
            elif event.kind == "welcome":
                self.times["welcome"] = time.monotonic_ns()
                self.welcome.set()
            elif event.kind == "update":
                self.doc.apply_update(event.payload)
            elif event.kind == "error":
                self.error(event.text)

    def stopped(self) -> None:
        self.welcome.set()
        self.synced.set()
        self.ack_event.set()

    async def handshake(self) -> None:
        """HELLO until WELCOME, SUBSCRIBE with our state vector until SYNC."""
        assert self.ws is not None
        self.times["hello"] = time.monotonic_ns()
        await self.ws.send(native_hello(f"bench-{self.name}-{os.getpid()}"))
        await self.welcome.wait()
        self.times["subscribe"] = time.monotonic_ns()
        await self.ws.send(native_subscribe(self.doc_id, self.doc.get_state()))
        await self.synced.wait()
        if self.errors or "sync" not in self.times:
            raise ConnectionError("; ".join(self.errors) or f"{self.name}: no SYNC")

    async def wait_acked(self, seq: int) -> None:
        """Until every update up to ``seq`` is acknowledged."""
        while self.acked < seq:
            self.ack_event.clear()
            await self.ack_event.wait()
            if self.disconnected:
                raise ConnectionError("; ".join(self.errors) or "writer disconnected")


async def run_late(spec: Spec, reader: asyncio.StreamReader) -> LateResult:
    """Scenario d: build a document through the relay, then time late joiners."""
    result = LateResult()
    if spec.trace_cache is None:
        raise ValueError("the late-joiner scenario needs --trace-cache")
    trace = load_compact(Path(spec.trace_cache))
    count = min(spec.updates, len(trace))
    expected = trace.expected_text(count)
    doc_id = spec.rooms[0]
    writer = NativePeer(doc_id, "writer")
    try:
        await writer.open(spec.url)
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            await writer.handshake()
        say("ready")
        command = await command_line(reader)
        if command[0] != "go":
            raise RuntimeError(f"expected go, got {command!r}")
        # The edits are made up front (the timing is the relay's); the content and the
        # order of the updates are exactly those of one-edit transactions.
        updates = trace_updates(writer.doc, writer.text, trace, count)
        await _build(spec, writer, [u for u in updates if u != EMPTY_UPDATE], result)
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


async def _build(spec: Spec, writer: NativePeer, updates: list[bytes], result: LateResult) -> None:
    """Send one UPDATE per edit, at most ``window`` unacknowledged; wait for every ACK."""
    assert writer.ws is not None
    result.updates = len(updates)
    result.update_bytes_sent = sum(len(u) for u in updates)
    started = time.perf_counter()
    async with asyncio.timeout(spec.drain_timeout_s + spec.updates / 500):
        for seq, update in enumerate(updates, start=1):
            await writer.wait_acked(seq - spec.window)
            await writer.ws.send(native_update(writer.doc_id, update, seq))
        await writer.wait_acked(len(updates))
    result.build_s = time.perf_counter() - started


async def _join(url: str, label: str, writer: NativePeer, doc_id: str) -> JoinResult:
    join = JoinResult(label)
    joiner = NativePeer(doc_id, f"joiner-{label}")
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
