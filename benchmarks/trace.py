"""Editing traces in the josephg/editing-traces format, and how to replay them.

A trace is ``{"startContent": str, "endContent": str, "txns": [{"patches":
[[pos, numDeleted, inserted], ...]}, ...]}``; see ``benchmarks/data/README.md``.
Every patch is one *edit*: delete ``numDeleted`` characters at ``pos``, then
insert ``inserted`` at ``pos``. Positions count unicode code points.

Parsing the JSON of the full trace costs ~180 MB of peak memory, which would
swamp a peak-RSS measurement. :func:`save_compact` writes the parsed trace as
flat arrays (~6 MB); benchmark worker processes read that with :func:`load_compact`,
and an orchestrator has a helper process write it (:func:`prepare_trace`).
"""

from __future__ import annotations

import gzip
import json
import sys
from array import array
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import pycrdt

from . import DATA_DIR
from .harness.processes import run_module

__all__ = [
    "DEFAULT_TRACE",
    "Edit",
    "Trace",
    "TraceError",
    "apply_edits",
    "apply_trace",
    "captured_updates",
    "check_text",
    "load_compact",
    "load_trace",
    "prepare_trace",
    "replay",
    "save_compact",
    "trace_updates",
    "transaction_count",
]

DEFAULT_TRACE = DATA_DIR / "automerge-paper.json.gz"

Edit = tuple[int, int, str]
"""``(pos, num_deleted, inserted)``."""

_COMPACT_FORMAT = "crdtsync-benchmarks-trace/1"


class TraceError(ValueError):
    """The trace file is malformed or its edits do not produce ``endContent``."""


@dataclass(frozen=True, slots=True)
class Trace:
    """A sequential editing trace held as flat arrays (a few MB for 260k edits)."""

    name: str
    start_content: str
    end_content: str
    positions: array[int]
    deletes: array[int]
    inserts: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.positions)

    def edits(self, limit: int | None = None) -> Iterator[Edit]:
        """Yield the first ``limit`` edits (all by default) in order."""
        count = self._check_limit(limit)
        return islice(zip(self.positions, self.deletes, self.inserts, strict=True), count)

    def expected_text(self, limit: int | None = None) -> str:
        """The text after the first ``limit`` edits: ``endContent`` for the whole trace,
        otherwise an independent pure-Python replay of the prefix (:func:`replay`)."""
        if self._check_limit(limit) == len(self):
            return self.end_content
        return replay(self.start_content, self.edits(limit))

    def _check_limit(self, limit: int | None) -> int:
        if limit is None:
            return len(self)
        if not 0 <= limit <= len(self):
            raise ValueError(f"the trace has {len(self)} edits, not {limit}")
        return limit


def load_trace(path: Path = DEFAULT_TRACE, *, verify: bool = True) -> Trace:
    """Read a (gzipped) editing-traces JSON file.

    With ``verify``, replay every edit in pure Python and raise :class:`TraceError`
    unless the result is ``endContent``: that checks this reading of the format
    independently of pycrdt.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        raw = json.load(fh)
    trace = _from_json(_trace_name(path), raw)
    if verify:
        mismatch = check_text(replay(trace.start_content, trace.edits()), trace.end_content)
        if mismatch is not None:
            raise TraceError(f"{path}: replaying the trace does not give endContent: {mismatch}")
    return trace


def _trace_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".json"):
        name = name.removesuffix(suffix)
    return name


def _from_json(name: str, raw: Any) -> Trace:
    if not isinstance(raw, dict):
        raise TraceError("a trace is a JSON object")
    start, end, txns = raw.get("startContent"), raw.get("endContent"), raw.get("txns")
    if not isinstance(start, str) or not isinstance(end, str) or not isinstance(txns, list):
        raise TraceError("a trace needs startContent and endContent (strings) and txns (a list)")
    positions: array[int] = array("q")
    deletes: array[int] = array("q")
    inserts: list[str] = []
    for number, txn in enumerate(txns):
        for patch in _patches(number, txn):
            pos, num_deleted, inserted = patch
            positions.append(pos)
            deletes.append(num_deleted)
            inserts.append(inserted)
    return Trace(name, start, end, positions, deletes, tuple(inserts))


def _patches(number: int, txn: Any) -> list[Edit]:
    patches = txn.get("patches") if isinstance(txn, dict) else None
    if not isinstance(patches, list):
        raise TraceError(f"txns[{number}] has no list of patches")
    edits = []
    for patch in patches:
        if not (
            isinstance(patch, list)
            and len(patch) == 3
            and isinstance(patch[0], int)
            and isinstance(patch[1], int)
            and isinstance(patch[2], str)
            and patch[0] >= 0
            and patch[1] >= 0
        ):
            raise TraceError(f"txns[{number}] has a malformed patch {patch!r}")
        edits.append((patch[0], patch[1], patch[2]))
    return edits


def save_compact(trace: Trace, path: Path) -> Path:
    """Write ``trace`` in a form that loads fast and with little memory; return ``path``.

    Layout: a JSON header line, then the position, deletion-count and insert-length
    arrays (machine format, int64), then every inserted string concatenated (UTF-8).
    """
    lengths = array("q", (len(inserted) for inserted in trace.inserts))
    header = {
        "format": _COMPACT_FORMAT,
        "name": trace.name,
        "start_content": trace.start_content,
        "end_content": trace.end_content,
        "edits": len(trace),
        "byteorder": sys.byteorder,
    }
    with path.open("wb") as fh:
        fh.write(json.dumps(header).encode() + b"\n")
        for column in (trace.positions, trace.deletes, lengths):
            column.tofile(fh)
        fh.write("".join(trace.inserts).encode())
    return path


def load_compact(path: Path) -> Trace:
    """Read a file written by :func:`save_compact` (no intermediate copies of the arrays)."""
    with path.open("rb") as fh:
        header = json.loads(fh.readline())
        if header.get("format") != _COMPACT_FORMAT or header.get("byteorder") != sys.byteorder:
            raise TraceError(f"{path} is not a compact trace written by save_compact here")
        columns = []
        for _ in range(3):
            column: array[int] = array("q")
            column.fromfile(fh, header["edits"])
            columns.append(column)
        joined = fh.read().decode()
    positions, deletes, lengths = columns
    inserts = []
    offset = 0
    for length in lengths:
        inserts.append(joined[offset : offset + length])
        offset += length
    return Trace(
        header["name"],
        header["start_content"],
        header["end_content"],
        positions,
        deletes,
        tuple(inserts),
    )


def prepare_trace(destination: Path, source: Path = DEFAULT_TRACE) -> int:
    """Parse and verify the JSON trace in a helper process
    (``python -m benchmarks.local --prepare-trace``), which writes the compact copy to
    ``destination``; return its number of edits (this process never loads the JSON)."""
    done = run_module(
        "benchmarks.local", "--prepare-trace", str(destination), "--source", str(source)
    )
    if done.returncode != 0:
        raise RuntimeError(f"preparing the trace failed:\n{done.stderr}")
    return int(done.stdout.split()[-1])


def replay(start: str, edits: Iterable[Edit]) -> str:
    """Apply ``edits`` to ``start`` in pure Python (a gap buffer); the reference result.

    Raises :class:`TraceError` on an edit outside the text.
    """
    before: list[str] = list(start)  # characters before the gap
    after: list[str] = []  # characters after the gap, reversed
    for number, (pos, num_deleted, inserted) in enumerate(edits):
        if pos > len(before) + len(after) or num_deleted > len(before) + len(after) - pos:
            raise TraceError(f"edit {number} {(pos, num_deleted, inserted)!r} is outside the text")
        if pos < len(before):
            after.extend(reversed(before[pos:]))
            del before[pos:]
        elif pos > len(before):
            moved = after[len(after) - (pos - len(before)) :]
            del after[len(after) - len(moved) :]
            before.extend(reversed(moved))
        if num_deleted:
            del after[len(after) - num_deleted :]
        before.extend(inserted)
    return "".join(before) + "".join(reversed(after))


def apply_edits(
    doc: pycrdt.Doc[Any],
    text: pycrdt.Text,
    edits: Iterable[Edit],
    per_transaction: int = 1,
) -> None:
    """Apply ``edits`` to ``text`` (a root of ``doc``), deletes before inserts.

    ``per_transaction=1``: one transaction per edit (a plain ``del`` or ``insert``
    call, each its own transaction; an edit that both deletes and inserts is
    wrapped in one ``doc.transaction()``). ``per_transaction=k``: ``k`` edits per
    ``with doc.transaction():`` block.
    """
    if per_transaction < 1:
        raise ValueError("per_transaction must be at least 1")
    if per_transaction == 1:
        _apply_each(doc, text, edits)
        return
    remaining = iter(edits)
    while group := list(islice(remaining, per_transaction)):
        with doc.transaction():
            _apply_grouped(text, group)


def _apply_each(doc: pycrdt.Doc[Any], text: pycrdt.Text, edits: Iterable[Edit]) -> None:
    """One transaction per edit. The hot loop of the one-edit benchmarks."""
    for pos, num_deleted, inserted in edits:
        if num_deleted and inserted:
            with doc.transaction():
                del text[pos : pos + num_deleted]
                text.insert(pos, inserted)
        elif num_deleted:
            del text[pos : pos + num_deleted]
        elif inserted:
            text.insert(pos, inserted)


def _apply_grouped(text: pycrdt.Text, edits: Iterable[Edit]) -> None:
    """Apply edits inside the caller's transaction."""
    for pos, num_deleted, inserted in edits:
        if num_deleted:
            del text[pos : pos + num_deleted]
        if inserted:
            text.insert(pos, inserted)


def apply_trace(
    doc: pycrdt.Doc[Any],
    text: pycrdt.Text,
    trace: Trace,
    limit: int | None = None,
    per_transaction: int = 1,
) -> None:
    """Apply the first ``limit`` edits of ``trace`` (all by default) to an empty ``text``.

    A non-empty ``startContent`` is inserted first, in its own transaction.
    Compare the result with ``check_text(str(text), trace.expected_text(limit))``.
    """
    if trace.start_content:
        text.insert(0, trace.start_content)
    apply_edits(doc, text, trace.edits(limit), per_transaction)


@contextmanager
def captured_updates(doc: pycrdt.Doc[Any]) -> Iterator[list[bytes]]:
    """The update of every transaction on ``doc`` inside the ``with`` block, in order."""
    updates: list[bytes] = []
    subscription = doc.observe(lambda event: updates.append(event.update))
    try:
        yield updates
    finally:
        doc.unobserve(subscription)


def trace_updates(
    doc: pycrdt.Doc[Any], text: pycrdt.Text, trace: Trace, limit: int | None = None
) -> list[bytes]:
    """Replay the first ``limit`` edits of ``trace`` into an empty ``text`` (a root of
    ``doc``), one transaction per edit (:func:`apply_trace`); the update of each."""
    with captured_updates(doc) as updates:
        apply_trace(doc, text, trace, limit)
    return updates


def transaction_count(trace: Trace, limit: int | None = None, per_transaction: int = 1) -> int:
    """How many document-changing transactions :func:`apply_trace` makes (assuming
    every group of edits changes the document)."""
    start = 1 if trace.start_content else 0
    if per_transaction == 1:  # streamed: a list of every edit would raise the peak RSS
        return start + sum(1 for _, deleted, inserted in trace.edits(limit) if deleted or inserted)
    count = len(trace) if limit is None else limit
    return start + -(-count // per_transaction)


def check_text(actual: str, expected: str) -> str | None:
    """None if ``actual == expected``, else a short description of the first difference."""
    if actual == expected:
        return None
    index = next(
        (i for i, (a, b) in enumerate(zip(actual, expected, strict=False)) if a != b),
        min(len(actual), len(expected)),
    )
    return (
        f"texts differ at index {index} (length {len(actual)}, expected {len(expected)}): "
        f"{actual[index : index + 20]!r} != {expected[index : index + 20]!r}"
    )
