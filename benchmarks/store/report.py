"""``results/store.md``: one table (reopen time, store size against encoded size)."""

from __future__ import annotations

from typing import Any

from ..harness.render import (
    bullets,
    fmt_float,
    fmt_int,
    markdown_table,
    median_text,
    status_cell,
)
from ..harness.stats import median

__all__ = ["render_markdown"]


def render_markdown(data: dict[str, Any]) -> str:
    """One table and its notes."""
    params, result = data["parameters"], data["result"]
    ok = result["status"] == "ok"
    reopen_ms = [r["reopen_s"] * 1000 for r in result.get("reopens", [])] if ok else []
    middle = median(reopen_ms)
    store, encoded = result.get("store_bytes"), result.get("encoded_bytes")
    row = [
        fmt_int(params["documents"]),
        fmt_int(params["edits"]),
        median_text(reopen_ms, 1, spread=True),
        fmt_float(None if middle is None else middle * 1000 / params["documents"], 1),
        fmt_int(store),
        fmt_int(encoded),
        "—" if not store or not encoded else f"{store / encoded:.1f}x",
        status_cell(ok, result["failure"]),
    ]
    headers = [
        "Documents",
        "Edits each",
        "Reopen ms",
        "µs per document",
        "Store bytes",
        "Encoded bytes",
        "Store / encoded",
        "Status",
    ]
    notes = bullets(
        [
            "*Reopen*: a fresh process times `Replica(path)` and `open()` + reading the text "
            "of every document (the import of crdtsync is excluded); the file is in the OS "
            "cache (warm). Texts checked against what was written.",
            "*Store*: SQLite file + WAL after `close()`; *encoded*: the documents' "
            "`len(doc.get_update())` summed. Nothing was acknowledged, so every one-edit "
            "update is still in the outbox.",
        ]
    )
    return (
        f"# Store benchmark ({data['mode']})\n\n"
        + markdown_table(headers, [row], "rrrrrrrl")
        + "\n\n"
        + notes
        + "\n"
    )
