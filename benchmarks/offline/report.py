"""``results/offline.md``: cold start, and prefetch time and bytes against the diffs."""

from __future__ import annotations

from typing import Any

from ..harness.render import bullets, fmt_int, markdown_table, median_text, status_cell

__all__ = ["render_markdown"]


def render_markdown(data: dict[str, Any]) -> str:
    """Two tables and their notes."""
    params, results = data["parameters"], data["results"]
    ok = [r for r in results if r["status"] == "ok"]
    failure = next((r["failure"] for r in results if r["status"] != "ok"), None)
    cold = [
        median_text([r["cold_start"]["open_read_s"] * 1000 for r in ok], 1, spread=True),
        median_text([r["cold_start"]["import_s"] * 1000 for r in ok], 1, spread=True),
        median_text(
            [(r["cold_start"]["open_read_s"] + r["cold_start"]["import_s"]) * 1000 for r in ok],
            1,
        ),
        status_cell(not failure, failure),
    ]
    rows = []
    for key, label, diff_key in (("small", "small", "small_bytes"), ("big", "big", "big_bytes")):
        runs = [r for r in ok if key in r]
        diff = runs[0]["seed"][diff_key] if runs else None
        wire = [r[key]["wire_up"] + r[key]["wire_down"] for r in runs]
        name = (
            f"{fmt_int(params['documents'])} small (~1 KB)"
            if label == "small"
            else f"1 of {params['big_mb']} MB"
        )
        rows.append(
            [
                name,
                median_text([r[key]["seconds"] for r in runs], 2, spread=True),
                fmt_int(diff),
                fmt_int(int(sum(wire) / len(wire)) if wire else None),
                "—" if not wire or not diff else f"{sum(wire) / len(wire) / diff:.3f}x",
                fmt_int(runs[0][key]["requests"]) if runs else "—",
            ]
        )
    notes = bullets(
        [
            "*Cold start*: a fresh process opens a store holding "
            f"{fmt_int(params['documents'])} documents and reads the first one "
            "(`Replica(path)` + `open(doc, offline_only=True)` + the text); the import of "
            "crdtsync is timed apart. Goal: under 100 ms.",
            "*Prefetch*: a fresh replica, `prefetch([pattern], url=...)` from a relay process "
            "(SQLite storage, documents not loaded), responses of at most 256 KiB. *Wire*: every "
            "byte both ways through a counting TCP proxy (HTTP headers and requests included); "
            "*diffs*: the documents' updates from an empty state. Goal: at most 1.1x.",
        ]
    )
    return (
        f"# Offline benchmark ({data['mode']})\n\n"
        + markdown_table(["Open + read ms", "Import ms", "Cold start ms", "Status"], [cold], "rrrl")
        + "\n\n"
        + markdown_table(
            ["Prefetch", "Seconds", "Diff bytes", "Wire bytes", "Wire / diffs", "Requests"],
            rows,
            "lrrrrr",
        )
        + "\n\n"
        + notes
        + "\n"
    )
