"""Markdown for the reports: tables, number formats, the cells every report uses."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from . import stats

__all__ = [
    "EN_DASH",
    "bullets",
    "fmt_float",
    "fmt_int",
    "fmt_ratio",
    "machine_line",
    "markdown_table",
    "median_text",
    "status_cell",
]

EN_DASH = "\N{EN DASH}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """A markdown table; ``align`` has one letter per column: ``l`` or ``r``."""
    if len(align) != len(headers) or any(len(row) != len(headers) for row in rows):
        raise ValueError("every row and the alignment need one entry per column")
    marks = {"l": ":--", "r": "--:"}
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(marks[a] for a in align) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    return "\n".join(lines)


def bullets(items: Iterable[str]) -> str:
    """A markdown list, one item per line."""
    return "\n".join(f"- {item}" for item in items)


def fmt_int(value: int | None) -> str:
    """``1,234`` (``—`` for None)."""
    return "—" if value is None else f"{value:,}"


def fmt_float(value: float | None, digits: int = 2) -> str:
    """A float with ``digits`` decimals and thousands separators (``—`` for None)."""
    return "—" if value is None else f"{value:,.{digits}f}"


def fmt_ratio(value: float | None) -> str:
    """``1.23x`` (``—`` for None)."""
    return "—" if value is None else f"{value:.2f}x"


def median_text(values: Sequence[float], digits: int = 1, spread: bool = False) -> str:
    """The median of ``values`` (``—`` for none); with ``spread`` and several values,
    ``[min-max]`` beside it (an en dash)."""
    middle = stats.median(values)
    if middle is None:
        return "—"
    text = fmt_float(middle, digits)
    if spread and len(values) > 1:
        text += f" [{fmt_float(min(values), digits)}{EN_DASH}{fmt_float(max(values), digits)}]"
    return text


def status_cell(ok: bool, failure: str | None, width: int = 120) -> str:
    """``ok``, or ``**FAILED**: <reason>`` (escaped for a table cell, cut to ``width``)."""
    if ok:
        return "ok"
    reason = (failure or "").replace("|", "\\|").replace("\n", " ")
    return "**FAILED**: " + (reason if len(reason) <= width else reason[: width - 3] + "...")


def machine_line(machine: dict[str, Any], *extra: tuple[str, str]) -> str:
    """``- Machine: ...; Python ..., pycrdt ...`` and, for each ``(label, key)`` of
    ``extra``, ``, <label> <machine[key]>``."""
    line = (
        f"- Machine: {machine['platform']}, {machine['processor']}, {machine['cpu_count']} "
        f"CPUs; Python {machine['python']}, pycrdt {machine['pycrdt']}"
    )
    return line + "".join(f", {label} {machine[key]}" for label, key in extra) + "."
