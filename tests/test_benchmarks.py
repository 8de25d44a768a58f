"""The benchmark suite still runs and checks its own results (behaviour, never timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_cli_help() -> None:
    result = run("benchmarks", "--help")
    assert result.returncode == 0
    assert "--quick" in result.stdout and "--only" in result.stdout


@pytest.mark.parametrize(("store", "per_transaction"), [("normal", 1), ("memory", 100)])
def test_a_worker_replays_a_trace_prefix_and_checks_it(
    tmp_path: Path, store: str, per_transaction: int
) -> None:
    cache = tmp_path / "trace.bin"
    prepared = run("benchmarks.local", "--prepare-trace", str(cache))
    assert prepared.returncode == 0, prepared.stderr
    assert int(prepared.stdout.strip()) == 259_778
    out = tmp_path / "out.json"
    result = run(
        "benchmarks.local",
        "--worker",
        "--store",
        store,
        "--per-transaction",
        str(per_transaction),
        "--edits",
        "2000",
        "--trace-cache",
        str(cache),
        "--out",
        str(out),
        "--tmpdir",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["status"] == "ok", report["failure"]
    assert report["edits"] == 2000
    assert report["pending"] == report["transactions"] == 2000 // per_transaction
