"""The offline group's orchestrator: the cold start, then a relay process serving the
prefetches; the report and ``results/offline.json``."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import PROJECT_DIR, Mode, RunOptions
from ..harness.group import envelope, now_iso, publish, run_repeated
from ..harness.processes import LineReader, free_port, run_worker, spawn, stop_process
from .report import render_markdown

__all__ = ["GROUP", "Params", "run", "run_once"]

GROUP = "offline"
WORKER_TIMEOUT_S = 900


@dataclass(frozen=True, slots=True)
class Params:
    """Sizes and repetitions for one mode."""

    mode: Mode
    documents: int = 1000
    big_mb: int = 20
    repeat: int = 1

    @classmethod
    def for_mode(cls, mode: Mode) -> Params:
        """1,000 small documents and a 20 MB one in both modes; ``full`` repeats thrice."""
        return cls(mode, repeat=1 if mode == "quick" else 3)


def _worker(*arguments: str) -> dict[str, Any]:
    return run_worker("benchmarks.offline", *arguments, timeout=WORKER_TIMEOUT_S)


def _relay(store: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command: Sequence[str] = [
        sys.executable, "-m", "relay", "--port", str(port), "--store", store,
        "--log-level", "WARNING",
    ]  # fmt: skip
    proc = spawn(command, PROJECT_DIR, log, None, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = LineReader(proc.stdout).readline(60)
    if "listening on" not in line:
        stop_process(proc)
        raise RuntimeError(f"the relay did not start: {line}")
    return proc, f"ws://127.0.0.1:{port}"


def run_once(params: Params, work: Path) -> dict[str, Any]:
    """Cold start, then the two prefetches, each worker in a fresh process."""
    result: dict[str, Any] = {"status": "ok", "failure": None}
    try:
        work.mkdir(parents=True, exist_ok=True)
        store = work / "cold.db"
        _worker("create", str(store), "--documents", str(params.documents))
        result["cold_start"] = _worker("cold-start", str(store))
        relay_store = f"sqlite:///{work}/relay.db"
        sizes = ["--documents", str(params.documents), "--big-mb", str(params.big_mb)]
        result["seed"] = _worker("seed", relay_store, *sizes)
        proc, url = _relay(relay_store, work / "relay.log")
        try:
            result["small"] = _worker("prefetch", str(work / "small.db"), "--url", url,
                                      "--pattern", "small/*")  # fmt: skip
            result["big"] = _worker("prefetch", str(work / "big.db"), "--url", url,
                                    "--pattern", "big/*")  # fmt: skip
        finally:
            stop_process(proc)
        checks = [
            result["cold_start"]["ok"],
            result["small"]["ok"] and result["small"]["documents"] == params.documents,
            result["big"]["big_digest"] == result["seed"]["big_digest"],
        ]
        if not all(checks):
            result["status"] = "FAILED"
            result["failure"] = "a document read back differs from what was written"
    except (RuntimeError, OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
        result["status"] = "FAILED"
        result["failure"] = f"{type(exc).__name__}: {exc}"
    return result


def run(options: RunOptions) -> bool:
    """Run the offline group, print the report, write the results."""
    started = now_iso()
    params = Params.for_mode(options.mode)
    with tempfile.TemporaryDirectory(prefix="crdtsync-offline-bench-", dir=options.tmpdir) as tmp:
        results = run_repeated(
            [params],
            params.repeat,
            lambda p, n: run_once(p, Path(tmp) / f"run-{n}"),
            lambda p: f"offline, {p.documents:,} documents + {p.big_mb} MB",
            lambda r: str(r["status"]),
        )
    data = {
        **envelope(GROUP, params.mode, started),
        "parameters": asdict(params),
        "results": results,
    }
    publish(options.results_dir, data, render_markdown(data))
    return all(r["status"] == "ok" for r in results)
