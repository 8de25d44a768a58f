"""``results/local.md``: context, the timing table, the storage table, the goals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..harness.goals import GoalRow, goals_table
from ..harness.render import (
    EN_DASH,
    bullets,
    fmt_float,
    fmt_int,
    fmt_ratio,
    machine_line,
    markdown_table,
    median_text,
    status_cell,
)
from ..harness.stats import median
from ..trace import DEFAULT_TRACE
from .configs import Config, Params
from .summary import Summary, by_config, goal_results

__all__ = ["render_markdown"]

BUSY_LOAD = 1.5
"""Median load average above which the report warns that the machine was busy."""


def render_markdown(params: Params, summaries: Sequence[Summary], data: dict[str, Any]) -> str:
    """The whole report (``data``: the group's JSON): context, timing table, storage
    table, goals."""
    sections = [
        f"# Local-edit benchmark ({params.mode})",
        _context(params, data["machine"], data["parameters"]),
        "## Time and memory",
        _timing_table(params, summaries),
        _timing_notes(params, summaries),
        "## Storage and reopen",
        _storage_table(params, summaries),
        _STORAGE_NOTES,
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
            machine_line(machine, ("crdtsync", "crdtsync"), ("SQLite", "sqlite")),
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


def _timing_table(params: Params, summaries: Sequence[Summary]) -> str:
    summary_of = by_config(summaries)
    rows = []
    for s in summaries:
        seconds = s.median("seconds")
        rows.append(
            [
                s.config.label,
                fmt_int(s.config.per_transaction),
                _edits_cell(params, s.config),
                median_text(s.values("seconds"), 3, spread=True),
                fmt_float(None if seconds is None else seconds / s.config.edits * 1e6),
                fmt_int(None if not seconds else round(s.config.edits / seconds)),
                fmt_ratio(s.ratio(summary_of.get(s.config.baseline()))),
                fmt_float(s.median("peak_rss_mb"), 1),
                status_cell(s.ok, s.failure, width=90),
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
    baseline_rss = median(run.baseline_rss_mb for summary in summaries for run in summary.runs)
    notes = [
        f"Rows replay {scope}. *vs bare*: median time over the median time of "
        "pycrdt (bare) with the same edits per transaction on the same edits, in this run.",
        "*Peak RSS*: `ru_maxrss` of the worker process after the replay and close. It "
        "includes the interpreter, pycrdt and the loaded trace: "
        f"{fmt_float(baseline_rss, 1)} MB before any document was created (median).",
    ]
    if params.full_one_edits != params.edits:
        notes.insert(
            1,
            f"† Only the first {params.full_one_edits:,} edits: one-edit transactions in "
            '"full" fsync at every edit. Compare with the pycrdt (bare) row of the same '
            "size, which is what its *vs bare* uses.",
        )
    return bullets(notes)


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


_STORAGE_NOTES = bullets(
    [
        "*Store*: size of the SQLite file plus its `-wal` after `Replica.close()`; "
        "*Doc update*: `len(doc.get_update())` of the final document.",
        '*Reopen s*: `Replica(path)` + `open("trace")` + reading the text, in the '
        "same worker right after close (warm OS cache); the text read back is checked.",
        '*Pending / commits*: `replica.pending("trace")` (nothing acknowledged: no relay) '
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
    return goals_table(
        GoalRow(
            goal["description"],
            fmt_ratio(goal["ratio"]),
            f"≤ {goal['max_ratio']:.1f}x",
            goal["status"],
        )
        for goal in goals
    )
