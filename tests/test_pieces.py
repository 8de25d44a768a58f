"""Cutting an update into pieces (:mod:`crdtsync.pieces`): every piece integrates
whole where the ones before it did, and all of them with the final diff rebuild
the document exactly."""

from __future__ import annotations

import random
from typing import Any

import pycrdt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtsync.pieces import split_update
from crdtsync.statevector import decode_state_vector, doc_state
from crdtsync.update import summarize_update

texts = st.text(min_size=1, max_size=40)  # includes astral characters (two UTF-16 units)
values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)
edits = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 7), st.integers(0, 1 << 16), texts | values),
    min_size=1,
    max_size=40,
)


def _offset(text: pycrdt.Text, at: int) -> int:
    """A position in ``text`` on a character boundary (pycrdt indexes UTF-8 bytes)."""
    chars = str(text)
    return len(chars[: at % (len(chars) + 1)].encode())


def _edit(doc: pycrdt.Doc[Any], kind: int, at: int, value: Any) -> None:
    text = doc.get("t", type=pycrdt.Text)
    if kind == 0 and isinstance(value, str):
        text.insert(_offset(text, at), value)
    elif kind == 1 and len(str(text)) > 1:
        start = _offset(text, at)
        end = _offset(text, at + 1 + at % 7)
        if end > start:
            del text[start:end]
    elif kind == 2:
        doc.get("m", type=pycrdt.Map)[str(at % 5)] = value
    elif kind == 3:
        array = doc.get("a", type=pycrdt.Array)
        array.insert(at % (len(array) + 1), value)
    elif kind == 4:
        doc.get("a", type=pycrdt.Array).extend([value] * (1 + at % 30))  # one long item
    elif kind == 5:
        doc.get("m", type=pycrdt.Map)["nested"] = pycrdt.Map({"x": pycrdt.Array([value])})
    elif kind == 6:  # in another text: embeds shift pycrdt's offsets in "t"
        doc.get("e", type=pycrdt.Text).insert_embed(0, {"img": at})
    elif kind == 7:
        text.insert(_offset(text, at), "long " * (1 + at % 300), {"bold": True} if at % 2 else None)


def _history(script: list[tuple[int, int, int, Any]], seed: int) -> list[pycrdt.Doc[Any]]:
    """Three replicas editing and exchanging what they have in a drawn order."""
    docs: list[pycrdt.Doc[Any]] = [pycrdt.Doc(client_id=c) for c in (11, 22, 33)]
    rng = random.Random(seed)
    for who, kind, at, value in script:
        _edit(docs[who], kind, at, value)
        if rng.random() < 0.4:
            other = docs[rng.randrange(3)]
            other.apply_update(docs[who].get_update(other.get_state()))
    return docs


def _pieces(update: bytes, state_vector: bytes, size: int) -> list[bytes]:
    have = decode_state_vector(state_vector)
    return [p for p in split_update(update, have, size, step=5) if p is not None]


@given(edits, st.integers(0, 1000), st.sampled_from([64, 100, 300, 4096]), st.booleans())
def test_pieces_integrate_one_by_one_and_rebuild_the_document(
    script: list[tuple[int, int, int, Any]], seed: int, size: int, partial: bool
) -> None:
    docs = _history(script, seed)
    source = pycrdt.Doc()  # what the relay's room holds: everything
    for doc in docs:
        source.apply_update(doc.get_update())
    target = pycrdt.Doc()  # a joiner: empty, or a replica that has part of it
    if partial:
        target.apply_update(docs[seed % 3].get_update())
    diff = source.get_update(target.get_state())
    for piece in _pieces(diff, target.get_state(), size):
        summary = summarize_update(piece)
        assert not summary.missing(decode_state_vector(target.get_state())), "not integrable"
        assert not summary.delete_set, "a piece carries deletions"
        before = decode_state_vector(target.get_state())
        target.apply_update(piece)
        assert decode_state_vector(target.get_state()) == summary.reach(before), "not all of it"
    target.apply_update(source.get_update(target.get_state()))  # the final SYNC
    assert doc_state(target) == doc_state(source)
    for text in ("t", "e"):
        assert (
            target.get(text, type=pycrdt.Text).diff() == source.get(text, type=pycrdt.Text).diff()
        )
    for name in ("m", "a"):
        kind = pycrdt.Map if name == "m" else pycrdt.Array
        assert target.get(name, type=kind).to_py() == source.get(name, type=kind).to_py()


def test_pieces_follow_dependencies_across_clients() -> None:
    """yrs writes the higher client id first; here its items sit between, and
    after, items of the lower one: a piece order that follows the update's
    layout would send items before what they refer to."""
    a: pycrdt.Doc[Any] = pycrdt.Doc(client_id=11)
    b: pycrdt.Doc[Any] = pycrdt.Doc(client_id=22)
    a.get("t", type=pycrdt.Text).insert(0, "a" * 200)
    b.apply_update(a.get_update())
    b.get("t", type=pycrdt.Text).insert(100, "b" * 200)
    a.apply_update(b.get_update(a.get_state()))
    a.get("t", type=pycrdt.Text).insert(150, "A" * 200)
    update = a.get_update()
    assert next(iter(summarize_update(update).ranges)) == 22  # written first, refers to 11
    target: pycrdt.Doc[Any] = pycrdt.Doc()
    for piece in _pieces(update, b"\x00", 100):
        assert not summarize_update(piece).missing(decode_state_vector(target.get_state()))
        target.apply_update(piece)
    assert str(target.get("t", type=pycrdt.Text)) == str(a.get("t", type=pycrdt.Text))


def test_a_long_string_is_cut_on_character_boundaries_into_pieces_of_the_size_asked() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=5)
    text = doc.get("t", type=pycrdt.Text)
    text += ("abcé😀" * 20_000) + "end"  # one item of 220,003 UTF-16 units
    pieces = _pieces(doc.get_update(), b"\x00", 8192)
    assert len(pieces) > 20
    assert all(len(piece) <= 8192 for piece in pieces)
    joined: pycrdt.Doc[Any] = pycrdt.Doc()
    for count, piece in enumerate(pieces, 1):
        joined.apply_update(piece)
        if count == 3:  # what a replica holds if its connection breaks here
            partial = str(joined.get("t", type=pycrdt.Text))
            assert len(partial) > 0 and str(text).startswith(partial)
    assert str(joined.get("t", type=pycrdt.Text)) == str(text)
    assert doc_state(joined) == doc_state(doc)


def test_resuming_from_a_partial_state_sends_only_the_rest() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=5)
    doc.get("t", type=pycrdt.Text).insert(0, "x" * 100_000)
    pieces = _pieces(doc.get_update(), b"\x00", 10_000)
    partial: pycrdt.Doc[Any] = pycrdt.Doc()
    for piece in pieces[:4]:
        partial.apply_update(piece)
    rest = doc.get_update(partial.get_state())  # what the relay diffs on reconnect
    assert len(rest) < 0.7 * len(doc.get_update())
    for piece in _pieces(rest, partial.get_state(), 10_000):
        partial.apply_update(piece)
    assert doc_state(partial) == doc_state(doc)


def test_an_item_that_cannot_be_cut_makes_one_larger_piece() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=5)
    doc.get("a", type=pycrdt.Array).append(b"\x01" * 50_000)  # one binary item
    doc.get("t", type=pycrdt.Text).insert(0, "after")
    pieces = _pieces(doc.get_update(), b"\x00", 1000)
    assert max(len(piece) for piece in pieces) > 50_000
    rebuilt: pycrdt.Doc[Any] = pycrdt.Doc()
    for piece in pieces:
        rebuilt.apply_update(piece)
    assert doc_state(rebuilt) == doc_state(doc)


@given(st.binary(max_size=200), st.integers(64, 512))
def test_garbage_raises_value_error_only(data: bytes, size: int) -> None:
    try:
        for _ in split_update(data, {}, size):
            pass
    except ValueError:
        pass


def test_a_piece_size_below_64_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 64"):
        split_update(b"\x00\x00", {}, 10)


def test_zero_length_items_are_sent_before_what_refers_to_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """pycrdt inserting inside a multi-byte character makes yrs write a zero-length
    item that later items refer to; the state the pieces reach stays the true one
    (content written later at that clock must still come with the final SYNC)."""
    a: pycrdt.Doc[Any] = pycrdt.Doc(client_id=1)
    a.get("t", type=pycrdt.Text).insert(0, "ab😀é")
    b: pycrdt.Doc[Any] = pycrdt.Doc(client_id=2)
    b.apply_update(a.get_update())
    b.get("t", type=pycrdt.Text).insert(4, "X")  # byte 4: inside the emoji
    update = b.get_update()
    generator = split_update(update, {}, 64, step=5)
    pieces = []
    try:
        while True:
            piece = next(generator)
            if piece is not None:
                pieces.append(piece)
    except StopIteration as done:
        reach = done.value
    assert "no struct is ready" not in caplog.text
    assert reach == decode_state_vector(b.get_state())
    target: pycrdt.Doc[Any] = pycrdt.Doc()
    for piece in pieces:
        target.apply_update(piece)
    whole: pycrdt.Doc[Any] = pycrdt.Doc()  # pycrdt 0.14 itself leaves "X" pending here
    whole.apply_update(update)
    assert doc_state(target) == doc_state(whole)
