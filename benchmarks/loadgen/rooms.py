"""Scenarios a, b and c in one load-generator process: connect every client, write
through the measured window, drain, check that every room converged."""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Sequence

import pycrdt

from ..clients.server_copy import fetch_document, fetch_native_documents
from ..harness.commands import command_line, say
from ..internals import same_state
from .client import Client, Room, Stats
from .shared import SharedCounters, client_id_for
from .spec import MAP_NAME, RoomsResult, Spec

__all__ = ["run_rooms"]

CONNECT_BATCH = 25
"""Connections opened concurrently (the servers' listen backlog is 100)."""


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
        await _connect_all(clients, spec)
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


async def _connect_all(clients: Sequence[Client], spec: Spec) -> None:
    """Open every connection, at most :data:`CONNECT_BATCH` at a time; the first client of
    each room before the others (pycrdt-websocket 0.16 deadlocks when two connections
    race to create the same room: the second waits for the room's start lock forever)."""
    first = [client for client in clients if client is client.room.clients[0]]
    rest = [client for client in clients if client is not client.room.clients[0]]
    for group in (first, rest):
        for start in range(0, len(group), CONNECT_BATCH):
            batch = group[start : start + CONNECT_BATCH]
            await asyncio.gather(*(client.open(spec.url_of(client.room.slot)) for client in batch))


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


def _drained(rooms: Sequence[Room], clients: Sequence[Client]) -> bool:
    if any(c.in_flight() for c in clients):
        return False
    return all(room.received_all(c) for room in rooms if room.remote for c in room.clients)


async def _drain(spec: Spec, rooms: Sequence[Room], clients: Sequence[Client]) -> bool:
    """Wait until every update reached every peer (and, native relay, was acknowledged)."""
    deadline = time.monotonic() + spec.drain_timeout_s
    while time.monotonic() < deadline:
        if _drained(rooms, clients):
            return True
        if any(c.disconnected for c in clients):
            return False
        await asyncio.sleep(0.01)
    return False


def _drain_failure(rooms: Sequence[Room], clients: Sequence[Client]) -> str:
    undelivered = sum(c.undelivered() for c in clients)
    unacked = sum(c.sent - c.acked for c in clients if c.native)
    missing = sum(
        1 for room in rooms if room.remote for c in room.clients if not room.received_all(c)
    )
    closed = sum(1 for c in clients if c.disconnected)
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
    docs = {}
    if spec.protocol == "native":
        by_url: dict[str, list[str]] = {}
        for room in rooms:
            by_url.setdefault(spec.url_of(room.slot), []).append(room.name)
        for url, names in by_url.items():
            docs.update(await fetch_native_documents(url, names))
    else:
        for room in rooms:
            url = spec.url_of(room.slot)
            docs[room.name] = await fetch_document(spec.protocol, spec.prefix, url, room.name)
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
