"""``results/records.md``: the figures of one run, and the goals."""

from __future__ import annotations

from typing import Any

from ..harness.goals import GoalRow, goals_table
from ..harness.render import bullets, fmt_float, fmt_int, fmt_ratio, markdown_table, status_cell

__all__ = ["render_markdown"]


def _mb(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} MB"


def render_markdown(data: dict[str, Any]) -> str:
    """The figures table, the goals table and their notes."""
    params, result = data["parameters"], data["result"]
    ok = result["status"] == "ok"
    created: dict[str, Any] = result.get("create") or {}
    reopened: dict[str, Any] = result.get("reopen") or {}
    rows = [
        ["add, per record", f"{fmt_float(created.get('add_us'), 1)} µs"],
        ["update of one field", f"{fmt_float(created.get('update_us'), 1)} µs"],
        ["raw pycrdt Map set, same document", f"{fmt_float(created.get('raw_set_us'), 1)} µs"],
        ["get", f"{fmt_float(created.get('get_us'), 1)} µs"],
        [
            "a remote edit applied (apply_remote)",
            f"{fmt_float(created.get('apply_remote_us'), 1)} µs",
        ],
        [
            f"changes() after {created.get('remote_edits', 100)} remote edits",
            f"{fmt_float(created.get('changes_ms'), 2)} ms",
        ],
        ["the same after reopening", f"{fmt_float(reopened.get('changes_ms'), 2)} ms"],
        ["open (Replica(path) + records())", f"{fmt_float(reopened.get('open_s'), 2)} s"],
        [
            "of which the document alone (Replica(path) + open())",
            f"{fmt_float(reopened.get('document_open_s'), 2)} s",
        ],
        ["first get after opening", f"{fmt_float(reopened.get('first_get_ms'), 2)} ms"],
        [
            "first len() after opening (reads the heads index)",
            f"{fmt_float(reopened.get('first_len_s'), 2)} s",
        ],
        [
            "first conflicts() after opening (then cached)",
            f"{fmt_float(reopened.get('first_conflicts_s'), 2)} s",
        ],
        [
            "a second replica's first sync (applying the whole collection)",
            f"{fmt_float(created.get('initial_sync_s'), 2)} s",
        ],
        ["store (SQLite file + WAL)", f"{fmt_int(created.get('store_bytes'))} bytes"],
        ["document, encoded", f"{fmt_int(created.get('encoded_bytes'))} bytes"],
        [
            "RSS after filling / peak (both replicas)",
            f"{_mb(created.get('rss_filled_mb'))} / {_mb(created.get('rss_peak_mb'))}",
        ],
        ["RSS after opening", _mb(reopened.get("rss_open_mb"))],
    ]
    goals = [
        GoalRow(
            goal["description"],
            "—"
            if goal["measured"] is None
            else fmt_ratio(goal["measured"])
            if goal["key"] == "update_vs_raw_set"
            else f"{goal['measured']:.2f} ms",
            goal["target"],
            goal["status"],
        )
        for goal in data["goals"]
    ]
    notes = bullets(
        [
            f"{fmt_int(params['records'])} records of three fields, each added by one "
            "`add()` (one durable transaction each), in a replica store with "
            '`durability="normal"` (SQLite WAL).',
            f"Update, raw set and get: {fmt_int(params['ops'])} of each on random records, "
            "in 5 interleaved blocks (medians of the blocks). The raw set is "
            "`root_map[key] = value` (one of 64 keys, overwritten) on a root `Map` of the "
            "collection's document: the same store write, no records logic.",
            "Remote edits: a second replica (memory store) syncs the collection and updates "
            "one field of 100 random records; the first applies its 100 local updates one "
            "by one, then `changes(since=cursor)` is timed (median of 20).",
            "Reopen: a fresh process (crdtsync imported before the clock starts); "
            "`changes()` with the cursor taken before the remote edits (median of 5).",
            f"Run status: {status_cell(ok, result.get('failure'))}.",
        ]
    )
    return (
        f"# Records benchmark ({data['mode']})\n\n"
        + markdown_table(["Figure", "Value"], rows, "lr")
        + "\n\n"
        + goals_table(goals)
        + "\n\n"
        + notes
        + "\n"
    )
