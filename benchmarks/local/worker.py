"""One run of one local configuration, in a fresh worker process: replay the trace,
time it, check the text, measure memory, the store and a reopen."""

from __future__ import annotations

import gc
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pycrdt

from ..harness.outcome import Outcome
from ..harness.procfs import peak_rss_mb, vm_hwm_mb
from ..trace import Trace, apply_trace, check_text, load_compact, transaction_count
from .configs import DOC_ID, Config

__all__ = ["RunResult", "run_worker"]


@dataclass(slots=True)
class RunResult(Outcome):
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
