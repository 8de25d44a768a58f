"""The benchmark suite still runs and checks its own results (behaviour, never timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks import peers
from benchmarks.harness.placement import Placement
from benchmarks.loadgen.shared import SharedCounters, client_id_for
from benchmarks.page import write_page
from benchmarks.redis.cluster import CONFIGS, ServerCluster
from benchmarks.relay.goals import goal_results
from benchmarks.relay.report import render_markdown
from benchmarks.relay.result import RunResult
from benchmarks.relay.rooms import assign, run_rooms_once
from benchmarks.relay.scenarios import Params
from benchmarks.relay.summary import summarize
from benchmarks.wire import codec, read_var_uint, var_string, var_uint

from .redis_server import need_redis

NODE_PEERS = peers.ensure(install=False)["node"].ok
PYCRDT_WS_PEER = peers.ensure(install=False)["pycrdt-websocket"].ok
MACHINE = {"platform": "p", "processor": "c", "cpu_count": 2, "python": "3", "pycrdt": "0"}
"""The machine of the results the page tests write."""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=240, check=False
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
    goal = next(g for g in goal_results(summaries) if g["key"] == "a_rate_native_bare")
    assert goal["measured"] is None and goal["status"].startswith("unknown")


# -- wire codecs (pure) ----------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**32 - 1, 2**53])
def test_var_uint_round_trips(value: int) -> None:
    assert read_var_uint(var_uint(value) + b"rest", 0) == (value, len(var_uint(value)))


def test_the_y_websocket_codec_speaks_y_protocols() -> None:
    wire = codec("yjs", "doc", prefix="/yjs")
    assert wire.path("ws://h:1") == "ws://h:1/yjs/doc"
    assert wire.opening(b"\x00") == [b"\x00\x00\x01\x00"]  # sync step 1, empty state vector
    update = b"\x01\x02\x03"
    message = wire.update(update, 7)
    assert message == b"\x00\x02\x03" + update
    assert [(e.kind, e.payload) for e in wire.decode(message)] == [("update", update)]
    assert wire.decode(b"\x00\x01\x01\x09")[0].kind == "step2"
    assert wire.decode(b"\x01\x01\x00")[0].kind == "other"  # awareness
    with pytest.raises(ValueError):
        wire.decode(b"\x00\x05\x00")


def test_the_hocuspocus_codec_names_the_document_and_authenticates_first() -> None:
    wire = codec("hocuspocus", "doc")
    head = var_string("doc")
    auth, step1 = wire.opening(b"\x00")
    assert auth == head + b"\x02\x00" + var_string("benchmark")
    assert step1 == head + b"\x00\x00\x01\x00"
    assert wire.update(b"u", 1) == head + b"\x00\x02\x01u"
    authenticated = head + b"\x02\x02" + var_string("read-write")
    assert [e.kind for e in wire.decode(authenticated)] == ["welcome"]
    assert [e.kind for e in wire.decode(head + b"\x08\x01")] == ["ack"]  # sync status
    assert [e.kind for e in wire.decode(head + b"\x04\x00\x01\x00")] == ["step1"]  # reply
    with pytest.raises(ValueError):
        wire.decode(var_string("other") + b"\x00\x02\x01u")


# -- splitting rooms over load-generator processes ---------------------------------------------


def test_rooms_are_dealt_over_processes_and_one_room_splits_its_clients() -> None:
    many = assign([f"r{i}" for i in range(5)], 2, 2)
    assert [a.rooms for a in many] == [["r0", "r2", "r4"], ["r1", "r3"]]
    assert all(a.members is None for a in many)
    one = assign(["r0"], 2, 4)
    assert [(a.rooms, a.members) for a in one] == [(["r0"], [[0]]), (["r0"], [[1]])]
    twenty = assign(["r0"], 20, 3)
    members = sorted(c for a in twenty for c in (a.members or [[]])[0])
    assert members == list(range(20))


def test_shared_counters_are_seen_by_another_mapping(tmp_path: Path) -> None:
    path = tmp_path / "counters.bin"
    SharedCounters.create(path, rooms=2, clients=3)
    first, second = SharedCounters(2, 3, str(path)), SharedCounters(2, 3, str(path))
    try:
        first.values[first.seen_index(1, 2, 0)] = 42
        first.values[first.sent_index(1, 0)] = 43
        assert second.values[second.seen_index(1, 2, 0)] == 42
        assert second.values[second.sent_index(1, 0)] == 43
        assert second.values[second.done_index(1, 0)] == 0
    finally:
        first.close()
        second.close()
    ids = {client_id_for(7, "room", index) for index in range(20)}
    assert len(ids) == 20 and all(0 < i < 2**32 for i in ids)


def test_one_room_split_over_two_load_generators_converges(tmp_path: Path) -> None:
    """Scenario a with each writer in its own process: windows through the shared
    counters, convergence compared across processes."""
    out = tmp_path / "run.json"
    result = run(
        "benchmarks.relay",
        "--scenario",
        "a",
        "--server",
        "relay-yjs",
        "--loadgen-processes",
        "2",
        "--warmup",
        "0.2",
        "--duration",
        "0.5",
        "--out",
        str(out),
        "--tmpdir",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["status"] == "ok", report["failure"]
    assert report["loadgen_processes"] == 2
    assert "across processes" in report["convergence"]
    assert report["deliveries_total"] == report["sent_total"]


@pytest.mark.parametrize(
    "server",
    [
        pytest.param(
            "y-websocket",
            marks=pytest.mark.skipif(not NODE_PEERS, reason="node peers not installed: make peers"),
        ),
        pytest.param(
            "hocuspocus",
            marks=pytest.mark.skipif(not NODE_PEERS, reason="node peers not installed: make peers"),
        ),
        pytest.param(
            "pycrdt-websocket",
            marks=pytest.mark.skipif(
                not PYCRDT_WS_PEER, reason="pycrdt-websocket not set up: make peers"
            ),
        ),
    ],
)
def test_a_peer_run_converges(tmp_path: Path, server: str) -> None:
    """The peers installed by ``python -m benchmarks.peers`` (skipped when they are not:
    tests never install them) under the paced scenario, with echoes not counted."""
    out = tmp_path / "run.json"
    result = run(
        "benchmarks.relay",
        "--scenario",
        "b",
        "--clients",
        "4",
        "--server",
        server,
        "--warmup",
        "0.2",
        "--duration",
        "0.5",
        "--out",
        str(out),
        "--tmpdir",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["status"] == "ok", report["failure"]
    assert "the server's state (a fresh client) is equal too" in report["convergence"]
    assert report["echoes"] == report["sent_total"]  # each update comes back to its writer


# -- the other groups, smallest sizes ----------------------------------------------------------


@pytest.mark.parametrize("server", ["relay", "relay-yjs"])
def test_a_sync_run_catches_up_and_joins(tmp_path: Path, server: str) -> None:
    out = tmp_path / "sync.json"
    result = run(
        "benchmarks.sync",
        "--server",
        server,
        "--edits",
        "1500",
        "--lags",
        "200,1000",
        "--out",
        str(out),
        "--tmpdir",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["status"] == "ok", report["failure"]
    assert [c["lag"] for c in report["catchups"]] == [200, 1000]
    for catchup in report["catchups"]:
        assert catchup["equal"] and catchup["missed_updates"] > 0
        assert catchup["bytes_received"] >= catchup["minimal_diff_bytes"] > 0
    assert report["joins"][0]["equal"]
    assert report["joins"][0]["bytes_received"] >= report["doc_update_bytes"]


def test_a_memory_run_measures_connections_and_documents(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    result = run(
        "benchmarks.memory",
        "--server",
        "relay",
        "--connections",
        "30",
        "--documents",
        "30",
        "--out",
        str(out),
        "--tmpdir",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["status"] == "ok", report["failure"]
    for key in ("rss_start_mb", "rss_idle_mb", "rss_documents_mb", "rss_unloaded_mb"):
        assert report[key] > 0
    assert report["server_exit"] == 0


def test_a_store_run_reopens_every_document(tmp_path: Path) -> None:
    out = tmp_path / "store.json"
    result = run("benchmarks.store", "--documents", "50", "--edits", "5", "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["status"] == "ok", report["failure"]
    assert report["reopens"][0]["digest"] == report["digest"]
    assert report["store_bytes"] > report["encoded_bytes"] > 0


def test_a_records_run_times_a_collection_and_reopens_it(tmp_path: Path) -> None:
    out = tmp_path / "records.json"
    result = run("benchmarks.records", "--records", "300", "--ops", "50", "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["status"] == "ok", report["failure"]
    created, reopened = report["create"], report["reopen"]
    assert created["changes_count"] == reopened["changes_count"] == 100
    assert reopened["len"] == 300
    assert created["store_bytes"] > created["encoded_bytes"] > 0
    for key in ("add_us", "update_us", "raw_set_us", "get_us", "changes_ms"):
        assert created[key] > 0
    from benchmarks.records.group import goal_results  # noqa: PLC0415
    from benchmarks.records.report import render_markdown  # noqa: PLC0415

    goals = goal_results(report)
    assert [g["status"] in ("met", "not met") for g in goals] == [True, True]
    data = {
        "group": "records",
        "mode": "quick",
        "finished": "now",
        "machine": MACHINE,
        "parameters": {"records": 300, "ops": 50},
        "result": report,
        "goals": goals,
    }
    assert "changes() for 100 changed records" in render_markdown(data)
    (tmp_path / "records.json").write_text(json.dumps(data))
    page = write_page(tmp_path).read_text()
    assert "`records`: quick run" in page
    assert "update() of one field vs the raw pycrdt Map set" in page


def test_a_joins_run_measures_the_relay_while_replicas_join(tmp_path: Path) -> None:
    out = tmp_path / "joins.json"
    args = ("--size-mb", "3", "--joiners", "2", "--out", str(out), "--tmpdir", str(tmp_path))
    result = run("benchmarks.joins", *args)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["status"] == "ok", report["failure"]
    assert len(report["join_seconds"]) == 2  # both copies checked by digest
    assert report["rss_peak_mb"] >= report["rss_idle_mb"] > 0
    assert report["health_probes"] > 0 and report["health_failures"] == 0
    assert report["per_joiner_doc_ratio"] > 0


def test_the_results_page_lists_every_group_and_marks_losses(tmp_path: Path) -> None:
    """RESULTS.md from group JSON: the side-by-side table, goals not met under
    *Where we lose*, a FAILED run without a number."""
    params = Params.for_mode("quick")
    runs = [
        RunResult("b", "bare", us_per_delivery=10.0, deliveries_per_s=7600.0, converged=True),
        RunResult("b", "relay", us_per_delivery=20.0, deliveries_per_s=7600.0, converged=True),
        RunResult("a", "relay", deliveries_per_s=5.0, converged=False),
    ]
    runs[2].fail("did not converge")
    summaries = summarize(params, runs)
    relay = {
        "group": "relay",
        "mode": "quick",
        "finished": "now",
        "machine": MACHINE,
        "parameters": {},
        "goals": goal_results(summaries),
        "summary": [
            {
                "scenario": s.scenario.key,
                "server": s.server,
                "status": "ok" if s.ok else "FAILED",
                "loadgen_saturated": False,
                "deliveries_per_s_median": s.median(lambda r: r.deliveries_per_s),
                "us_per_delivery_median": s.median(lambda r: r.us_per_delivery),
            }
            for s in summaries
        ],
    }
    (tmp_path / "relay.json").write_text(json.dumps(relay))
    page = write_page(tmp_path).read_text()
    assert "## Side by side" in page and "crdtsync relay, native protocol" in page
    lose = page.split("## Where we lose", 1)[1]
    assert "CPU per delivered update, native / bare forwarder" in lose  # 2.0x > 1.25x
    assert "Not measured" in lose
    table_row = next(x for x in page.splitlines() if x.startswith("| crdtsync relay, native"))
    assert "| 5 |" not in table_row  # the FAILED run's figure is not reported


def test_peers_check_reports_without_installing() -> None:
    result = run("benchmarks.peers", "--check")
    assert result.returncode in (0, 1), result.stderr
    assert "pycrdt-websocket" in result.stdout and "node peers" in result.stdout


# -- the redis group: several server processes on one Redis ---------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        "relay-redis-x2",
        pytest.param(
            "hocuspocus-redis-x2",
            marks=pytest.mark.skipif(not NODE_PEERS, reason="node peers not installed: make peers"),
        ),
    ],
)
def test_a_redis_cluster_run_converges_across_processes(tmp_path: Path, config: str) -> None:
    """Scenario c, four rooms dealt over two server processes on one private redis-server:
    every room converges (a fresh client of its own process agrees), and the CPU of the
    servers and of Redis are measured apart."""
    need_redis()
    params = replace(Params.for_mode("quick"), warmup_s=0.2, duration_s=0.5, c_rooms=4)
    cluster = ServerCluster(CONFIGS[config], tmp_path, None)
    result = run_rooms_once(
        params.scenario("c"),
        config,
        params,
        placement=Placement(None, None),
        work=tmp_path,
        server=cluster,
    )
    assert result.ok, result.failure
    assert result.converged and "the server's state" in (result.convergence or "")
    assert len(cluster.urls) == 2 and cluster.urls[0] != cluster.urls[1]
    split = cluster.cpu_split()
    assert split is not None and split[0] > 0 and split[1] >= 0
    assert result.server_exit == 0
