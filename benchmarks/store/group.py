"""The store group's orchestrator: create the store, then reopen it ``repeat`` times,
each in a fresh worker process; the report and ``results/store.json``."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import Mode, RunOptions
from ..harness.group import run_in_tmpdir
from ..harness.processes import run_worker
from .report import render_markdown

__all__ = ["GROUP", "Params", "run", "run_once"]

GROUP = "store"
WORKER_TIMEOUT_S = 900


@dataclass(frozen=True, slots=True)
class Params:
    """Sizes and repetitions for one mode."""

    mode: Mode
    documents: int = 1000
    edits: int = 20
    repeat: int = 1

    @classmethod
    def for_mode(cls, mode: Mode) -> Params:
        """1,000 documents of 20 edits in both modes; ``full`` reopens three times."""
        return cls(mode, repeat=1 if mode == "quick" else 3)


def _worker(arguments: Sequence[str]) -> dict[str, Any]:
    return run_worker("benchmarks.store", *arguments, timeout=WORKER_TIMEOUT_S)


def run_once(params: Params, work: Path) -> dict[str, Any]:
    """Create the store, then reopen it ``repeat`` times, each in a fresh process."""
    path = work / "replica.db"
    result: dict[str, Any] = {"status": "ok", "failure": None, "reopens": []}
    try:
        sizes = ["--documents", str(params.documents)]
        result.update(_worker(["create", str(path), *sizes, "--edits", str(params.edits)]))
        for _ in range(params.repeat):
            reopened = _worker(["reopen", str(path), *sizes])
            result["reopens"].append(reopened)
            if reopened["digest"] != result["digest"]:
                result["status"] = "FAILED"
                result["failure"] = "a reopened document's text differs from what was written"
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
        result["status"] = "FAILED"
        result["failure"] = f"{type(exc).__name__}: {exc}"
    return result


def run(options: RunOptions) -> bool:
    """Run the store group, print the report, write the results."""
    params = Params.for_mode(options.mode)
    return run_in_tmpdir(
        GROUP,
        params,
        run_once,
        tmpdir=options.tmpdir,
        describe=f"store, {params.documents:,} documents",
        results_dir=options.results_dir,
        render=render_markdown,
    )
