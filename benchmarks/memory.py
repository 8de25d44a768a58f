"""The memory benchmark: what an idle connection and a loaded document cost a server.

For every server, two measurements, each on a fresh server process (pinned to
one core) with one worker process (``python -m benchmarks.memory``) on another
core, so that memory the first one freed (and the allocator kept) cannot hide
what the second allocates:

1. **idle connections**: the server's RSS after start-up (``VmRSS`` of its
   process); the worker opens ``connections`` websockets, each through its
   protocol's handshake (native: HELLO + SUBSCRIBE; y-websocket: sync steps;
   Hocuspocus: auth + sync), all on one small document, and leaves them idle;
   RSS again: *per idle connection* = the growth / connections; the worker
   closes them and RSS is read once more;
2. **loaded documents** (a fresh server): RSS after start-up; the worker writes
   ``documents`` small documents (a
   100-character text each, one update) and keeps them open: our native
   protocol multiplexes them over a few connections; the y-websocket protocols
   need one connection per document (*per document* then includes a connection;
   the table also gives it minus an idle connection's cost); RSS again;
   then every connection closes; the worker waits until the server
   should have unloaded the documents (our relay runs with ``--idle-timeout``
   of ``unload_wait`` minus a margin), then RSS: how much of the documents'
   memory the server gave back, against the RSS before the documents loaded.

The bare forwarder takes part in step 1 only (it holds no documents).
A sample of the documents a server held is checked at the end of step 2 (a fresh client
gets it back, equal). RSS figures are read by the orchestrator from
``/proc/<pid>/status`` after ``settle_s`` seconds of quiet.

One server by hand::

    python -m benchmarks.memory --server relay --connections 200 --documents 200 --out run.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pycrdt
from websockets.asyncio.client import ClientConnection, connect

from crdtsync.ids import DocId, ReplicaId
from crdtsync.protocol import (
    Ack,
    ErrorFrame,
    Hello,
    Subscribe,
    Sync,
    decode_frame,
    encode_frame,
    encode_update,
)

from . import Mode, RunOptions
from .loadgen import command_line, fetch_document, say, stdin_lines
from .peers import ensure as ensure_peers
from .procs import WorkerProcess, process_status_mb, tail
from .relay import Placement, own_affinity, peer_versions
from .report import fmt_float, machine_info, markdown_table, now_iso, write_results
from .servers import ALL_SERVERS, SERVERS, ServerProcess, available
from .sync import DocClient
from .wire import MAX_FRAME_IN

__all__ = ["Params", "main", "run"]

GROUP = "memory"
CONNECT_BATCH = 50
NATIVE_DOCS_PER_CONNECTION = 250
TEXT_LENGTH = 100


@dataclass(frozen=True, slots=True)
class Params:
    """Sizes for one mode."""

    mode: Mode
    connections: int
    documents: int
    settle_s: float
    unload_wait_s: float
    repeat: int
    servers: tuple[str, ...] = ALL_SERVERS

    @classmethod
    def for_mode(cls, mode: Mode) -> Params:
        """1,000 idle connections and 1,000 documents in both modes; ``full`` waits longer
        for the memory to settle and to unload, and runs twice."""
        if mode == "quick":
            return cls(mode, 1000, 1000, settle_s=1.0, unload_wait_s=4.0, repeat=1)
        return cls(mode, 1000, 1000, settle_s=2.0, unload_wait_s=8.0, repeat=2)

    @property
    def relay_idle_timeout_s(self) -> float:
        """The relay's ``--idle-timeout`` in this benchmark (unloads before the wait ends)."""
        return max(1.0, self.unload_wait_s / 2)


# -- worker ----------------------------------------------------------------------------------


class NativeDocuments:
    """One native connection holding many documents: HELLO, SUBSCRIBE each, wait for
    every SYNC, one UPDATE each, wait for every ACK; then idle."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.ws: ClientConnection | None = None
        self.errors: list[str] = []

    async def open(self, url: str) -> None:
        """Connect, subscribe, write every document and wait until each is stored."""
        self.ws = ws = await connect(
            url, compression=None, max_size=MAX_FRAME_IN, ping_interval=None, close_timeout=2
        )
        await ws.send(encode_frame(Hello(ReplicaId(f"bench-memory-{os.getpid()}-{id(self)}"))))
        empty = pycrdt.Doc().get_state()
        for name in self.names:
            await ws.send(encode_frame(Subscribe(DocId(name), empty)))
        await self._until(Sync, set(self.names))
        for name in self.names:
            doc: pycrdt.Doc[Any] = pycrdt.Doc()
            doc.get("text", type=pycrdt.Text).insert(0, _content(name))
            await ws.send(encode_update(name, doc.get_update(), 1))
        await self._until(Ack, set(self.names))

    async def _until(self, kind: type, pending: set[str]) -> None:
        assert self.ws is not None
        async with asyncio.timeout(120):
            while pending:
                frame = decode_frame(await self.ws.recv(decode=False), MAX_FRAME_IN)
                if isinstance(frame, ErrorFrame):
                    raise ConnectionError(f"relay ERROR {frame.code}: {frame.message}")
                if isinstance(frame, kind):
                    pending.discard(getattr(frame, "doc_id", ""))

    async def close(self) -> None:
        """Close the connection."""
        if self.ws is not None:
            await self.ws.close()


class Holder:
    """The worker's open connections."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.info = SERVERS[spec["server"]]
        self.connections: list[DocClient | NativeDocuments] = []
        self.docs: dict[str, str] = {}

    async def _open(self, clients: Sequence[DocClient]) -> None:
        """Open ``clients`` in batches, handshakes done (the first alone: a room that
        does not exist yet is created by one connection, see loadgen._connect_all)."""
        url = self.spec["url"]
        handshake = self.info.protocol != "raw"
        groups = [
            clients[:1],
            *(clients[i : i + CONNECT_BATCH] for i in range(1, len(clients), CONNECT_BATCH)),
        ]
        for batch in groups:
            await asyncio.gather(*(client.open(url) for client in batch))
            self.connections.extend(batch)
            if handshake:
                await asyncio.gather(*(client.wait_synced(60) for client in batch))

    async def idle(self, count: int) -> None:
        """``count`` connections on one document, handshakes done."""
        await self._open(
            [
                DocClient(self.info.codec("bench-idle", f"idle-{os.getpid()}-{i}"), f"idle-{i}")
                for i in range(count)
            ]
        )

    async def documents(self, count: int) -> None:
        """``count`` small documents, written and kept open."""
        names = [f"bench-doc-{i}" for i in range(count)]
        self.docs = {name: _content(name) for name in names}
        if self.info.protocol == "native":
            for start in range(0, len(names), NATIVE_DOCS_PER_CONNECTION):
                holder = NativeDocuments(names[start : start + NATIVE_DOCS_PER_CONNECTION])
                self.connections.append(holder)
                await holder.open(self.spec["url"])
            return
        clients = [
            DocClient(self.info.codec(name, f"doc-{os.getpid()}-{name}"), name) for name in names
        ]
        for start in range(0, len(clients), CONNECT_BATCH):
            batch = clients[start : start + CONNECT_BATCH]
            await asyncio.gather(*(client.open(self.spec["url"]) for client in batch))
            self.connections.extend(batch)
            await asyncio.gather(*(client.wait_synced(60) for client in batch))
        for client in clients:
            await _write_text(client, self.docs[client.name])

    async def check(self) -> list[str]:
        """A sample of the documents: the server's copy equals what was written."""
        problems = []
        names = list(self.docs)
        for name in names[:: max(1, len(names) // 50)]:
            doc = await fetch_document(self.info.protocol, self.info.prefix, self.spec["url"], name)
            if str(doc.get("text", type=pycrdt.Text)) != self.docs[name]:
                problems.append(f"{name}: the server's copy differs")
        return problems

    def errors(self) -> list[str]:
        """Errors the connections reported."""
        return [error for connection in self.connections for error in connection.errors]

    async def close(self) -> None:
        """Close every connection."""
        await asyncio.gather(*(c.close() for c in self.connections), return_exceptions=True)
        self.connections = []


def _content(name: str) -> str:
    return ((name + " ") * (TEXT_LENGTH // (len(name) + 1) + 1))[:TEXT_LENGTH]


async def _write_text(client: DocClient, content: str) -> None:
    captured: list[bytes] = []
    subscription = client.doc.observe(lambda event: captured.append(event.update))
    client.text.insert(0, content)
    client.doc.unobserve(subscription)
    for seq, update in enumerate(captured, start=1):
        await client.send(client.wire.update(update, seq))


async def _worker_main(spec: dict[str, Any], out: Path) -> None:
    reader = await stdin_lines()
    holder = Holder(spec)
    result: dict[str, Any] = {"status": "ok", "failure": None, "problems": []}
    try:
        say("ready")
        while True:
            command = await command_line(reader)
            if command[0] == "idle":
                await holder.idle(int(command[1]))
                say("opened")
            elif command[0] == "documents":
                await holder.documents(int(command[1]))
                await asyncio.sleep(0.5)  # let the server apply the last writes
                result["problems"] = await holder.check()
                say("loaded")
            elif command[0] == "close":
                errors = holder.errors()
                if errors:
                    raise ConnectionError(errors[0])
                await holder.close()
                say("closed")
            elif command[0] == "finish":
                break
        if result["problems"]:
            result["status"] = "FAILED"
            result["failure"] = "; ".join(result["problems"][:3])
    except (OSError, ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        result["status"] = "FAILED"
        result["failure"] = f"{type(exc).__name__}: {exc}"
        say("failed")
    finally:
        await holder.close()
    out.write_text(json.dumps(result), encoding="utf-8")
    say("done")


# -- orchestrator ------------------------------------------------------------------------------


def run_server(
    server_kind: str, params: Params, placement: Placement, work: Path
) -> dict[str, Any]:
    """Both measurements against one server, each on a fresh server process (so memory
    the first freed and kept cannot hide what the second allocates)."""
    run: dict[str, Any] = {"server": server_kind, "status": "ok", "failure": None}
    phases = [("connections", _connections_phase)]
    if server_kind != "bare":
        phases.append(("documents", _documents_phase))
    for name, phase in phases:
        phase_dir = work / name
        phase_dir.mkdir()
        _run_phase(server_kind, params, placement, phase_dir, run=run, phase=phase)
        if run["status"] != "ok":
            break
    _derive(run, params)
    return run


def _connections_phase(
    worker: WorkerProcess, params: Params, rss: Any, run: dict[str, Any]
) -> None:
    run["rss_start_mb"] = rss()
    _step(worker, f"idle {params.connections}", "opened")
    run["rss_idle_mb"] = rss()
    _step(worker, "close", "closed")
    run["rss_idle_closed_mb"] = rss()


def _documents_phase(worker: WorkerProcess, params: Params, rss: Any, run: dict[str, Any]) -> None:
    run["rss_documents_start_mb"] = rss()
    _step(worker, f"documents {params.documents}", "loaded")
    run["rss_documents_mb"] = rss()
    _step(worker, "close", "closed")
    time.sleep(params.unload_wait_s)
    run["rss_unloaded_mb"] = rss()


def _run_phase(
    server_kind: str,
    params: Params,
    placement: Placement,
    work: Path,
    *,
    run: dict[str, Any],
    phase: Any,
) -> None:
    relay_args = ["--idle-timeout", f"{params.relay_idle_timeout_s:g}"]
    server = ServerProcess(
        server_kind, work, placement.server_cpus, relay_args if SERVERS[server_kind].ours else ()
    )
    worker: WorkerProcess | None = None

    def rss() -> float | None:
        time.sleep(params.settle_s)
        return process_status_mb(server.pid, "VmRSS")

    try:
        url = server.start()
        spec = {"server": server_kind, "url": url}
        cpus = placement.loadgen_cpus[0] if placement.loadgen_cpus else None
        worker = WorkerProcess("benchmarks.memory", spec, work, "memory-worker", cpus)
        worker.start()
        worker.expect("ready", 60)
        phase(worker, params, rss, run)
        worker.send("finish")
        worker.expect("done", 60)
        peak = server.peak_rss_mb()
        if peak is not None:
            run["peak_rss_mb"] = max(peak, run.get("peak_rss_mb") or 0.0)
        part = worker.result()
        if part["status"] != "ok":
            run["status"], run["failure"] = "FAILED", part["failure"]
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        run["status"] = "FAILED"
        run["failure"] = f"{type(exc).__name__}: {exc}"
        if worker is not None and worker.out.exists():
            run["failure"] = worker.result().get("failure") or run["failure"]
    finally:
        if worker is not None:
            worker.stop()
        exit_status = server.stop()
        run.setdefault("server_exit", exit_status)
        if exit_status != 0:
            run["server_exit"] = exit_status
    if run["status"] == "ok" and exit_status not in (0, None):
        run["status"] = "FAILED"
        run["failure"] = f"the server exited with {exit_status}: {tail(server.log)}"


def _step(worker: WorkerProcess, command: str, answer: str) -> None:
    worker.send(command)
    words = worker.expect_any((answer, "failed"), 600)
    if words[0] == "failed":
        worker.expect("done", 60)
        raise RuntimeError(worker.result().get("failure") or "the worker failed")


def _derive(run: dict[str, Any], params: Params) -> None:
    """Per-connection and per-document figures (KB) from the RSS samples (MB)."""

    def diff(a: str, b: str) -> float | None:
        x, y = run.get(a), run.get(b)
        return None if x is None or y is None else y - x

    idle = diff("rss_start_mb", "rss_idle_mb")
    run["kb_per_idle_connection"] = None if idle is None else idle * 1000 / params.connections
    docs = diff("rss_documents_start_mb", "rss_documents_mb")
    run["kb_per_document"] = None if docs is None else docs * 1000 / params.documents
    per_conn = run["kb_per_idle_connection"]
    own_connection = SERVERS[run["server"]].protocol != "native"
    if run["kb_per_document"] is not None and per_conn is not None:
        run["kb_per_document_net"] = run["kb_per_document"] - (per_conn if own_connection else 0)
    given_back = diff("rss_documents_mb", "rss_unloaded_mb")
    run["unload_returned_fraction"] = None if given_back is None or not docs else -given_back / docs
    closed, opened = run.get("rss_idle_closed_mb"), run.get("rss_start_mb")
    run["closed_vs_start"] = None if closed is None or not opened else closed / opened
    start, end = run.get("rss_documents_start_mb"), run.get("rss_unloaded_mb")
    run["unloaded_vs_start"] = None if start is None or end is None or not start else end / start


def run(options: RunOptions) -> bool:
    """Run the memory group, print the report, write the results; True if no run FAILED."""
    started = now_iso()
    wanted = list(options.servers or ALL_SERVERS)
    reasons = available(wanted, ensure_peers(install=options.install_peers))
    unavailable = {key: reason for key, reason in reasons.items() if reason is not None}
    params = replace(
        Params.for_mode(options.mode),
        servers=tuple(key for key in wanted if key not in unavailable),
    )
    placement = Placement.plan()
    runs = []
    with (
        tempfile.TemporaryDirectory(prefix="crdtsync-memory-bench-", dir=options.tmpdir) as tmp,
        own_affinity(placement.all_loadgen_cpus()),
    ):
        total = len(params.servers) * params.repeat
        for repetition in range(params.repeat):
            for index, server in enumerate(params.servers):
                number = repetition * len(params.servers) + index + 1
                print(
                    f"[{number}/{total}] memory, {SERVERS[server].label} ...",
                    end=" ",
                    file=sys.stderr,
                    flush=True,
                )
                run_dir = Path(tmp) / f"run-{server}-{repetition}"
                run_dir.mkdir()
                result = run_server(server, params, placement, run_dir)
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
            "relay_idle_timeout_s": params.relay_idle_timeout_s,
            "placement": asdict(placement),
            "servers": {key: SERVERS[key].label for key in params.servers},
            "unavailable_servers": unavailable,
            "peer_versions": peer_versions(),
        },
        "goals": goal_results(runs),
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
    return (
        f"{fmt_float(run.get('kb_per_idle_connection'), 1)} KB/connection, "
        f"{fmt_float(run.get('kb_per_document'), 1)} KB/document, unloaded: "
        f"{fmt_float(run.get('unloaded_vs_start'), 2)}x of the start"
    )


def figure(runs: Sequence[dict[str, Any]], server: str, key: str) -> float | None:
    """Median of one figure over the server's runs that passed."""
    values = [
        r[key]
        for r in runs
        if r["server"] == server and r["status"] == "ok" and r.get(key) is not None
    ]
    return statistics.median(values) if values else None


def _ratio(mine: float | None, theirs: float | None) -> float | None:
    return mine / theirs if mine is not None and theirs else None


def goal_results(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Memory goals for our relay through each protocol."""
    goals = []
    for ours, name in (("relay", "native"), ("relay-yjs", "/yjs")):
        for key, what in (
            ("kb_per_idle_connection", "per idle connection"),
            ("kb_per_document", "per loaded document"),
        ):
            mine = figure(runs, ours, key)
            for theirs, limit in (("pycrdt-websocket", 1.0), ("y-websocket", 2.0)):
                value = _ratio(mine, figure(runs, theirs, key))
                strict = theirs == "pycrdt-websocket"
                met = value is not None and (value < limit if strict else value <= limit)
                goals.append(
                    {
                        "key": f"{key}_{name}_{theirs}",
                        "description": f"memory {what}, {name} / {SERVERS[theirs].label}",
                        "target": f"< {limit:.2f}x" if strict else f"≤ {limit:.2f}x",
                        "measured": value,
                        "status": _status(value, met),
                    }
                )
        back = figure(runs, ours, "unloaded_vs_start")
        goals.append(
            {
                "key": f"unload_{name}",
                "description": f"RSS after the documents unload / before they loaded, {name}",
                "target": "≤ 1.10x",
                "measured": back,
                "status": _status(back, back is not None and back <= 1.10),
            }
        )
    return goals


def _status(value: float | None, met: bool) -> str:
    if value is None:
        return "unknown (run FAILED or missing)"
    return "met" if met else "not met"


def render_markdown(data: dict[str, Any]) -> str:
    """The report: one table, the goals."""
    params = data["parameters"]
    runs = data["runs"]
    rows = []
    for server in params["servers"]:
        failed = [r for r in runs if r["server"] == server and r["status"] != "ok"]

        def cell(key: str, digits: int = 1, server: str = server) -> str:
            return fmt_float(figure(runs, server, key), digits)

        rows.append(
            [
                SERVERS[server].label,
                cell("rss_start_mb"),
                cell("kb_per_idle_connection"),
                cell("closed_vs_start", 2),
                cell("kb_per_document"),
                cell("kb_per_document_net"),
                cell("rss_documents_mb"),
                cell("rss_unloaded_mb"),
                cell("unloaded_vs_start", 2),
                cell("peak_rss_mb"),
                "ok"
                if not failed
                else "**FAILED**: " + (failed[0]["failure"] or "").replace("|", "\\|")[:120],
            ]
        )
    headers = [
        "Server",
        "RSS at start MB",
        "KB per idle connection",
        "Connections closed / at start",
        "KB per loaded document",
        "KB per document, net of its connection",
        "RSS, documents loaded MB",
        "RSS after unload MB",
        "After unload / before load",
        "Peak RSS MB",
        "Status",
    ]
    notes = [
        f"- {params['connections']:,} idle connections on one document; "
        f"{params['documents']:,} documents of {TEXT_LENGTH} characters, each written by its "
        "client. Native: the documents share connections "
        f"({NATIVE_DOCS_PER_CONNECTION} per connection, the protocol multiplexes); the "
        "y-websocket protocols: one connection per document, so *per loaded document* "
        "includes a connection (*net* subtracts an idle connection's cost).",
        "- Each measurement on a fresh server process: connections first, documents on "
        "another (memory freed by the first and kept by the allocator would hide the second). "
        f"RSS is `VmRSS` of the server process after {params['settle_s']:g} s of quiet. "
        f"*After unload*: every connection closed, then {params['unload_wait_s']:g} s (our "
        f"relay's `--idle-timeout` is {params['relay_idle_timeout_s']:g} s here); compared "
        "with the RSS just before the documents loaded. @y/websocket-server without "
        "persistence never drops a document; Hocuspocus and pycrdt-websocket drop a "
        "document when its last connection leaves.",
        "- A sample of the documents is read back from each server by a fresh client "
        "before they unload (a run where one differs is FAILED).",
    ]
    notes += [
        f"- Not run: {SERVERS[key].label}: {reason}."
        for key, reason in params.get("unavailable_servers", {}).items()
    ]
    goal_rows = [
        [
            goal["description"],
            "—" if goal["measured"] is None else f"{goal['measured']:.2f}x",
            goal["target"],
            f"**{goal['status']}**",
        ]
        for goal in data["goals"]
    ]
    sections = [
        f"# Memory benchmark ({data['mode']})",
        markdown_table(headers, rows, "lrrrrrrrrrl"),
        "\n".join(notes),
        "## Goals",
        markdown_table(["Goal", "Measured", "Target", "Result"], goal_rows, "lrrl"),
    ]
    return "\n\n".join(sections) + "\n"


# -- command line ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.memory``: one run against one server (``--spec``: the worker)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.memory",
        description="One memory-benchmark run against one server, written as JSON. To run the "
        "benchmark use: python -m benchmarks --only memory",
    )
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--server", choices=ALL_SERVERS, default="relay")
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--documents", type=int, default=200)
    parser.add_argument("--out", type=Path, required=True, help="write the run's JSON here")
    parser.add_argument("--tmpdir", type=Path)
    args = parser.parse_args(argv)
    if args.spec is not None:
        spec = json.loads(args.spec.read_text(encoding="utf-8"))
        asyncio.run(_worker_main(spec, args.out))
        return 0
    peer = SERVERS[args.server].peer
    if peer is not None and not ensure_peers()[peer].ok:
        parser.error(f"{args.server} is not available: {ensure_peers()[peer].detail}")
    params = replace(
        Params.for_mode("quick"), connections=args.connections, documents=args.documents
    )
    placement = Placement.plan()
    with (
        tempfile.TemporaryDirectory(prefix="crdtsync-memory-run-", dir=args.tmpdir) as tmp,
        own_affinity(placement.all_loadgen_cpus()),
    ):
        result = run_server(args.server, params, placement, Path(tmp))
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(_progress(result), file=sys.stderr)
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
