"""The local-edit benchmark: how much does durable storage cost per edit?

Replays the automerge-paper editing trace into a pycrdt Text, once on a bare
``pycrdt.Doc`` and once on a document opened from a ``crdtsync.Replica`` in
each durability mode, with one edit per transaction and with 100 edits per
transaction. See ``benchmarks/README.md`` for what is measured and how to read it.

Every configuration runs in its own fresh worker process::

    python -m benchmarks.local --worker --store normal --per-transaction 1 \\
        --edits 20000 --trace-cache trace.bin --out result.json

The orchestrating process (:func:`run`, called by ``python -m benchmarks``)
never parses the JSON trace itself: on Linux a child's ``ru_maxrss`` starts at
its parent's peak, so the parent stays small and a helper process
(``--prepare-trace``) writes the compact trace the workers read.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import pycrdt

from . import PROJECT_DIR, Mode, RunOptions
from .report import (
    filesystem_type,
    fmt_float,
    fmt_int,
    machine_info,
    markdown_table,
    now_iso,
    peak_rss_mb,
    source_digest,
    vm_hwm_mb,
    write_results,
)
from .trace import (
    DEFAULT_TRACE,
    Trace,
    apply_trace,
    check_text,
    load_compact,
    load_trace,
    save_compact,
    transaction_count,
)

__all__ = ["GOALS", "Config", "Goal", "Params", "RunResult", "main", "plan", "run"]

StoreKind = Literal["bare", "normal", "full", "memory"]
STORE_KINDS: tuple[StoreKind, ...] = ("bare", "normal", "full", "memory")
DurabilityMode = Literal["normal", "full", "memory"]

GROUP = "local"
DOC_ID = "trace"
GROUP_SIZE = 100
WORKER_TIMEOUT_S = 3600
QUICK_EDITS = 60_000
QUICK_FULL_ONE_EDITS = 3_000
FULL_FULL_ONE_EDITS = 20_000
EN_DASH = "\N{EN DASH}"
BUSY_LOAD = 1.5
"""Median load average above which the report warns that the machine was busy."""


# -- what to run -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Params:
    """Sizes and repetitions for one mode."""

    mode: Mode
    trace_edits: int
    """Edits in the whole trace."""
    edits: int
    """Edits replayed by every configuration except one-edit transactions in "full"."""
    full_one_edits: int
    """Edits replayed with one edit per transaction in "full" (an fsync per edit)."""
    group_size: int
    repeat: int

    @classmethod
    def for_mode(cls, mode: Mode, trace_edits: int) -> Params:
        """``quick``: a 60,000-edit prefix, one run each; ``full``: the whole trace, three."""
        if mode == "quick":
            return cls(
                mode,
                trace_edits,
                min(QUICK_EDITS, trace_edits),
                min(QUICK_FULL_ONE_EDITS, trace_edits),
                GROUP_SIZE,
                repeat=1,
            )
        return cls(
            mode,
            trace_edits,
            trace_edits,
            min(FULL_FULL_ONE_EDITS, trace_edits),
            GROUP_SIZE,
            repeat=3,
        )


@dataclass(frozen=True, slots=True)
class Config:
    """One configuration: where the document lives, transaction size, trace prefix."""

    store: StoreKind
    per_transaction: int
    edits: int

    @property
    def name(self) -> str:
        """A stable identifier such as ``normal/1@259778``."""
        return f"{self.store}/{self.per_transaction}@{self.edits}"

    @property
    def label(self) -> str:
        """How the table names the configuration."""
        return "pycrdt (bare)" if self.store == "bare" else f'Replica "{self.store}"'

    @property
    def durability(self) -> DurabilityMode:
        """The ``Replica`` durability of a crdtsync configuration."""
        if self.store == "bare":
            raise ValueError("bare pycrdt has no durability mode")
        return self.store

    @property
    def file_backed(self) -> bool:
        """True for the SQLite durability modes."""
        return self.store in ("normal", "full")

    def baseline(self) -> Config:
        """Bare pycrdt with the same transaction size on the same edits."""
        return Config("bare", self.per_transaction, self.edits)


@dataclass(frozen=True, slots=True)
class Goal:
    """A target ratio against bare pycrdt; reported as met or not met, never asserted."""

    description: str
    store: StoreKind
    per_transaction: int
    max_ratio: float


GOALS = (
    Goal('one-edit transactions in "normal" within 2.0x of bare pycrdt', "normal", 1, 2.0),
    Goal('100-edit transactions in "normal" within 1.5x of bare pycrdt', "normal", 100, 1.5),
)


def plan(params: Params) -> list[Config]:
    """Every configuration of one repetition, each baseline next to what it is compared with."""
    n, prefix, group = params.edits, params.full_one_edits, params.group_size
    configs = [
        Config("bare", 1, n),
        Config("normal", 1, n),
        Config("memory", 1, n),
        Config("bare", group, n),
        Config("normal", group, n),
        Config("memory", group, n),
        Config("full", group, n),
        Config("bare", 1, prefix),
        Config("full", 1, prefix),
    ]
    return list(dict.fromkeys(configs))  # drop duplicates when prefix == n


# -- one run (in a worker process) ---------------------------------------------------


@dataclass(slots=True)
class RunResult:
    """The raw figures of one run of one configuration (one worker process)."""

    config: str
    store: str
    per_transaction: int
    edits: int
    repetition: int = 0
    status: str = "ok"
    failure: str | None = None
    seconds: float | None = None
    """Replaying the edits (the figure the table reports)."""
    cpu_seconds: float | None = None
    """CPU time (user + system) of the replay: well below ``seconds`` means waiting
    (fsync) or, for CPU-bound rows, other processes competing for the CPU."""
    load_average: float | None = None
    """1-minute load average just before the worker started (this benchmark adds ~1)."""
    setup_seconds: float | None = None
    """Creating the Doc, or ``Replica(path)`` + ``open()``."""
    close_seconds: float | None = None
    transactions: int | None = None
    pending: int | None = None
    text_length: int | None = None
    update_bytes: int | None = None
    """``len(doc.get_update())`` at the end."""
    store_bytes: dict[str, int] | None = None
    """Sizes of the store files after close: ``db``, ``wal``, ``shm``."""
    reopen_seconds: float | None = None
    """``Replica(path)`` + ``open()`` + reading the text, after close."""
    baseline_rss_mb: float | None = None
    """``ru_maxrss`` after loading the trace, before creating any document."""
    peak_rss_mb: float | None = None
    """``ru_maxrss`` after the replay and close (before reopening)."""
    vm_hwm_mb: float | None = None
    """The process's own peak (``VmHWM``, Linux) at the same moment, as a cross-check."""
    peak_rss_after_reopen_mb: float | None = None
    stderr: str | None = None

    @classmethod
    def start(cls, config: Config, repetition: int = 0) -> RunResult:
        """An empty result for ``config``."""
        return cls(config.name, config.store, config.per_transaction, config.edits, repetition)

    def fail(self, reason: str) -> None:
        """Mark the run FAILED (its numbers stay in the JSON but are not reported)."""
        self.status = "FAILED"
        self.failure = reason if self.failure is None else f"{self.failure}; {reason}"

    @property
    def ok(self) -> bool:
        """True if every check passed."""
        return self.status == "ok"


def run_worker(config: Config, trace_path: Path, tmpdir: Path | None) -> RunResult:
    """Replay the trace in this process under ``config`` and check the result."""
    trace = load_compact(trace_path)
    expected = trace.expected_text(config.edits)
    result = RunResult.start(config)
    result.transactions = transaction_count(trace, config.edits, config.per_transaction)
    gc.collect()
    result.baseline_rss_mb = peak_rss_mb()
    if config.store == "bare":
        _measure_bare(config, trace, expected, result)
    else:
        with tempfile.TemporaryDirectory(prefix="store-", dir=tmpdir) as directory:
            path = Path(directory) / "store.db"
            _measure_replica(config, trace, path, expected, result)
            if config.file_backed and result.ok:
                _measure_reopen(config, path, expected, result)
    result.peak_rss_after_reopen_mb = peak_rss_mb()
    return result


def _timed_replay(
    doc: pycrdt.Doc[Any], text: pycrdt.Text, trace: Trace, config: Config, result: RunResult
) -> None:
    """Apply the configured edits; record wall and CPU seconds (gc left on, as in an app)."""
    gc.collect()
    cpu_start = time.process_time()
    start = time.perf_counter()
    apply_trace(doc, text, trace, config.edits, config.per_transaction)
    result.seconds = time.perf_counter() - start
    result.cpu_seconds = time.process_time() - cpu_start


def _record_end(result: RunResult, content: str, expected: str) -> None:
    """Peak memory, and the check that turns a wrong text into a FAILED run."""
    result.peak_rss_mb = peak_rss_mb()
    result.vm_hwm_mb = vm_hwm_mb()
    result.text_length = len(content)
    mismatch = check_text(content, expected)
    if mismatch is not None:
        result.fail(f"final text differs from the expected text: {mismatch}")


def _measure_bare(config: Config, trace: Trace, expected: str, result: RunResult) -> None:
    start = time.perf_counter()
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = doc.get("text", type=pycrdt.Text)
    result.setup_seconds = time.perf_counter() - start
    _timed_replay(doc, text, trace, config, result)
    content = str(text)
    result.update_bytes = len(doc.get_update())
    _record_end(result, content, expected)


def _measure_replica(
    config: Config, trace: Trace, path: Path, expected: str, result: RunResult
) -> None:
    from crdtsync import Replica  # noqa: PLC0415 - bare runs must work without crdtsync

    start = time.perf_counter()
    replica = Replica(path, durability=config.durability)
    try:
        doc = replica.open(DOC_ID)
        text = doc.get("text", type=pycrdt.Text)
        result.setup_seconds = time.perf_counter() - start
        _timed_replay(doc, text, trace, config, result)
        content = str(text)
        result.update_bytes = len(doc.get_update())
        result.pending = replica.pending(DOC_ID)
    finally:
        start = time.perf_counter()
        replica.close()
        result.close_seconds = time.perf_counter() - start
    result.store_bytes = _store_sizes(path)
    _record_end(result, content, expected)


def _measure_reopen(config: Config, path: Path, expected: str, result: RunResult) -> None:
    from crdtsync import Replica  # noqa: PLC0415 - see _measure_replica

    start = time.perf_counter()
    replica = Replica(path, durability=config.durability)
    try:
        content = str(replica.open(DOC_ID).get("text", type=pycrdt.Text))
        result.reopen_seconds = time.perf_counter() - start
    finally:
        replica.close()
    mismatch = check_text(content, expected)
    if mismatch is not None:
        result.fail(f"text read back after reopening differs: {mismatch}")


def _store_sizes(path: Path) -> dict[str, int]:
    """Sizes of the SQLite file and its -wal and -shm companions (0 if absent)."""
    files = {"db": path, "wal": Path(f"{path}-wal"), "shm": Path(f"{path}-shm")}
    return {key: file.stat().st_size if file.exists() else 0 for key, file in files.items()}


# -- orchestration (in the parent process) -------------------------------------------


def run(options: RunOptions) -> bool:
    """Run the local group, print the table, write the results; True if no run FAILED."""
    started = now_iso()
    digest_at_start = source_digest(PROJECT_DIR / "crdtsync")
    with tempfile.TemporaryDirectory(prefix="crdtsync-bench-", dir=options.tmpdir) as tmp:
        work = Path(tmp)
        cache = work / "trace.bin"
        params = Params.for_mode(options.mode, _prepare_trace(cache))
        configs = plan(params)
        runs = _run_all(configs, params, cache, work)
        store_dir = work.parent  # the worker's store directories live in work/
    summaries = [
        Summary(config, [r for r in runs if r.config == config.name]) for config in configs
    ]
    data = _results_json(params, summaries, runs, started, store_dir)
    data["parameters"]["crdtsync_source_sha256_at_start"] = digest_at_start
    markdown = render_markdown(params, summaries, data["machine"], data["parameters"])
    print(markdown)
    json_path, md_path = write_results(options.results_dir, GROUP, data, markdown)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return all(summary.ok for summary in summaries)


def _prepare_trace(destination: Path, source: Path = DEFAULT_TRACE) -> int:
    """Parse and verify the JSON trace in a helper process, which writes the compact
    copy to ``destination``; return the number of edits (the parent never loads it)."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.local",
        "--prepare-trace",
        str(destination),
        "--source",
        str(source),
    ]
    done = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"preparing the trace failed:\n{done.stderr}")
    return int(done.stdout.split()[-1])


def _run_all(configs: Sequence[Config], params: Params, cache: Path, work: Path) -> list[RunResult]:
    """Every configuration ``params.repeat`` times, interleaved (repetition-major)."""
    runs = []
    total = len(configs) * params.repeat
    for repetition in range(params.repeat):
        for index, config in enumerate(configs):
            number = repetition * len(configs) + index + 1
            print(
                f"[{number}/{total}] {config.label}, {config.per_transaction} edit(s)/tx, "
                f"{config.edits:,} edits ...",
                end=" ",
                file=sys.stderr,
                flush=True,
            )
            result = _spawn(config, repetition, cache, work)
            outcome = f"{result.seconds:.2f} s" if result.ok else f"FAILED: {result.failure}"
            print(outcome, file=sys.stderr)
            runs.append(result)
    return runs


def _spawn(config: Config, repetition: int, cache: Path, work: Path) -> RunResult:
    """Run one configuration in a fresh worker process."""
    out = work / f"run-{config.store}-{config.per_transaction}-{config.edits}-{repetition}.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks.local",
        "--worker",
        "--store",
        config.store,
        "--per-transaction",
        str(config.per_transaction),
        "--edits",
        str(config.edits),
        "--trace-cache",
        str(cache),
        "--out",
        str(out),
        "--tmpdir",
        str(work),
    ]
    load_average = _load_average()
    try:
        done = subprocess.run(
            command,
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT_S,
            check=False,
        )
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
    result.load_average = load_average
    result.stderr = done.stderr.strip()[-4000:] or None
    return result


def _load_average() -> float | None:
    """The 1-minute load average (None where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


# -- summaries -----------------------------------------------------------------------


@dataclass(slots=True)
class Summary:
    """All runs of one configuration."""

    config: Config
    runs: list[RunResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True if there were runs and none FAILED."""
        return bool(self.runs) and all(run.ok for run in self.runs)

    @property
    def failure(self) -> str | None:
        """The first failure reason, if any run FAILED."""
        return next((run.failure or "FAILED" for run in self.runs if not run.ok), None)

    def median(self, attribute: str) -> float | None:
        """Median of a numeric :class:`RunResult` attribute over the runs (None if missing)."""
        values = self._values(attribute)
        return statistics.median(values) if values else None

    def span(self, attribute: str) -> tuple[float, float] | None:
        """(min, max) of a numeric attribute over the runs."""
        values = self._values(attribute)
        return (min(values), max(values)) if values else None

    def _values(self, attribute: str) -> list[float]:
        if not self.ok:
            return []
        values = [getattr(run, attribute) for run in self.runs]
        return [float(v) for v in values if v is not None]

    def store_bytes(self) -> float | None:
        """Median size of db + wal after close."""
        sizes = [r.store_bytes["db"] + r.store_bytes["wal"] for r in self.runs if r.store_bytes]
        return statistics.median(sizes) if self.ok and sizes else None

    def ratio(self, baseline: Summary | None) -> float | None:
        """Median seconds over the baseline's median seconds (same shape, same run)."""
        mine = self.median("seconds")
        theirs = None if baseline is None else baseline.median("seconds")
        return mine / theirs if mine is not None and theirs else None


def _by_config(summaries: Sequence[Summary]) -> dict[Config, Summary]:
    return {summary.config: summary for summary in summaries}


def goal_results(params: Params, summaries: Sequence[Summary]) -> list[dict[str, Any]]:
    """Each goal with its measured ratio and ``met`` / ``not met`` / ``unknown``."""
    by_config = _by_config(summaries)
    results = []
    for goal in GOALS:
        config = Config(goal.store, goal.per_transaction, params.edits)
        summary = by_config.get(config)
        ratio = None if summary is None else summary.ratio(by_config.get(config.baseline()))
        if ratio is None:
            status = "unknown (run FAILED or missing)"
        else:
            status = "met" if ratio <= goal.max_ratio else "not met"
        results.append({**asdict(goal), "config": config.name, "ratio": ratio, "status": status})
    return results


def _load_summary(runs: Sequence[RunResult]) -> dict[str, float] | None:
    """Median and max of the load averages sampled before each run."""
    loads = [run.load_average for run in runs if run.load_average is not None]
    if not loads:
        return None
    return {"median": statistics.median(loads), "max": max(loads)}


def _results_json(
    params: Params,
    summaries: Sequence[Summary],
    runs: Sequence[RunResult],
    started: str,
    store_dir: Path,
) -> dict[str, Any]:
    by_config = _by_config(summaries)
    return {
        "group": GROUP,
        "mode": params.mode,
        "started": started,
        "finished": now_iso(),
        "machine": machine_info(),
        "parameters": {
            **asdict(params),
            "trace": DEFAULT_TRACE.name,
            "doc_id": DOC_ID,
            "store_directory": str(store_dir),
            "store_filesystem": filesystem_type(store_dir),
            "orchestrator_peak_rss_mb": peak_rss_mb(),
            "timing": "time.perf_counter around the replay only; gc enabled",
            "load_average_before_runs": _load_summary(runs),
        },
        "goals": goal_results(params, summaries),
        "summary": [
            {
                "config": s.config.name,
                "store": s.config.store,
                "per_transaction": s.config.per_transaction,
                "edits": s.config.edits,
                "status": "ok" if s.ok else "FAILED",
                "failure": s.failure,
                "runs": len(s.runs),
                "seconds_median": s.median("seconds"),
                "seconds_min_max": s.span("seconds"),
                "cpu_seconds_median": s.median("cpu_seconds"),
                "ratio_vs_bare": s.ratio(by_config.get(s.config.baseline())),
                "peak_rss_mb_median": s.median("peak_rss_mb"),
                "store_bytes_median": s.store_bytes(),
                "update_bytes_median": s.median("update_bytes"),
                "reopen_seconds_median": s.median("reopen_seconds"),
            }
            for s in summaries
        ],
        "runs": [asdict(run) for run in runs],
    }


# -- markdown ------------------------------------------------------------------------


def render_markdown(
    params: Params,
    summaries: Sequence[Summary],
    machine: dict[str, Any],
    parameters: dict[str, Any],
) -> str:
    """The whole report: context, timing table, storage table, goals."""
    sections = [
        f"# Local-edit benchmark ({params.mode})",
        _context(params, machine, parameters),
        "## Time and memory",
        _timing_table(params, summaries),
        _timing_notes(params, summaries),
        "## Storage and reopen",
        _storage_table(params, summaries),
        _storage_notes(),
        "## Goals",
        _goals_table(goal_results(params, summaries)),
        *_goals_notes(params),
    ]
    return "\n\n".join(sections) + "\n"


def _context(params: Params, machine: dict[str, Any], parameters: dict[str, Any]) -> str:
    runs = "1 run" if params.repeat == 1 else f"{params.repeat} runs"
    figures = "one run" if params.repeat == 1 else f"median [min{EN_DASH}max]"
    commit = machine["git_commit"] or "none (no commit yet)"
    digest = machine["crdtsync_source_sha256"]
    changed = digest != parameters.get("crdtsync_source_sha256_at_start", digest)
    filesystem = parameters["store_filesystem"] or "unknown filesystem"
    return "\n".join(
        [
            f"- Trace: `{DEFAULT_TRACE.name}`, {params.trace_edits:,} single-character edits; "
            f"every run's final text is checked (a wrong text is reported as FAILED).",
            f"- Each configuration: {runs}, each in a fresh process; figures: {figures}.",
            f"- Machine: {machine['platform']}, {machine['processor']}, "
            f"{machine['cpu_count']} CPUs; Python {machine['python']}, "
            f"pycrdt {machine['pycrdt']}, crdtsync {machine['crdtsync']}, "
            f"SQLite {machine['sqlite']}.",
            f"- Stores in `{parameters['store_directory']}` ({filesystem}); commit {commit}; "
            f"crdtsync sources sha256 `{(digest or 'unknown')[:12]}`.",
            *(["- **Warning: crdtsync's sources changed during this run.**"] if changed else []),
            *_load_lines(parameters.get("load_average_before_runs"), machine["cpu_count"]),
        ]
    )


def _load_lines(load: dict[str, float] | None, cpus: int | None) -> list[str]:
    """The load average line, with a warning when other processes were busy."""
    if load is None:
        return []
    line = (
        f"- Load average (1 min) before each run: median {load['median']:.2f}, "
        f"max {load['max']:.2f} on {cpus} CPUs (this benchmark itself accounts for about 1)."
    )
    if load["median"] > BUSY_LOAD:
        line += (
            " **Warning: other processes competed for the machine; "
            f"the figures are noisy (see the min{EN_DASH}max spreads).**"
        )
    return [line]


def _edits_cell(params: Params, config: Config) -> str:
    marker = " †" if config.edits == params.full_one_edits != params.edits else ""
    return fmt_int(config.edits) + marker


def _seconds_cell(summary: Summary) -> str:
    median, span = summary.median("seconds"), summary.span("seconds")
    if median is None or span is None:
        return "—"
    if len(summary.runs) == 1:
        return f"{median:.3f}"
    return f"{median:.3f} [{span[0]:.3f}{EN_DASH}{span[1]:.3f}]"


def _status_cell(summary: Summary) -> str:
    if summary.ok:
        return "ok"
    reason = (summary.failure or "").replace("|", "\\|").replace("\n", " ")
    return "**FAILED**: " + (reason if len(reason) <= 90 else reason[:87] + "...")


def _timing_table(params: Params, summaries: Sequence[Summary]) -> str:
    by_config = _by_config(summaries)
    rows = []
    for s in summaries:
        seconds = s.median("seconds")
        ratio = s.ratio(by_config.get(s.config.baseline()))
        rows.append(
            [
                s.config.label,
                fmt_int(s.config.per_transaction),
                _edits_cell(params, s.config),
                _seconds_cell(s),
                fmt_float(None if seconds is None else seconds / s.config.edits * 1e6),
                fmt_int(None if not seconds else round(s.config.edits / seconds)),
                "—" if ratio is None else f"{ratio:.2f}x",
                fmt_float(s.median("peak_rss_mb"), 1),
                _status_cell(s),
            ]
        )
    headers = [
        "Configuration",
        "Edits/tx",
        "Edits",
        "Total s",
        "µs/edit",
        "edits/s",
        "vs bare",
        "Peak RSS MB",
        "Status",
    ]
    return markdown_table(headers, rows, "lrrrrrrrl")


def _timing_notes(params: Params, summaries: Sequence[Summary]) -> str:
    scope = (
        "the whole trace"
        if params.edits == params.trace_edits
        else f"the first {params.edits:,} edits of the trace"
    )
    notes = [
        f"Rows replay {scope}. *vs bare*: median time over the median time of "
        "pycrdt (bare) with the same edits per transaction on the same edits, in this run.",
        "*Peak RSS*: `ru_maxrss` of the worker process after the replay and close. It "
        "includes the interpreter, pycrdt and the loaded trace: "
        f"{_baseline_rss(summaries)} MB before any document was created (median).",
    ]
    if params.full_one_edits != params.edits:
        notes.insert(
            1,
            f"† Only the first {params.full_one_edits:,} edits: one-edit transactions in "
            '"full" fsync at every edit. Compare with the pycrdt (bare) row of the same '
            "size, which is what its *vs bare* uses.",
        )
    return "\n".join(f"- {note}" for note in notes)


def _baseline_rss(summaries: Sequence[Summary]) -> str:
    values = [
        run.baseline_rss_mb
        for summary in summaries
        for run in summary.runs
        if run.baseline_rss_mb is not None
    ]
    return fmt_float(statistics.median(values) if values else None, 1)


def _storage_table(params: Params, summaries: Sequence[Summary]) -> str:
    rows = []
    for s in summaries:
        if s.config.store == "bare":
            continue
        on_disk, update = s.store_bytes(), s.median("update_bytes")
        pending = [f"{r.pending:,} / {r.transactions:,}" for r in s.runs if r.pending is not None]
        rows.append(
            [
                s.config.label,
                fmt_int(s.config.per_transaction),
                _edits_cell(params, s.config),
                _kb(on_disk) if s.config.file_backed else "— (no file)",
                _kb(update),
                f"{on_disk / update:.1f}x" if on_disk and update and s.config.file_backed else "—",
                fmt_float(s.median("reopen_seconds"), 3) if s.config.file_backed else "—",
                pending[0] if pending and s.ok else "—",
            ]
        )
    headers = [
        "Configuration",
        "Edits/tx",
        "Edits",
        "Store KB (db + wal)",
        "Doc update KB",
        "Store / update",
        "Reopen s",
        "Pending / commits",
    ]
    return markdown_table(headers, rows, "lrrrrrrr")


def _kb(num_bytes: float | None) -> str:
    return "—" if num_bytes is None else f"{num_bytes / 1000:,.0f}"


def _storage_notes() -> str:
    return "\n".join(
        [
            "- *Store*: size of the SQLite file plus its `-wal` after `Replica.close()`; "
            "*Doc update*: `len(doc.get_update())` of the final document.",
            '- *Reopen s*: `Replica(path)` + `open("trace")` + reading the text, in the '
            "same worker right after close (warm OS cache); the text read back is checked.",
            '- *Pending / commits*: `replica.pending("trace")` (nothing acknowledged: no relay) '
            "against the transactions the replay made.",
        ]
    )


def _goals_notes(params: Params) -> list[str]:
    """A caution when the goals were judged on a prefix of the trace."""
    if params.edits == params.trace_edits:
        return []
    return [
        f"- Judged on the first {params.edits:,} edits only. A pycrdt edit is cheaper on a "
        "short document while a commit costs about the same, so these ratios are higher "
        "than on the whole trace: judge the goals with `--full`."
    ]


def _goals_table(goals: Sequence[dict[str, Any]]) -> str:
    rows = [
        [
            goal["description"],
            "—" if goal["ratio"] is None else f"{goal['ratio']:.2f}x",
            f"≤ {goal['max_ratio']:.1f}x",
            f"**{goal['status']}**",
        ]
        for goal in goals
    ]
    return markdown_table(["Goal", "Measured", "Target", "Result"], rows, "lrrl")


# -- command line (worker and helper; users run ``python -m benchmarks``) -------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.local",
        description="Worker processes of the local-edit benchmark. "
        "To run the benchmark use: python -m benchmarks --only local",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--worker", action="store_true", help="run one configuration")
    action.add_argument(
        "--prepare-trace",
        type=Path,
        metavar="DEST",
        help="write the compact trace to DEST and print its number of edits",
    )
    parser.add_argument("--source", type=Path, default=DEFAULT_TRACE, help="JSON trace to read")
    parser.add_argument("--store", choices=STORE_KINDS, default="bare")
    parser.add_argument("--per-transaction", type=int, default=1, metavar="N")
    parser.add_argument("--edits", type=int, metavar="N", help="trace prefix (default: all)")
    parser.add_argument("--trace-cache", type=Path, metavar="FILE", help="from --prepare-trace")
    parser.add_argument("--out", type=Path, metavar="FILE", help="write the result JSON here")
    parser.add_argument("--tmpdir", type=Path, help="directory for the store files")
    args = parser.parse_args(argv)
    if args.worker and (args.trace_cache is None or args.out is None):
        parser.error("--worker needs --trace-cache and --out")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.local``."""
    args = _parse_args(argv)
    if args.prepare_trace is not None:
        trace = load_trace(args.source, verify=True)
        save_compact(trace, args.prepare_trace)
        print(len(trace))
        return 0
    edits = args.edits if args.edits is not None else len(load_compact(args.trace_cache))
    config = Config(cast(StoreKind, args.store), args.per_transaction, edits)
    result = run_worker(config, args.trace_cache, args.tmpdir)
    args.out.write_text(json.dumps(asdict(result)), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
