"""The live document shared by replicas and relay rooms (:mod:`crdtsync.document`):
holding updates until their dependencies arrive, rebuilding from stored content,
and verified snapshots."""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtsync.document import (
    DEFAULT_COMPACT_MIN_BYTES,
    EMPTY_UPDATE,
    LiveDocument,
    SnapshotMismatchError,
    check_snapshot,
    compact_threshold,
    verified_snapshot,
)
from crdtsync.errors import InvalidUpdateError
from crdtsync.statevector import doc_state


def _history(edits: int, writers: int = 2) -> list[bytes]:
    """Updates of ``writers`` clients taking turns on one Text, each built on all
    before it (so most depend on earlier ones), in causal order."""
    docs: list[pycrdt.Doc[Any]] = [pycrdt.Doc(client_id=100 + i) for i in range(writers)]
    updates: list[bytes] = []
    for n in range(edits):
        doc = docs[n % writers]
        for update in updates:
            doc.apply_update(update)
        before = doc.get_state()
        text = doc.get("t", type=pycrdt.Text)
        if n % 3 == 2 and len(text) > 1:
            del text[0:1]
        else:
            text.insert(len(text) // 2, f"<{n}>")
        updates.append(doc.get_update(before))
    return updates


def _in_order(updates: list[bytes]) -> pycrdt.Doc[Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    for update in updates:
        doc.apply_update(update)
    return doc


@given(
    st.integers(2, 12).flatmap(
        lambda n: st.tuples(st.just(n), st.lists(st.integers(0, n - 1), min_size=n, max_size=3 * n))
    )
)
def test_any_order_with_duplicates_ends_in_the_same_document(case: tuple[int, list[int]]) -> None:
    """Updates delivered in any order, with duplicates, are held until they can
    apply: the document ends exactly as with in-order delivery."""
    count, order = case
    updates = _history(count)
    order = [*order, *range(count)]  # everything arrives at least once
    live = LiveDocument(exclusive=True)
    for index in order:
        live.apply(updates[index])
    assert not live.held and live.held_bytes == 0
    expected = _in_order(updates)
    assert doc_state(live.doc) == doc_state(expected)
    assert str(live.doc.get("t", type=pycrdt.Text)) == str(expected.get("t", type=pycrdt.Text))
    assert live.state_vector() == doc_state(expected)[0]


def test_an_early_update_is_held_then_released_with_the_one_it_waited_for() -> None:
    first, second = _history(2, writers=1)
    live = LiveDocument(exclusive=True)
    held = live.apply(second)
    assert held.integrated is None and live.is_held(second) and live.held_bytes == len(second)
    assert live.apply(second).integrated is None and len(live.held) == 1  # a duplicate
    applied = live.apply(first)
    assert applied.integrated == first and applied.error is None
    assert applied.released.integrated == [second] and not applied.released.refused
    assert not live.held and live.held_bytes == 0


def test_what_is_held_is_bounded() -> None:
    updates = _history(4, writers=1)
    live = LiveDocument(max_held=2, max_held_bytes=1 << 20)
    live.apply(updates[2])
    live.apply(updates[3])
    with pytest.raises(InvalidUpdateError, match="already wait"):
        live.apply(updates[1])
    small = LiveDocument(max_held_bytes=len(updates[3]) - 1)
    with pytest.raises(InvalidUpdateError, match="already wait"):
        small.apply(updates[3])


def test_garbage_is_refused_before_anything_changes() -> None:
    live = LiveDocument()
    with pytest.raises(InvalidUpdateError):
        live.apply(b"\x01\x02garbage")
    assert live.doc.get_state() == pycrdt.Doc().get_state() and not live.held


def test_the_integrate_hook_applies_updates_and_its_errors_propagate() -> None:
    """A replica integrates through its own function (to mark changes remote); an
    error that is not pycrdt's refusal (a store failure) is not swallowed."""
    seen: list[bytes] = []

    def integrate(doc: pycrdt.Doc[Any], update: bytes) -> None:
        seen.append(update)
        doc.apply_update(update)

    first, second = _history(2, writers=1)
    live = LiveDocument(integrate=integrate)
    live.apply(second)  # held: not integrated yet
    live.apply(first)
    assert seen == [first, second]

    def broken(doc: pycrdt.Doc[Any], update: bytes) -> None:
        raise OSError("disk full")

    live.integrate_with(broken)
    with pytest.raises(OSError, match="disk full"):
        live.apply(_history(3, writers=1)[2])


def test_load_groups_known_entries_and_holds_the_rest() -> None:
    updates = _history(250)
    snapshot = _in_order(updates[:50]).get_update()
    early, late = updates[-1], updates[-2]
    entries = [(u, False) for u in updates[50:-2]] + [(early, True), (late, True)]
    live = LiveDocument()
    assert live.load(snapshot, entries) == []
    assert doc_state(live.doc) == doc_state(_in_order(updates)) and not live.held


def test_load_skips_stored_entries_that_no_longer_apply() -> None:
    updates = _history(3)
    live = LiveDocument()
    refused = live.load(None, [(updates[0], False), (b"\x07junk", True), (updates[1], True)])
    assert refused == [b"\x07junk"]
    assert doc_state(live.doc) == doc_state(_in_order(updates[:2]))


def test_verified_snapshots_reproduce_the_document() -> None:
    doc = _in_order(_history(30))
    snapshot = verified_snapshot(doc)
    check_snapshot(snapshot, doc_state(doc))
    with pytest.raises(SnapshotMismatchError):
        check_snapshot(_in_order(_history(29)).get_update(), doc_state(doc))


def test_compaction_waits_until_the_log_outgrows_its_snapshot() -> None:
    assert compact_threshold(10) == DEFAULT_COMPACT_MIN_BYTES
    assert compact_threshold(10 << 20) == 10 << 20
    assert compact_threshold(0, 64) == 64
    assert pycrdt.Doc().get_update() == EMPTY_UPDATE
