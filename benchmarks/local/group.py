"""The local group's orchestrator: every configuration in a fresh worker process,
repetitions interleaved, then the report and ``results/local.json``."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from .. import PROJECT_DIR, RunOptions
from ..harness.group import now_iso, publish, run_repeated
from ..harness.machine import load_average, source_digest
from ..harness.processes import run_module
from ..trace import prepare_trace
from .configs import Config, Params, plan
from .report import render_markdown
from .summary import Summary, results_json
from .worker import RunResult

__all__ = ["run", "spawn"]

WORKER_TIMEOUT_S = 3600


def run(options: RunOptions) -> bool:
    """Run the local group, print the table, write the results; True if no run FAILED."""
    started = now_iso()
    digest_at_start = source_digest(PROJECT_DIR / "crdtsync")
    with tempfile.TemporaryDirectory(prefix="crdtsync-bench-", dir=options.tmpdir) as tmp:
        work = Path(tmp)
        cache = work / "trace.bin"
        params = Params.for_mode(options.mode, prepare_trace(cache))
        configs = plan(params)
        runs = run_repeated(
            configs,
            params.repeat,
            lambda config, repetition: spawn(config, repetition, cache, work),
            lambda c: f"{c.label}, {c.per_transaction} edit(s)/tx, {c.edits:,} edits",
            lambda r: f"{r.seconds:.2f} s" if r.ok else f"FAILED: {r.failure}",
        )
        store_dir = work.parent  # the worker's store directories live in work/
    summaries = [
        Summary(config, [r for r in runs if r.config == config.name]) for config in configs
    ]
    data = results_json(params, summaries, runs, started, store_dir)
    data["parameters"]["crdtsync_source_sha256_at_start"] = digest_at_start
    publish(options.results_dir, data, render_markdown(params, summaries, data))
    return all(summary.ok for summary in summaries)


def spawn(config: Config, repetition: int, cache: Path, work: Path) -> RunResult:
    """Run one configuration in a fresh worker process (``python -m benchmarks.local
    --worker``); a worker that fails or times out gives a FAILED result."""
    out = work / f"run-{config.store}-{config.per_transaction}-{config.edits}-{repetition}.json"
    arguments = ["--worker", "--store", config.store]
    arguments += ["--per-transaction", str(config.per_transaction), "--edits", str(config.edits)]
    arguments += ["--trace-cache", str(cache), "--out", str(out), "--tmpdir", str(work)]
    load = load_average()
    try:
        done = run_module("benchmarks.local", *arguments, timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        failed = RunResult.start(config, repetition)
        failed.fail(f"worker timed out after {WORKER_TIMEOUT_S} s")
        return failed
    if done.returncode != 0 or not out.exists():
        failed = RunResult.start(config, repetition)
        last = done.stderr.strip().splitlines()[-1:] or ["no output"]
        failed.fail(f"worker exited with status {done.returncode}: {last[0]}")
        failed.stderr = done.stderr[-4000:]
        return failed
    result = RunResult(**json.loads(out.read_text(encoding="utf-8")))
    result.repetition = repetition
    result.load_average = load
    result.stderr = done.stderr.strip()[-4000:] or None
    return result
