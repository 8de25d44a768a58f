"""Running a benchmark group: the progress lines, the results envelope, the outputs.

Every group's ``run(options)`` runs its plan with :func:`run_repeated` (one
progress line per run on stderr), builds its JSON from :func:`envelope` and ends
with :func:`publish`: the markdown report on stdout, ``<group>.json`` and
``<group>.md`` in the results directory.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from .machine import machine_info

__all__ = [
    "envelope",
    "now_iso",
    "publish",
    "run_by_hand",
    "run_in_tmpdir",
    "run_repeated",
    "write_results",
]

Item = TypeVar("Item")
Result = TypeVar("Result")


def now_iso() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def run_repeated(
    plan: Sequence[Item],
    repeat: int,
    run_one: Callable[[Item, int], Result],
    describe: Callable[[Item], str],
    outcome: Callable[[Result], str],
) -> list[Result]:
    """``run_one(item, repetition)`` for every item of ``plan``, ``repeat`` times,
    interleaved (all items once, then again: slow drift of the machine spreads over
    all of them); ``[n/total] <describe(item)> ... <outcome(result)>`` on stderr."""
    results = []
    total = len(plan) * repeat
    for repetition in range(repeat):
        for index, item in enumerate(plan):
            number = repetition * len(plan) + index + 1
            print(f"[{number}/{total}] {describe(item)} ...", end=" ", file=sys.stderr, flush=True)
            result = run_one(item, repetition)
            print(outcome(result), file=sys.stderr, flush=True)
            results.append(result)
    return results


def envelope(
    group: str, mode: str, started: str, machine: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The keys every group's JSON starts with: group, mode, started, finished (now),
    machine (:func:`.machine.machine_info` unless given)."""
    return {
        "group": group,
        "mode": mode,
        "started": started,
        "finished": now_iso(),
        "machine": machine_info() if machine is None else machine,
    }


def write_results(
    results_dir: Path, group: str, data: dict[str, Any], markdown: str
) -> tuple[Path, Path]:
    """Write ``<group>.json`` and ``<group>.md`` into ``results_dir``; return both paths."""
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path = results_dir / f"{group}.json"
    md_path = results_dir / f"{group}.md"
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown, encoding="utf-8")
    return json_path, md_path


def publish(results_dir: Path, data: dict[str, Any], markdown: str) -> None:
    """Print the report, write the group's results and say where."""
    print(markdown)
    json_path, md_path = write_results(results_dir, data["group"], data, markdown)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)


def run_in_tmpdir(
    group: str,
    params: Any,
    run_once: Callable[[Any, Path], dict[str, Any]],
    *,
    tmpdir: Path | None,
    describe: str,
    results_dir: Path,
    render: Callable[[dict[str, Any]], str],
    extra: Callable[[dict[str, Any]], dict[str, Any]] = lambda result: {},
) -> bool:
    """A group of one run: ``run_once(params, work directory)`` in a temporary
    directory under ``tmpdir``, then its JSON (the envelope, ``parameters`` (a
    dataclass, e.g. with a ``mode``), ``result`` and ``extra(result)``) and its report
    (``render(data)``) published. True if the run's ``status`` is ``ok``."""
    started = now_iso()
    with tempfile.TemporaryDirectory(prefix=f"crdtsync-{group}-bench-", dir=tmpdir) as tmp:
        (result,) = run_repeated(
            [params],
            1,
            lambda p, _: run_once(p, Path(tmp)),
            lambda _: describe,
            lambda r: str(r["status"]),
        )
    data = {
        **envelope(group, params.mode, started),
        "parameters": asdict(params),
        "result": result,
        **extra(result),
    }
    publish(results_dir, data, render(data))
    return bool(result["status"] == "ok")


def run_by_hand(
    group: str,
    params: Any,
    run_once: Callable[[Any, Path], dict[str, Any]],
    out: Path | None,
    shown: Callable[[dict[str, Any]], dict[str, Any]] = lambda result: result,
) -> int:
    """One run of a group from its own command line (``python -m benchmarks.<group>``):
    ``run_once(params, temporary directory)``, its JSON written to ``out`` (if given)
    and ``shown(result)`` printed on stderr. The exit status: 0 if it is ``ok``."""
    with tempfile.TemporaryDirectory(prefix=f"crdtsync-{group}-run-") as tmp:
        result = run_once(params, Path(tmp))
    if out is not None:
        out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(shown(result)), file=sys.stderr)
    return 0 if result["status"] == "ok" else 1
