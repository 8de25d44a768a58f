"""The sync benchmark: catching up after being offline, and joining late, on every server.

For each server that holds documents (our relay through both protocols and the
peers; the bare forwarder stores nothing), one worker process
(``python -m benchmarks.sync --worker``) connects over loopback:

- a **writer** that replays the automerge-paper editing trace through the
  server, one transaction (one update, one message) per edit, never more than
  ``window`` updates ahead of an online **observer** (a client that receives
  every update: the server really forwarded them);
- one **replica per lag** (1,000 / 10,000 / 100,000 edits), online from the
  start; when the writer is ``lag`` edits from the end it pauses until that
  replica has everything so far, the replica disconnects (its state vector is
  kept) and the writer goes on. At the end each replica reconnects and syncs
  with its protocol (native: SUBSCRIBE with its state vector, SYNC back;
  y-websocket / Hocuspocus: sync step 1 both ways, step 2 both ways): *time to
  synced* runs from the start of its TCP connection until its text equals the
  writer's, with the bytes of websocket payloads each way. The minimal diff is
  ``len(writer_doc.get_update(replica_state_vector))`` (pycrdt); resending the
  history would be the missed updates themselves, or the whole document;
- **late joiners**: a new client with an empty document, until its text is the
  trace's final text (checked against the trace's ``endContent``, or an
  independent replay for a prefix).

The server is pinned to one core, the worker to another; the orchestrator reads
the server's CPU (threads' schedstat) around every catch-up and join, and its
peak RSS. A run whose texts or states differ is FAILED, not a number.

One server by hand::

    python -m benchmarks.sync --server relay --edits 3000 --lags 1000 --out run.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pycrdt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from crdtsync.statevector import same_state

from . import Mode, RunOptions
from .loadgen import EMPTY_UPDATE, command_line, say, stdin_lines, update_client_id
from .peers import ensure as ensure_peers
from .procs import WorkerProcess, process_cpu_ns_threads, tail
from .relay import Placement, load_average, own_affinity, peer_versions, prepare_trace
from .report import fmt_float, fmt_int, machine_info, markdown_table, now_iso, write_results
from .servers import CRDT_SERVERS, SERVERS, ServerProcess, available
from .trace import DEFAULT_TRACE, load_compact
from .wire import MAX_FRAME_IN, Codec

__all__ = ["GOALS", "Params", "main", "run"]

GROUP = "sync"
TEXT = "text"
EN_DASH = "\N{EN DASH}"
STEP_TIMEOUT_S = 300.0


@dataclass(frozen=True, slots=True)
class Params:
    """Sizes and repetitions for one mode."""

    mode: Mode
    edits: int
    """Edits of the trace replayed through the server (0: all of them)."""
    lags: tuple[int, ...]
    joins: int
    """Late joiners, one after the other (the figures are their median)."""
    repeat: int
    window: int = 100
    servers: tuple[str, ...] = CRDT_SERVERS

    @classmethod
    def for_mode(cls, mode: Mode) -> Params:
        """``quick``: 20,000 edits, lags 1,000 and 10,000; ``full``: the whole trace
        (259,778 edits), lags up to 100,000, three joiners."""
        if mode == "quick":
            return cls(mode, edits=20_000, lags=(1_000, 10_000), joins=1, repeat=1)
        return cls(mode, edits=0, lags=(1_000, 10_000, 100_000), joins=3, repeat=1)


@dataclass(frozen=True, slots=True)
class Goal:
    """A target from the issue (reported, never asserted)."""

    key: str
    description: str
    target: str


GOALS = (
    Goal(
        "catchup_bytes", "catch-up bytes received / minimal diff (every lag, our relay)", "≤ 1.2x"
    ),
    Goal("late_join", "late-joiner time to synced, our relay / pycrdt-websocket", "≤ 1.0x"),
)


# -- the worker (one server, one run) ------------------------------------------------------


class DocClient:
    """One document over one connection, any protocol; counts payload bytes each way."""

    def __init__(self, wire: Codec, name: str, doc: pycrdt.Doc[Any] | None = None) -> None:
        self.wire = wire
        self.name = name
        self.doc: pycrdt.Doc[Any] = doc or pycrdt.Doc(client_id=random.getrandbits(32) or 1)
        self.text = self.doc.get(TEXT, type=pycrdt.Text)
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()
        self.progress = asyncio.Event()
        self.received = 0
        """Updates received from others (echoes of our own not counted)."""
        self.bytes_in = 0
        self.bytes_out = 0
        self.errors: list[str] = []
        self.closing = False

    async def open(self, url: str) -> None:
        """Connect and send the protocol's opening (with the document's state vector)."""
        self.ws = await connect(
            self.wire.path(url),
            compression=None,
            max_size=MAX_FRAME_IN,
            ping_interval=None,
            open_timeout=30,
            close_timeout=2,
        )
        self.reader = asyncio.get_running_loop().create_task(self._receive())
        for message in self.wire.opening(self.doc.get_state()):
            await self.send(message)

    async def send(self, message: bytes) -> None:
        """Send one message, counting its bytes."""
        assert self.ws is not None
        self.bytes_out += len(message)
        await self.ws.send(message)

    async def _receive(self) -> None:
        assert self.ws is not None
        own = self.doc.client_id
        try:
            async for message in self.ws:
                if isinstance(message, str):
                    self.errors.append(f"{self.name}: text message")
                    continue
                self.bytes_in += len(message)
                for event in self.wire.decode(message):
                    if event.kind == "update":
                        if event.payload == EMPTY_UPDATE or update_client_id(event.payload) == own:
                            continue  # an echo of our own update, or nothing
                        self.doc.apply_update(event.payload)
                        self.received += 1
                        self.progress.set()
                    elif event.kind == "step1":
                        await self.send(self.wire.step2(self.doc.get_update(event.payload)))
                    elif event.kind == "step2":
                        self.doc.apply_update(event.payload)
                        self.synced.set()
                    elif event.kind == "error":
                        self.errors.append(f"{self.name}: {event.text}")
        except ConnectionClosed as exc:
            if not self.closing:
                self.errors.append(f"{self.name}: connection closed: {exc}")
        except Exception as exc:  # noqa: BLE001 - reported as a FAILED run
            self.errors.append(f"{self.name}: {type(exc).__name__}: {exc}")
        finally:
            self.synced.set()
            self.progress.set()

    async def wait_synced(self, timeout: float) -> None:
        """Until the server's answer to our state vector is applied."""
        async with asyncio.timeout(timeout):
            await self.synced.wait()
        if self.errors:
            raise ConnectionError(self.errors[0])

    async def close(self) -> None:
        """Close the connection and stop the reader."""
        self.closing = True
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), timeout=5)
            except (TimeoutError, OSError):
                self.ws.transport.abort()
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)


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
        info = SERVERS[self.spec["server"]]
        return info.codec(self.spec["doc_id"], f"bench-sync-{os.getpid()}-{name}")


async def _build(worker: Worker) -> None:
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
    for client in clients:  # one at a time (pycrdt-websocket: see loadgen._connect_all)
        await client.open(url)
        await client.wait_synced(60)
    # One transaction per edit, made up front (the timing below is the server's).
    captured: list[bytes] = []
    subscription = writer.doc.observe(lambda event: captured.append(event.update))
    if trace.start_content:
        writer.text.insert(0, trace.start_content)
    for pos, deleted, inserted in trace.edits(count):
        with writer.doc.transaction():
            if deleted:
                del writer.text[pos : pos + deleted]
            if inserted:
                writer.text.insert(pos, inserted)
    writer.doc.unobserve(subscription)
    updates = [u for u in captured if u != EMPTY_UPDATE]
    worker.updates = updates
    if str(writer.text) != worker.expected_text:
        raise RuntimeError("the writer's text differs from the trace's expected text")
    window = spec["window"]
    checkpoints = {len(updates) - lag: lag for lag in lags if lag < len(updates)}
    started = time.perf_counter()
    for seq, update in enumerate(updates, start=1):
        while seq - observer.received > window:
            observer.progress.clear()
            await asyncio.wait_for(observer.progress.wait(), 60)
            if observer.errors or writer.errors:
                raise ConnectionError((observer.errors + writer.errors)[0])
        await writer.send(writer.wire.update(update, seq))
        lag = checkpoints.get(seq)
        if lag is not None:
            await _take_offline(worker, lag, seq)
    while observer.received < len(updates):
        observer.progress.clear()
        await asyncio.wait_for(observer.progress.wait(), 60)
        if observer.errors:
            raise ConnectionError(observer.errors[0])
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
    while replica.received < seq:
        replica.progress.clear()
        await asyncio.wait_for(replica.progress.wait(), 60)
        if replica.errors:
            raise ConnectionError(replica.errors[0])
    await replica.close()
    worker.offline_state[lag] = replica.doc.get_state()
    worker.offline_sent[lag] = seq


async def _catch_up(worker: Worker, lag: int) -> dict[str, Any]:
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


async def _late_join(worker: Worker, number: int) -> dict[str, Any]:
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


async def _worker_main(spec: dict[str, Any], out: Path) -> None:
    reader = await stdin_lines()
    worker = Worker(spec, {"status": "ok", "failure": None, "catchups": [], "joins": []})
    try:
        say("ready")
        while True:
            command = await command_line(reader)
            if command[0] == "build":
                await _build(worker)
                say("built")
            elif command[0] == "catchup":
                entry = await _catch_up(worker, int(command[1]))
                worker.result["catchups"].append(entry)
                say("caught-up")
            elif command[0] == "join":
                entry = await _late_join(worker, int(command[1]))
                worker.result["joins"].append(entry)
                say("joined")
            elif command[0] == "finish":
                break
    except (OSError, ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        worker.result["status"] = "FAILED"
        worker.result["failure"] = f"{type(exc).__name__}: {exc}"
        say("failed")
    finally:
        for client in (worker.writer, worker.observer, *worker.replicas.values()):
            if client is not None:
                await client.close()
    out.write_text(json.dumps(worker.result), encoding="utf-8")
    say("done")


# -- the orchestrator --------------------------------------------------------------------------


def run_server(
    server_kind: str, params: Params, placement: Placement, work: Path, trace_cache: Path
) -> dict[str, Any]:
    """One run against one server: build, every catch-up, the late joiners."""
    run: dict[str, Any] = {"server": server_kind, "status": "ok", "failure": None}
    server = ServerProcess(server_kind, work, placement.server_cpus)
    worker: WorkerProcess | None = None
    try:
        url = server.start()
        spec = {
            "server": server_kind,
            "url": url,
            "doc_id": "bench-sync",
            "edits": params.edits,
            "lags": list(params.lags),
            "window": params.window,
            "trace_cache": str(trace_cache),
        }
        cpus = placement.loadgen_cpus[0] if placement.loadgen_cpus else None
        worker = WorkerProcess("benchmarks.sync", spec, work, "sync-worker", cpus)
        worker.start()
        worker.expect("ready", 60)
        run["load_average"] = load_average()
        worker.send("build")
        _expect(worker, "built", STEP_TIMEOUT_S * 10)
        run["build_peak_rss_mb"] = server.peak_rss_mb()
        cpu: dict[str, float | None] = {}
        for lag in params.lags:
            before = process_cpu_ns_threads(server.pid)
            worker.send(f"catchup {lag}")
            _expect(worker, "caught-up", STEP_TIMEOUT_S)
            cpu[f"catchup-{lag}"] = _cpu_ms(before, process_cpu_ns_threads(server.pid))
        for number in range(params.joins):
            before = process_cpu_ns_threads(server.pid)
            worker.send(f"join {number}")
            _expect(worker, "joined", STEP_TIMEOUT_S)
            cpu[f"join-{number}"] = _cpu_ms(before, process_cpu_ns_threads(server.pid))
        worker.send("finish")
        worker.expect("done", 60)
        run["server_cpu_ms"] = cpu
        run["server_peak_rss_mb"] = server.peak_rss_mb()
        run.update(worker.result())
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        run["status"] = "FAILED"
        run["failure"] = f"{type(exc).__name__}: {exc}"
        if worker is not None and worker.out.exists():
            part = worker.result()
            run["failure"] = part.get("failure") or run["failure"]
    finally:
        if worker is not None:
            worker.stop()
        run["server_exit"] = server.stop()
    for entry in run.get("catchups", []) + run.get("joins", []):
        if not entry["equal"] and run["status"] == "ok":
            run["status"] = "FAILED"
            run["failure"] = "a replica's document differs from the writer's after syncing"
    if run["status"] == "ok" and run["server_exit"] not in (0, None):
        run["status"] = "FAILED"
        run["failure"] = f"the server exited with {run['server_exit']}: {tail(server.log)}"
    for entry in run.get("catchups", []):
        entry["server_cpu_ms"] = run.get("server_cpu_ms", {}).get(f"catchup-{entry['lag']}")
    for entry in run.get("joins", []):
        entry["server_cpu_ms"] = run.get("server_cpu_ms", {}).get(f"join-{entry['number']}")
    return run


def _expect(worker: WorkerProcess, word: str, timeout: float) -> None:
    words = worker.expect_any((word, "failed"), timeout)
    if words[0] == "failed":
        worker.expect("done", 60)
        raise RuntimeError(worker.result().get("failure") or "the worker failed")


def _cpu_ms(before: int | None, after: int | None) -> float | None:
    return None if before is None or after is None else (after - before) / 1e6


def run(options: RunOptions) -> bool:
    """Run the sync group, print the report, write the results; True if no run FAILED."""
    started = now_iso()
    wanted = [key for key in (options.servers or CRDT_SERVERS) if key in CRDT_SERVERS]
    reasons = available(wanted, ensure_peers(install=options.install_peers))
    unavailable = {key: reason for key, reason in reasons.items() if reason is not None}
    params = replace(
        Params.for_mode(options.mode),
        servers=tuple(key for key in wanted if key not in unavailable),
    )
    placement = Placement.plan()
    runs = []
    with (
        tempfile.TemporaryDirectory(prefix="crdtsync-sync-bench-", dir=options.tmpdir) as tmp,
        own_affinity(placement.all_loadgen_cpus()),
    ):
        work = Path(tmp)
        trace_cache = work / "trace.bin"
        prepare_trace(trace_cache)
        total = len(params.servers) * params.repeat
        for repetition in range(params.repeat):
            for index, server in enumerate(params.servers):
                number = repetition * len(params.servers) + index + 1
                print(
                    f"[{number}/{total}] sync, {SERVERS[server].label} ...",
                    end=" ",
                    file=sys.stderr,
                    flush=True,
                )
                run_dir = work / f"run-{server}-{repetition}"
                run_dir.mkdir()
                result = run_server(server, params, placement, run_dir, trace_cache)
                result["repetition"] = repetition
                print(_progress(result), file=sys.stderr, flush=True)
                runs.append(result)
    data = {
        "group": GROUP,
        "mode": params.mode,
        "started": started,
        "finished": now_iso(),
        "machine": machine_info(),
        "parameters": {
            **asdict(params),
            "trace": DEFAULT_TRACE.name,
            "placement": asdict(placement),
            "servers": {key: SERVERS[key].label for key in params.servers},
            "unavailable_servers": unavailable,
            "peer_versions": peer_versions(),
        },
        "goals": goal_results(runs, params),
        "runs": runs,
    }
    markdown = render_markdown(data)
    print(markdown)
    json_path, md_path = write_results(options.results_dir, GROUP, data, markdown)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return all(r["status"] == "ok" for r in runs)


def _progress(run: dict[str, Any]) -> str:
    if run["status"] != "ok":
        return f"FAILED: {run['failure']}"
    catchups = ", ".join(f"{c['lag']}: {c['time_ms']:.0f} ms" for c in run["catchups"])
    joins = statistics.median(j["time_ms"] for j in run["joins"]) if run["joins"] else 0
    return (
        f"built {run['updates']:,} updates in {run['build_s']:.1f} s; catch-up {catchups}; "
        f"late join {joins:.0f} ms"
    )


# -- report ------------------------------------------------------------------------------------


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ok_runs(runs: Sequence[dict[str, Any]], server: str) -> list[dict[str, Any]]:
    return [r for r in runs if r["server"] == server and r["status"] == "ok"]


def catchup_figure(runs: Sequence[dict[str, Any]], server: str, lag: int, key: str) -> float | None:
    """Median of one catch-up figure over the server's runs that passed."""
    return _median(
        [c[key] for r in _ok_runs(runs, server) for c in r["catchups"] if c["lag"] == lag]
    )


def join_figure(runs: Sequence[dict[str, Any]], server: str, key: str) -> float | None:
    """Median of one late-joiner figure over the server's runs that passed."""
    return _median([j[key] for r in _ok_runs(runs, server) for j in r["joins"]])


def goal_results(runs: Sequence[dict[str, Any]], params: Params) -> list[dict[str, Any]]:
    """The sync goals for our relay, through each protocol."""
    results = []
    for ours in ("relay", "relay-yjs"):
        ratios = [
            _ratio(
                catchup_figure(runs, ours, lag, "bytes_received"),
                catchup_figure(runs, ours, lag, "minimal_diff_bytes"),
            )
            for lag in params.lags
        ]
        worst = max((r for r in ratios if r is not None), default=None)
        results.append(_goal(GOALS[0], ours, worst, worst is not None and worst <= 1.2))
        join = _ratio(
            join_figure(runs, ours, "time_ms"), join_figure(runs, "pycrdt-websocket", "time_ms")
        )
        results.append(_goal(GOALS[1], ours, join, join is not None and join <= 1.0))
    return results


def _goal(goal: Goal, ours: str, value: float | None, met: bool) -> dict[str, Any]:
    name = "native" if ours == "relay" else "/yjs"
    return {
        **asdict(goal),
        "key": f"{goal.key}_{name}",
        "description": f"{goal.description} ({name})",
        "measured": value,
        "status": "unknown (run FAILED or missing)"
        if value is None
        else ("met" if met else "not met"),
    }


def _ratio(mine: float | None, theirs: float | None) -> float | None:
    return mine / theirs if mine is not None and theirs else None


def _status(runs: Sequence[dict[str, Any]], server: str) -> str:
    failed = [r for r in runs if r["server"] == server and r["status"] != "ok"]
    if not failed:
        return "ok"
    reason = (failed[0]["failure"] or "").replace("|", "\\|").replace("\n", " ")
    return "**FAILED**: " + reason[:120]


def render_markdown(data: dict[str, Any]) -> str:
    """The report: catch-up table, late-joiner table, goals."""
    params = data["parameters"]
    runs = data["runs"]
    servers = list(params["servers"])
    built = next((r for r in runs if r["status"] == "ok"), None)
    edits = built["edits"] if built else params["edits"]
    lines = [
        f"# Sync benchmark ({data['mode']})",
        "\n".join(
            [
                f"- The automerge-paper trace, {fmt_int(edits)} edits, one update per edit, "
                f"replayed through each server (at most {params['window']} ahead of an online "
                "observer); replicas go offline at their lag and reconnect at the end.",
                f"- Machine: {data['machine']['platform']}, {data['machine']['processor']}, "
                f"{data['machine']['cpu_count']} CPUs; Python {data['machine']['python']}, "
                f"pycrdt {data['machine']['pycrdt']}.",
                "- Our relay stores every update (SQLite, fsync'd group commit); the peers keep "
                "documents in memory only.",
            ]
            + [
                f"- Not run: {SERVERS[key].label}: {reason}."
                for key, reason in params.get("unavailable_servers", {}).items()
            ]
        ),
        "## Catch-up after being offline",
    ]
    rows = []
    for lag in params["lags"]:
        for server in servers:

            def fig(key: str, server: str = server, lag: int = lag) -> float | None:
                return catchup_figure(runs, server, lag, key)

            received, minimal = fig("bytes_received"), fig("minimal_diff_bytes")
            rows.append(
                [
                    fmt_int(lag),
                    SERVERS[server].label,
                    fmt_float(fig("time_ms"), 1),
                    _int(received),
                    _int(fig("bytes_sent")),
                    _int(minimal),
                    "—"
                    if _ratio(received, minimal) is None
                    else f"{_ratio(received, minimal):.2f}x",
                    _int(fig("missed_update_bytes")),
                    _int(fig("doc_update_bytes")),
                    fmt_float(fig("server_cpu_ms"), 1),
                    _status(runs, server),
                ]
            )
    headers = [
        "Offline for (edits)",
        "Server",
        "Time to synced ms",
        "Bytes received",
        "Bytes sent",
        "Minimal diff bytes",
        "Received / minimal",
        "Missed updates, bytes",
        "Whole document bytes",
        "Server CPU ms",
        "Status",
    ]
    lines.append(markdown_table(headers, rows, "rlrrrrrrrrl"))
    lines.append(
        "\n".join(
            [
                "- *Time to synced*: from the start of the replica's TCP connection until its "
                "text equals the writer's (state vectors and delete sets compared too).",
                "- *Bytes*: websocket message payloads until synced, each way. Native: HELLO + "
                "SUBSCRIBE out, WELCOME + SYNC in. y-websocket: sync step 1 + step 2 each way "
                "(the replica's step 2 carries its delete set even when the server lacks "
                "nothing). Hocuspocus adds the auth exchange and the document name.",
                "- *Minimal diff*: `len(writer_doc.get_update(replica_state_vector))` (pycrdt). "
                "*Missed updates*: the updates made while the replica was away, as sent (what "
                "an operation log would resend); *whole document*: `len(doc.get_update())`.",
            ]
        )
    )
    lines.append("## Late joiner")
    rows = []
    for server in servers:
        rows.append(
            [
                SERVERS[server].label,
                fmt_float(join_figure(runs, server, "time_ms"), 1),
                _int(join_figure(runs, server, "bytes_received")),
                _int(built["doc_update_bytes"] if built else None),
                fmt_float(join_figure(runs, server, "server_cpu_ms"), 1),
                _build_cell(runs, server),
                fmt_float(
                    _median([r.get("server_peak_rss_mb") for r in _ok_runs(runs, server)]), 1
                ),
                _status(runs, server),
            ]
        )
    headers = [
        "Server",
        "Time to final text ms",
        "Bytes received",
        "Document bytes",
        "Server CPU ms",
        "Build: updates/s",
        "Server peak RSS MB",
        "Status",
    ]
    lines.append(markdown_table(headers, rows, "lrrrrrrl"))
    lines.append(
        "- A new client with an empty document connects and syncs; *time* runs until its text "
        "equals the trace's final text (checked) and its state the writer's. *Build*: how fast "
        "the server took the trace one update at a time (with an observer receiving it)."
    )
    lines.append("## Goals")
    goal_rows = [
        [
            goal["description"],
            "—" if goal["measured"] is None else f"{goal['measured']:.2f}x",
            goal["target"],
            f"**{goal['status']}**",
        ]
        for goal in data["goals"]
    ]
    lines.append(markdown_table(["Goal", "Measured", "Target", "Result"], goal_rows, "lrrl"))
    return "\n\n".join(lines) + "\n"


def _int(value: float | None) -> str:
    return "—" if value is None else fmt_int(round(value))


def _build_cell(runs: Sequence[dict[str, Any]], server: str) -> str:
    value = _median([r.get("build_updates_per_s") for r in _ok_runs(runs, server)])
    return fmt_float(value, 0)


# -- command line ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.sync``: one run against one server (or, with ``--worker``,
    the worker process the orchestrator drives)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sync",
        description="One sync-benchmark run against one server, written as JSON. To run the "
        "benchmark use: python -m benchmarks --only sync",
    )
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--server", choices=CRDT_SERVERS, default="relay")
    parser.add_argument("--edits", type=int, default=3000, help="trace edits (0: all)")
    parser.add_argument("--lags", default="1000", help="comma-separated (default 1000)")
    parser.add_argument("--joins", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="write the run's JSON here")
    parser.add_argument("--tmpdir", type=Path)
    args = parser.parse_args(argv)
    if args.spec is not None:  # the worker
        spec = json.loads(args.spec.read_text(encoding="utf-8"))
        asyncio.run(_worker_main(spec, args.out))
        return 0
    peer = SERVERS[args.server].peer
    if peer is not None and not ensure_peers()[peer].ok:
        parser.error(f"{args.server} is not available: {ensure_peers()[peer].detail}")
    params = Params(
        "quick",
        edits=args.edits,
        lags=tuple(int(lag) for lag in args.lags.split(",") if lag),
        joins=args.joins,
        repeat=1,
    )
    placement = Placement.plan()
    with (
        tempfile.TemporaryDirectory(prefix="crdtsync-sync-run-", dir=args.tmpdir) as tmp,
        own_affinity(placement.all_loadgen_cpus()),
    ):
        work = Path(tmp)
        prepare_trace(work / "trace.bin")
        result = run_server(args.server, params, placement, work, work / "trace.bin")
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(_progress(result), file=sys.stderr)
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
