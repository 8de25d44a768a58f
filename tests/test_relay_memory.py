"""What the relay keeps in memory: nothing of a closed connection, and freed memory
handed back after rooms unload (:mod:`relay.memory`)."""

from __future__ import annotations

import asyncio
import gc
import logging
import platform
import weakref
from collections.abc import Sequence
from pathlib import Path

import pytest
import websockets

import relay as relay_package
from crdtsync.ids import ReplicaId
from crdtsync.sync.protocol import Hello, encode_frame
from relay import Relay
from relay.memory import Trimmer, malloc_trim
from relay.ondemand import OnDemand
from relay.room import Write
from relay.session import RelaySession

from .test_yjs_relay import YClient


async def test_a_closed_connection_is_not_held_by_the_last_commit(relay: Relay) -> None:
    """The group-commit loop held its last batch of writes while it waited for the
    next one; each write holds its sender's session, and the session the whole
    connection (websockets' objects, buffers, tasks): a connection whose update was
    the last one stored stayed in memory until someone else wrote."""
    committed = asyncio.Event()
    closed = asyncio.Event()
    sessions: list[weakref.ref[RelaySession]] = []
    metrics = relay.persistence.on_commit

    def on_commit(seconds: float, writes: Sequence[Write]) -> None:
        if metrics is not None:
            metrics(seconds, writes)
        committed.set()

    def on_disconnect(session: RelaySession) -> None:
        sessions.append(weakref.ref(session))
        closed.set()

    relay.persistence.on_commit = on_commit
    relay.on_disconnect = on_disconnect
    client = await YClient.connect(f"{relay.url}/yjs/doc", client_id=7)
    await client.edit(0, "hello")
    await asyncio.wait_for(committed.wait(), 10)
    await client.ws.close()
    await asyncio.wait_for(closed.wait(), 10)
    del client
    gc.collect()
    assert [ref() for ref in sessions] == [None]


async def test_an_idle_connection_holds_no_task_of_its_own_nor_its_headers(relay: Relay) -> None:
    """An idle connection costs websockets' own handler and keepalive tasks only: the
    relay's writer and sync pump run only while they have work, and the opening
    handshake's headers are let go once the connection is open."""
    async with websockets.connect(relay.url, user_agent_header="x" * 500) as ws:
        await ws.send(encode_frame(Hello(ReplicaId("idle"))))
        await asyncio.wait_for(ws.recv(), 10)  # WELCOME: the relay's handler runs
        [server_side] = relay.connections
        relay_dir = str(Path(relay_package.__file__).parent)
        ours = [  # the handler's task runs websockets' coroutine, which awaits ours
            task
            for task in asyncio.all_tasks()
            if getattr(task.get_coro(), "cr_code", None) is not None
            and task.get_coro().cr_code.co_filename.startswith(relay_dir)  # type: ignore[union-attr]
            and task.get_name() != "relay janitor"
            and "readiness" not in task.get_name()
            and "storage" not in task.get_name()
        ]
        assert ours == []
        assert server_side.request is not None and not server_side.request.headers
        assert server_side.response is not None and not server_side.response.headers
        assert server_side.request.path == "/"
        # Over 30 attributes, an instance's __dict__ is no longer a compact split table.
        assert len(vars(server_side)) <= 30, sorted(vars(server_side))


async def test_on_demand_runs_its_step_once_per_set_and_only_while_there_is_work() -> None:
    runs: list[int] = []
    gate, entered = asyncio.Event(), asyncio.Event()
    stop_after = 3

    async def step() -> bool:
        runs.append(len(runs))
        entered.set()
        await gate.wait()
        return len(runs) >= stop_after

    work = OnDemand(step)
    await work.join()  # nothing to wait for
    work.set()
    work.set()  # before it runs: still one run
    await entered.wait()
    assert runs == [0]
    work.set()  # during the run: one more afterwards
    work.set()
    gate.set()
    await work.join()
    assert runs == [0, 1] and not work.done()
    work.set()
    await work.join()
    assert runs == [0, 1, 2] and work.done()  # step returned True: no more runs
    work.set()
    await work.join()
    assert runs == [0, 1, 2]
    await work.stop()


async def test_on_demand_stop_cancels_the_run_and_raises_what_the_step_raised() -> None:
    started = asyncio.Event()

    async def forever() -> bool:
        started.set()
        await asyncio.Event().wait()
        return True

    work = OnDemand(forever)
    work.set()
    await started.wait()
    await work.stop()
    assert work.done()

    async def broken() -> bool:
        raise OSError("broken")

    failing = OnDemand(broken)
    failing.set()
    with pytest.raises(OSError, match="broken"):
        await failing.join()
    assert failing.done()
    with pytest.raises(OSError, match="broken"):
        await failing.stop()


def test_trimmer_trims_after_rooms_unload_at_most_once_per_interval() -> None:
    now = [100.0]
    calls: list[float] = []

    def trim() -> bool:
        calls.append(now[0])
        return True

    trimmer = Trimmer(interval=1.0, clock=lambda: now[0], trim=trim)
    assert trimmer.after_unload(0) is None  # nothing unloaded: no trim
    assert trimmer.after_unload(3) is True
    now[0] += 0.5
    assert trimmer.after_unload(2) is None  # too soon: remembered
    now[0] += 0.6
    assert trimmer.after_unload(0) is True  # the remembered unload, trimmed now
    now[0] += 5
    assert trimmer.after_unload(0) is None
    assert calls == [100.0, 101.1]
    assert trimmer.trims == 2


def test_malloc_trim_runs_where_the_c_library_is_glibc(caplog: pytest.LogCaptureFixture) -> None:
    released = malloc_trim()
    if platform.libc_ver()[0] == "glibc":
        assert isinstance(released, bool)
    else:
        assert released is None
    with caplog.at_level(logging.DEBUG, logger="relay.memory"):
        Trimmer().after_unload(1)
    assert "malloc_trim(0) after unloading rooms returned" in caplog.text


async def test_the_janitor_trims_after_rooms_unload(tmp_path: Path) -> None:
    trimmed = asyncio.Event()

    def trim() -> bool:
        trimmed.set()
        return True

    async with Relay(f"sqlite:///{tmp_path}/relay.db", port=0, idle_timeout=0.1) as relay:
        relay._trimmer = Trimmer(trim=trim)
        client = await YClient.connect(f"{relay.url}/yjs/doc", client_id=3)
        await client.edit(0, "x")
        await client.ws.close()
        await asyncio.wait_for(trimmed.wait(), 10)
        assert "doc" not in relay.hub.rooms
