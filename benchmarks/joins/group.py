"""The joins group's orchestrator: seed one large document, then per configuration a
fresh relay, the worker's joiners, and the relay's RSS and ``/health`` read meanwhile."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import PROJECT_DIR, Mode, RunOptions
from ..harness.group import envelope, now_iso, publish, run_repeated
from ..harness.placement import Placement, own_affinity
from ..harness.processes import spawn, tail
from ..harness.render import fmt_float
from ..harness.stats import percentiles
from ..servers import ServerProcess
from .document import DOC, digest, text
from .report import goal_results, render_markdown

__all__ = ["GROUP", "Params", "progress", "run", "run_joins", "seed"]

GROUP = "joins"
PROBE_INTERVAL_S = 0.05
PROBE_TIMEOUT_S = 10.0
JOIN_TIMEOUT_S = 900.0


@dataclass(frozen=True, slots=True)
class Params:
    """Sizes for one mode."""

    mode: Mode
    size_mb: int
    joiners: tuple[int, ...]
    repeat: int
    settle_s: float = 1.0

    @classmethod
    def for_mode(cls, mode: Mode) -> Params:
        """``quick``: a 10 MB document; ``full``: 30 MB (the issue's), twice. Each: one
        joiner, then five at once."""
        if mode == "quick":
            return cls(mode, 10, (1, 5), 1)
        return cls(mode, 30, (1, 5), 2, settle_s=2.0)


def run(options: RunOptions) -> bool:
    """Run the joins group, print the report, write the results; True if no run FAILED."""
    params = Params.for_mode(options.mode)
    started = now_iso()
    placement = Placement.plan()
    with tempfile.TemporaryDirectory(prefix="crdtsync-joins-", dir=options.tmpdir) as tmp:
        work = Path(tmp)
        expected, encoded = seed(work / "seed" / "relay.db", params.size_mb)
        count = iter(range(1_000_000))

        def one(joiners: int, repetition: int) -> dict[str, Any]:
            run_dir = work / f"run-{next(count)}"
            return run_joins(
                joiners, params, placement, run_dir, (work / "seed", expected, encoded)
            )

        with own_affinity(placement.all_loadgen_cpus()):
            runs = run_repeated(
                params.joiners, params.repeat, one, lambda n: f"{n} joiner(s)", progress
            )
    data = envelope(GROUP, params.mode, started) | {
        "parameters": asdict(params) | {"doc_bytes": encoded},
        "goals": goal_results(runs),
        "runs": runs,
    }
    publish(options.results_dir, data, render_markdown(data))
    return all(r["status"] == "ok" for r in runs)


def seed(path: Path, size_mb: int) -> tuple[str, int]:
    """A relay store at ``path`` holding document :data:`DOC`: ``size_mb`` MB of text
    pasted at once, as its compacted snapshot. Returns the text's digest and the
    document's encoded size."""
    import pycrdt  # noqa: PLC0415 - the orchestrator needs it for this only

    from relay import SQLiteStorage  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    content = text(size_mb)
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=77)
    doc.get("t", type=pycrdt.Text).insert(0, content)
    update = doc.get_update()

    async def store() -> None:
        async with SQLiteStorage(path) as storage:
            [entry] = await storage.append([(DOC, update)])
            await storage.compact(DOC, update, entry)

    asyncio.run(store())
    return digest(content), len(update)


def run_joins(
    joiners: int,
    params: Params,
    placement: Placement,
    work: Path,
    document: tuple[Path, str, int],
) -> dict[str, Any]:
    """One configuration on a fresh relay: ``joiners`` replicas join at once.
    ``document``: the seeded store's folder, the text's digest, its encoded size."""
    seeded, expected, encoded = document
    work.mkdir(parents=True)
    for item in seeded.iterdir():
        shutil.copy(item, work / item.name)
    result: dict[str, Any] = {
        "joiners": joiners,
        "doc_mb": encoded / 1e6,
        "status": "ok",
        "failure": None,
    }
    server = ServerProcess("relay", work, placement.server_cpus, ["--idle-timeout", "3600"])
    try:
        url = server.start()
        port = int(url.rsplit(":", 1)[1])
        time.sleep(params.settle_s)
        result["rss_idle_mb"] = server.rss_mb()
        worker = spawn(
            [
                *(sys.executable, "-m", "benchmarks.joins.worker", "--url", url),
                *("--joiners", str(joiners), "--digest", expected),
            ],
            PROJECT_DIR,
            work / "worker.log",
            placement.cpus_of(0),
            stdin=subprocess.DEVNULL,
        )
        started = time.perf_counter()
        latencies, failures, rss_max = _watch(worker, server, port)
        result["join_s"] = time.perf_counter() - started
        output = worker.stdout.read().decode() if worker.stdout is not None else ""
        worker.wait()
        time.sleep(params.settle_s)
        result["rss_after_mb"] = server.rss_mb()
        result["rss_peak_mb"] = server.peak_rss_mb()
        result["rss_sampled_max_mb"] = rss_max
        result["health_ms"] = percentiles(latencies) or {}
        result["health_max_ms"] = result["health_ms"].get("max")
        result["health_probes"] = len(latencies)
        result["health_failures"] = failures
        _worker_result(result, output, work)
        _derive(result)
    except (RuntimeError, OSError, ValueError) as exc:
        result["status"], result["failure"] = "FAILED", f"{type(exc).__name__}: {exc}"
    finally:
        server.stop()
    return result


def _watch(
    worker: subprocess.Popen[bytes], server: ServerProcess, port: int
) -> tuple[list[int], int, float | None]:
    """Until the worker exits: ``GET /health`` every :data:`PROBE_INTERVAL_S` (latency in
    ns; failures counted) and the relay's RSS."""
    latencies: list[int] = []
    failures = 0
    rss_max: float | None = None
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while worker.poll() is None and time.monotonic() < deadline:
        began = time.perf_counter()
        if _probe(port):
            latencies.append(int((time.perf_counter() - began) * 1e9))
        else:
            failures += 1
        rss = server.rss_mb()
        if rss is not None:
            rss_max = max(rss, rss_max or 0.0)
        time.sleep(max(0.0, PROBE_INTERVAL_S - (time.perf_counter() - began)))
    if worker.poll() is None:
        worker.kill()
    return latencies, failures, rss_max


def _probe(port: int) -> bool:
    """One ``GET /health``: True if it answered 200 in time."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT_S) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: relay\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
    except OSError:
        return False
    return answer.startswith(b"HTTP/1.1 200")


def _worker_result(result: dict[str, Any], output: str, work: Path) -> None:
    lines = [line for line in output.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"the worker wrote no result: {tail(work / 'worker.log')}")
    part = json.loads(lines[-1])
    if part["status"] != "ok":
        raise RuntimeError(part["failure"])
    joins = part["joins"]
    result["join_seconds"] = [j["seconds"] for j in joins]
    if not all(j["intact"] for j in joins):
        raise RuntimeError("a joiner's copy differs from the document")


def _derive(result: dict[str, Any]) -> None:
    """Peak RSS over idle, per joiner, in MB and in multiples of the document's size."""
    peak, idle = result.get("rss_peak_mb"), result.get("rss_idle_mb")
    if peak is None or idle is None:
        return
    per_joiner = (peak - idle) / result["joiners"]
    result["peak_over_idle_mb"] = peak - idle
    result["per_joiner_mb"] = per_joiner
    result["per_joiner_doc_ratio"] = per_joiner / result["doc_mb"]
    after = result.get("rss_after_mb")
    if after is not None:  # beyond the room, which stays loaded
        result["per_joiner_beyond_room_mb"] = max(0.0, peak - after) / result["joiners"]


def progress(result: dict[str, Any]) -> str:
    """The end of a run's progress line."""
    if result["status"] != "ok":
        return f"FAILED: {result['failure']}"
    return (
        f"peak over idle {fmt_float(result.get('peak_over_idle_mb'), 0)} MB, "
        f"/health max {fmt_float(result.get('health_max_ms'), 1)} ms, "
        f"{fmt_float(result.get('join_s'), 1)} s"
    )
