"""The records group's orchestrator: create the collection, then reopen it, each in a
fresh worker process; the goals, the report and ``results/records.json``."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import Mode, RunOptions
from ..harness.goals import goal_status
from ..harness.group import run_in_tmpdir
from ..harness.processes import run_worker
from ..harness.stats import ratio
from .report import render_markdown

__all__ = ["GROUP", "Params", "goal_results", "run", "run_once"]

GROUP = "records"
WORKER_TIMEOUT_S = 1800
CHANGES_MAX_MS = 10.0
UPDATE_MAX_RATIO = 2.0


@dataclass(frozen=True, slots=True)
class Params:
    """Sizes for one mode."""

    mode: Mode
    records: int = 100_000
    ops: int = 5_000
    """Updates, raw sets and gets timed (each)."""

    @classmethod
    def for_mode(cls, mode: Mode) -> Params:
        """100,000 records in both modes (the size the goals are about); ``full`` times
        more operations."""
        return cls(mode, ops=2_000 if mode == "quick" else 10_000)


def _worker(arguments: Sequence[str]) -> dict[str, Any]:
    return run_worker("benchmarks.records", *arguments, timeout=WORKER_TIMEOUT_S)


def run_once(params: Params, work: Path) -> dict[str, Any]:
    """Create the collection and time it, then reopen it in a fresh process."""
    path = work / "replica.db"
    result: dict[str, Any] = {"status": "ok", "failure": None}
    try:
        sizes = ["--records", str(params.records), "--ops", str(params.ops)]
        result["create"] = created = _worker(["create", str(path), *sizes])
        result["reopen"] = reopened = _worker(["reopen", str(path), "--cursor", created["cursor"]])
        problems = [
            f"{name} found {count} changed records, not {created['remote_edits']}"
            for name, count in (
                ("changes()", created["changes_count"]),
                ("changes() after reopening", reopened["changes_count"]),
            )
            if count != created["remote_edits"]
        ]
        if reopened["len"] != params.records:
            problems.append(f"len() is {reopened['len']} after reopening, not {params.records}")
        if problems:
            result["status"] = "FAILED"
            result["failure"] = "; ".join(problems)
    except (RuntimeError, OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
        result["status"] = "FAILED"
        result["failure"] = f"{type(exc).__name__}: {exc}"
    return result


def goal_results(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals: ``update`` within 2x of the raw Map set on the same document;
    ``changes()`` for 100 changed records under 10 ms."""
    created = result.get("create") if result["status"] == "ok" else None
    update = None if created is None else ratio(created["update_us"], created["raw_set_us"])
    changes = None if created is None else created["changes_ms"]
    return [
        {
            "key": "update_vs_raw_set",
            "description": "update() of one field vs the raw pycrdt Map set on the same document",
            "measured": update,
            "target": f"≤ {UPDATE_MAX_RATIO:.1f}x",
            "status": goal_status(update, update is not None and update <= UPDATE_MAX_RATIO),
        },
        {
            "key": "changes_100",
            "description": "changes() for 100 changed records",
            "measured": changes,
            "target": f"< {CHANGES_MAX_MS:.0f} ms",
            "status": goal_status(changes, changes is not None and changes < CHANGES_MAX_MS),
        },
    ]


def run(options: RunOptions) -> bool:
    """Run the records group, print the report, write the results."""
    params = Params.for_mode(options.mode)
    return run_in_tmpdir(
        GROUP,
        params,
        run_once,
        tmpdir=options.tmpdir,
        describe=f"records, {params.records:,} records",
        results_dir=options.results_dir,
        render=render_markdown,
        extra=lambda result: {"goals": goal_results(result)},
    )
