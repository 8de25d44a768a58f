"""Local edits whose every value carries a unique token, and what the invariants
read back from a document.

Every value a replica writes (a text run, an embed, an array element, a map
value, nested content) is a token ``<replica.n>`` never written twice, so a
document can be searched for content that nobody wrote, or that appears twice
(after resends, restarts or duplicated frames). Text holds whole tokens only:
inserts go between tokens and deletes take whole tokens, so no concurrent edit
can splice a token nobody wrote.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pycrdt

TOKEN = re.compile(r"<(\d+)\.(\d+)>")

KINDS = (
    "text_insert",
    "text_embed",
    "text_delete",
    "text_format",
    "array_insert",
    "array_insert_map",
    "array_delete",
    "array_move",
    "map_set",
    "map_delete",
    "nested",
    "nested_edit",
    "transaction",
)
"""Kinds of local edit (see :func:`apply_edit`)."""


def apply_edit(doc: pycrdt.Doc[Any], kind: str, a: int, b: int, token: Callable[[], str]) -> None:
    """One local change (one transaction) of ``kind`` (one of :data:`KINDS`) on the
    roots ``t`` (Text), ``a`` (Array) and ``m`` (Map); ``a``/``b`` pick positions
    and options, ``token()`` makes each new value.

    pycrdt 0.14 has no ``Array.move``: a move is a delete and an insert in one
    transaction, and the moved element gets a new token (moving the same token
    concurrently on two replicas would rightly leave it twice).
    """
    text = doc.get("t", type=pycrdt.Text)
    array = doc.get("a", type=pycrdt.Array)
    mapping = doc.get("m", type=pycrdt.Map)
    if kind in ("text_insert", "text_embed", "text_delete", "text_format"):
        _edit_text(text, kind, a, b, token)
    elif kind == "array_insert":
        array.insert(a % (len(array) + 1), token())
    elif kind == "array_insert_map":
        array.insert(a % (len(array) + 1), pycrdt.Map({"v": token()}))
    elif kind == "array_delete" and len(array):
        del array[a % len(array)]
    elif kind == "array_move" and len(array):
        with doc.transaction():
            del array[a % len(array)]
            array.insert(b % (len(array) + 1), token())
    elif kind == "map_set":
        mapping[f"k{a % 5}"] = token()
    elif kind == "map_delete":
        key = f"k{a % 5}"
        if key in mapping:
            del mapping[key]
    elif kind == "nested":
        mapping[f"n{a % 3}"] = pycrdt.Map(
            {"list": pycrdt.Array([token()]), "note": pycrdt.Text(token())}
        )
    elif kind == "nested_edit":
        nested = mapping.get(f"n{a % 3}")
        if isinstance(nested, pycrdt.Map):
            inner = nested.get("list")
            note = nested.get("note")
            if b % 3 == 0 and isinstance(inner, pycrdt.Array):
                inner.insert(b % (len(inner) + 1), token())
            elif b % 3 == 1 and isinstance(inner, pycrdt.Array) and len(inner):
                del inner[b % len(inner)]
            elif isinstance(note, pycrdt.Text):
                change = "text_insert" if b % 2 else "text_delete"
                _edit_text(note, change, a, b, token)
    elif kind == "transaction":
        with doc.transaction():
            text.insert(0, token())
            mapping[f"k{b % 5}"] = token()
            array.append(token())


def _units(text: pycrdt.Text) -> list[tuple[int, int]]:
    """The ``(start, end)`` index span of every token in ``text`` (a text token or an
    embed), in order. Formatting splits text into chunks, so chunks are joined first."""
    units: list[tuple[int, int]] = []
    run, run_start, at = "", 0, 0
    for chunk, *_ in text.diff():
        if isinstance(chunk, str):
            if not run:
                run_start = at
            run += chunk
            at += len(chunk)
            continue
        units.extend((run_start + m.start(), run_start + m.end()) for m in TOKEN.finditer(run))
        run = ""
        units.append((at, at + 1))
        at += 1
    units.extend((run_start + m.start(), run_start + m.end()) for m in TOKEN.finditer(run))
    return units


def _boundaries(text: pycrdt.Text) -> list[int]:
    return [0] + [end for _, end in _units(text)]


def _edit_text(text: pycrdt.Text, kind: str, a: int, b: int, token: Callable[[], str]) -> None:
    units = _units(text)
    if kind == "text_insert":
        attrs = {"bold": True} if b % 3 == 0 else None
        text.insert(_boundaries(text)[a % (len(units) + 1)], token(), attrs=attrs)
    elif kind == "text_embed":
        at = _boundaries(text)[a % (len(units) + 1)]
        text.insert_embed(at, {"embed": token()}, {"link": "x"} if b % 2 else None)
    elif kind == "text_delete" and units:
        start, end = units[a % len(units)]
        del text[start:end]
    elif kind == "text_format" and units:
        start = units[a % len(units)][0]
        end = units[min(len(units) - 1, a % len(units) + b % 3)][1]
        change = ({"italic": True}, {"bold": None}, {"bold": True, "size": b})[b % 3]
        text.format(start, end, change)


def content(doc: pycrdt.Doc[Any]) -> str:
    """Every root type's content as one string: the text with its formatting and
    embeds, and ``to_py()`` of the array and the map (nested types included)."""
    text = doc.get("t", type=pycrdt.Text)
    return json.dumps(
        [
            [[chunk, attrs] for chunk, attrs, *_ in text.diff()],
            doc.get("a", type=pycrdt.Array).to_py(),
            doc.get("m", type=pycrdt.Map).to_py(),
        ],
        sort_keys=True,
    )


def tokens_in(doc: pycrdt.Doc[Any]) -> Iterator[tuple[int, int]]:
    """Every token in the document (text tokens are read from the whole text, as
    formatting splits it into chunks)."""
    text = doc.get("t", type=pycrdt.Text)
    embeds = [chunk for chunk, *_ in text.diff() if not isinstance(chunk, str)]
    parts = [
        str(text),
        json.dumps(embeds),
        json.dumps(doc.get("a", type=pycrdt.Array).to_py()),
        json.dumps(doc.get("m", type=pycrdt.Map).to_py()),
    ]
    for match in TOKEN.finditer(" ".join(parts)):
        yield int(match.group(1)), int(match.group(2))
