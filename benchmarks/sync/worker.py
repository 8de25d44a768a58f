"""The sync group's worker process: replays the trace through one server, takes
replicas offline at their lag, then times their catch-up and the late joiners.

Driven by the orchestrator through :func:`benchmarks.harness.commands.serve_commands`:
``build`` (``built``), ``catchup <lag>`` (``caught-up``), ``join <n>`` (``joined``),
``finish``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..clients.document import DocClient
from ..harness.commands import serve_commands
from ..internals import same_state
from ..servers import SERVERS
from ..trace import load_compact, trace_updates
from ..wire import EMPTY_UPDATE, Codec
from .params import STEP_TIMEOUT_S

__all__ = ["Worker", "worker_main"]


@dataclass(slots=True)
class Worker:
    """The worker's state between the orchestrator's commands."""

    spec: dict[str, Any]
    result: dict[str, Any] = field(default_factory=dict)
    writer: DocClient | None = None
    observer: DocClient | None = None
    replicas: dict[int, DocClient] = field(default_factory=dict)
    offline_state: dict[int, bytes] = field(default_factory=dict)
    offline_sent: dict[int, int] = field(default_factory=dict)
    updates: list[bytes] = field(default_factory=list)
    expected_text: str = ""

    def wire(self, name: str) -> Codec:
        """The codec of a new client ``name`` of the document."""
        info = SERVERS[self.spec["server"]]
        return info.codec(self.spec["doc_id"], f"bench-sync-{os.getpid()}-{name}")

    async def close(self) -> None:
        """Close every client still connected."""
        for client in (self.writer, self.observer, *self.replicas.values()):
            if client is not None:
                await client.close()


async def build(worker: Worker) -> None:
    """Replay the trace through the server; replicas go offline at their lag."""
    spec = worker.spec
    url = spec["url"]
    trace = load_compact(Path(spec["trace_cache"]))
    count = len(trace) if not spec["edits"] else min(spec["edits"], len(trace))
    worker.expected_text = trace.end_content if count == len(trace) else trace.expected_text(count)
    writer = DocClient(worker.wire("writer"), "writer")
    observer = DocClient(worker.wire("observer"), "observer")
    worker.writer, worker.observer = writer, observer
    lags = sorted((lag for lag in spec["lags"] if lag < count), reverse=True)
    for lag in lags:
        worker.replicas[lag] = DocClient(worker.wire(f"lag{lag}"), f"replica-{lag}")
    clients = [writer, observer, *worker.replicas.values()]
    for client in clients:  # one at a time (pycrdt-websocket: see loadgen.rooms._connect_all)
        await client.open(url)
        await client.wait_synced(60)
    # One transaction per edit, made up front (the timing below is the server's).
    updates = [u for u in trace_updates(writer.doc, writer.text, trace, count) if u != EMPTY_UPDATE]
    worker.updates = updates
    if str(writer.text) != worker.expected_text:
        raise RuntimeError("the writer's text differs from the trace's expected text")
    window = spec["window"]
    checkpoints = {len(updates) - lag: lag for lag in lags if lag < len(updates)}
    started = time.perf_counter()
    for seq, update in enumerate(updates, start=1):
        await observer.wait_received(seq - window, writer)
        await writer.send(writer.wire.update(update, seq))
        lag = checkpoints.get(seq)
        if lag is not None:
            await _take_offline(worker, lag, seq)
    await observer.wait_received(len(updates))
    build_s = time.perf_counter() - started
    if str(observer.text) != worker.expected_text or not same_state(observer.doc, writer.doc):
        raise RuntimeError("the observer's document differs from the writer's after the build")
    worker.result.update(
        {
            "edits": count,
            "updates": len(updates),
            "update_bytes": sum(len(u) for u in updates),
            "build_s": build_s,
            "build_updates_per_s": len(updates) / build_s if build_s else None,
            "doc_update_bytes": len(writer.doc.get_update()),
            "text_length": len(worker.expected_text),
        }
    )


async def _take_offline(worker: Worker, lag: int, seq: int) -> None:
    """Wait until the replica has the first ``seq`` updates, then disconnect it."""
    replica = worker.replicas[lag]
    await replica.wait_received(seq)
    await replica.close()
    worker.offline_state[lag] = replica.doc.get_state()
    worker.offline_sent[lag] = seq


async def catch_up(worker: Worker, lag: int) -> dict[str, Any]:
    """The replica ``lag`` edits behind reconnects and syncs."""
    writer = worker.writer
    assert writer is not None
    old = worker.replicas[lag]
    missed = worker.updates[worker.offline_sent[lag] :]
    replica = DocClient(worker.wire(f"lag{lag}-back"), f"replica-{lag}", doc=old.doc)
    started = time.monotonic_ns()
    await replica.open(worker.spec["url"])
    await replica.wait_synced(STEP_TIMEOUT_S)
    equal = str(replica.text) == str(writer.text) and same_state(replica.doc, writer.doc)
    done = time.monotonic_ns()
    entry = {
        "lag": lag,
        "missed_updates": len(missed),
        "time_ms": (done - started) / 1e6,
        "bytes_received": replica.bytes_in,
        "bytes_sent": replica.bytes_out,
        "minimal_diff_bytes": len(writer.doc.get_update(worker.offline_state[lag])),
        "missed_update_bytes": sum(len(u) for u in missed),
        "doc_update_bytes": len(writer.doc.get_update()),
        "equal": equal,
    }
    await replica.close()
    return entry


async def late_join(worker: Worker, number: int) -> dict[str, Any]:
    """A new client with an empty document until its text is the trace's final text."""
    joiner = DocClient(worker.wire(f"joiner{number}"), f"joiner-{number}")
    started = time.monotonic_ns()
    await joiner.open(worker.spec["url"])
    await joiner.wait_synced(STEP_TIMEOUT_S)
    text = str(joiner.text)
    done = time.monotonic_ns()
    assert worker.writer is not None
    entry = {
        "number": number,
        "time_ms": (done - started) / 1e6,
        "bytes_received": joiner.bytes_in,
        "bytes_sent": joiner.bytes_out,
        "equal": text == worker.expected_text and same_state(joiner.doc, worker.writer.doc),
    }
    await joiner.close()
    return entry


async def worker_main(spec: dict[str, Any], out: Path) -> None:
    """The worker process: serve the orchestrator's commands, then write the result."""
    worker = Worker(spec, {"status": "ok", "failure": None, "catchups": [], "joins": []})

    async def on_build(_: list[str]) -> str:
        await build(worker)
        return "built"

    async def on_catchup(args: list[str]) -> str:
        worker.result["catchups"].append(await catch_up(worker, int(args[0])))
        return "caught-up"

    async def on_join(args: list[str]) -> str:
        worker.result["joins"].append(await late_join(worker, int(args[0])))
        return "joined"

    handlers = {"build": on_build, "catchup": on_catchup, "join": on_join}
    await serve_commands(handlers, worker.result, out, worker.close)
