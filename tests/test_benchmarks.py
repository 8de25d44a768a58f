"""The benchmark suite still runs and checks its own results (behaviour, never timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.relay import Params, RunResult, goal_results, render_markdown, summarize


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


@pytest.mark.parametrize(
    ("scenario", "server", "extra"),
    [("a", "relay", []), ("c", "bare", ["--rooms", "3"]), ("d", "relay", ["--updates", "300"])],
)
def test_a_relay_benchmark_run_converges_and_reports_it(
    tmp_path: Path, scenario: str, server: str, extra: list[str]
) -> None:
    """The smallest configurations of the relay group: real server and load-generator
    processes over loopback, a fraction of a second each; the run checks convergence."""
    out = tmp_path / "run.json"
    result = run(
        "benchmarks.relay",
        "--scenario",
        scenario,
        "--server",
        server,
        "--warmup",
        "0.2",
        "--duration",
        "0.5",
        *extra,
        "--out",
        str(out),
        "--tmpdir",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["status"] == "ok", report["failure"]
    assert report["converged"] is True
    assert report["convergence"]
    if scenario == "d":
        joins = report["late"]["joins"]
        assert [join["label"] for join in joins] == ["warm", "cold"]
        assert all(join["status"] == "ok" and join["bytes_received"] > 0 for join in joins)
    else:
        assert report["deliveries"] > 0
        assert report["deliveries_total"] == report["sent_total"] * (
            report["clients"] // report["rooms"] - 1
        )
        assert report["server_cpu_s"] is not None and report["latency_ms"]["p99"] > 0
    assert report["server_exit"] == 0
    assert not list(tmp_path.glob("crdtsync-relay-run-*")), "the run's directory was left behind"


def test_the_relay_report_shows_a_failed_run_as_failed() -> None:
    """A run that did not converge is reported as FAILED, not as a number."""
    params = Params.for_mode("quick")
    good = RunResult("a", "bare", deliveries_per_s=1000.0, server_cpu_pct=50.0, converged=True)
    bad = RunResult("a", "relay", deliveries_per_s=900.0, server_cpu_pct=50.0, converged=False)
    bad.fail("did not converge: bench-a-0: c1 differs from c0")
    summaries = summarize(params, [good, bad])
    machine = {
        key: "x" for key in ("platform", "processor", "cpu_count", "python", "pycrdt", "websockets")
    } | {"msgpack": "x", "crdtsync": "x", "git_commit": None}
    parameters = {
        "placement": {"server_cpus": None, "loadgen_cpus": None},
        "store_filesystem": None,
        "store_directory": "/tmp",
    }
    markdown = render_markdown(params, summaries, machine, parameters)
    relay_row = next(line for line in markdown.splitlines() if line.startswith("| crdtsync"))
    assert "**FAILED**" in relay_row and "900" not in relay_row
    goal = next(g for g in goal_results(summaries) if g["key"] == "a_rate")
    assert goal["measured"] is None and goal["status"].startswith("unknown")
