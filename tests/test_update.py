"""The Yjs update reader against updates pycrdt writes, and against garbage."""

from __future__ import annotations

import contextlib
from typing import Any

import pycrdt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtsync.statevector import decode_state_vector, doc_state
from crdtsync.update import summarize_update

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)
texts = st.text(max_size=6)  # includes astral characters: clocks count UTF-16 units


def build(ops: list[tuple[int, Any]], client_id: int = 5) -> pycrdt.Doc[Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    text = doc.get("text", type=pycrdt.Text)
    m = doc.get("map", type=pycrdt.Map)
    arr = doc.get("array", type=pycrdt.Array)
    xml = doc.get("xml", type=pycrdt.XmlFragment)
    for kind, value in ops:
        if kind == 0 and isinstance(value, str) and value:
            text.insert(len(text) // 2, value, {"bold": True} if len(value) % 2 else None)
        elif kind == 1:
            m[str(len(m) % 3)] = value
        elif kind == 2:
            arr.append(value)
        elif kind == 3:
            m["nested"] = pycrdt.Map({"a": pycrdt.Array([value])})
        elif kind == 4 and len(text) > 1:
            del text[0:1]
        elif kind == 5:
            element = xml.children.append(pycrdt.XmlElement("p", {"k": "v"}))
            element.children.append(pycrdt.XmlText(str(value)[:5]))
        elif kind == 6:
            text.insert_embed(0, {"img": 1})
        elif kind == 7:
            arr.append(b"\x00binary")
    return doc


ops = st.lists(st.tuples(st.integers(0, 7), values | texts), max_size=20)


@given(ops)
def test_whole_document_ranges_match_its_state_vector(ops_: list[tuple[int, Any]]) -> None:
    doc = build(ops_)
    summary = summarize_update(doc.get_update())
    state_vector, delete_set = doc_state(doc)
    expected = {client: [(0, clock)] for client, clock in state_vector.items()}
    assert {c: r for c, r in summary.ranges.items() if r} == expected
    assert summary.delete_set == delete_set


@given(ops, ops)
def test_incremental_updates_have_no_gaps_in_order(
    first: list[tuple[int, Any]], second: list[tuple[int, Any]]
) -> None:
    updates: list[bytes] = []
    doc = build([])
    doc.observe(lambda event: updates.append(event.update))
    build_into = build(first)
    doc.apply_update(build_into.get_update())
    text = doc.get("text", type=pycrdt.Text)
    for kind, value in second:
        if kind == 0 and isinstance(value, str) and value:
            text.insert(0, value)
    receiver: pycrdt.Doc[Any] = pycrdt.Doc()
    for update in updates:
        summary = summarize_update(update)
        assert summary.missing(decode_state_vector(receiver.get_state())) == {}
        receiver.apply_update(update)
    if len(updates) >= 2 and summarize_update(updates[-1]).clients:
        # Out of order, the last update depends on earlier ones of the same client.
        late: pycrdt.Doc[Any] = pycrdt.Doc()
        last = summarize_update(updates[-1])
        if any(start > 0 for spans in last.ranges.values() for start, _ in spans):
            assert last.missing(decode_state_vector(late.get_state())) != {}


def test_utf16_clock_lengths() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=5)
    doc.get("text", type=pycrdt.Text).insert(0, "a😀b")
    summary = summarize_update(doc.get_update())
    assert summary.ranges == {5: [(0, 4)]}  # the emoji is two UTF-16 units


@given(st.binary(max_size=64))
def test_garbage_raises_value_error_only(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        summarize_update(data)


@given(ops, st.data())
def test_truncated_updates_raise_value_error(
    ops_: list[tuple[int, Any]], data: st.DataObject
) -> None:
    update = build(ops_).get_update()
    cut = data.draw(st.integers(0, len(update) - 1))
    with pytest.raises(ValueError):
        summarize_update(update[:cut])
