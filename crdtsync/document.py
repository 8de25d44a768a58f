"""One live document, and the updates it holds back until their dependencies arrive.

pycrdt 0.14.13 integrates an update that arrives before an earlier update of
the same client inconsistently: the same set of updates applied in different
orders can end in different documents. A :class:`LiveDocument` therefore holds
such an update (the caller stores it, the document does not see it) until
:meth:`~crdtsync.update.UpdateSummary.missing` says everything it needs is
there, then applies it.

The replica (:mod:`crdtsync.replica`) and the relay's rooms (``relay.rooms``)
keep their documents in this one object: the same holding rules, the same
rebuild from a stored snapshot and log (:meth:`LiveDocument.load`), and the
same verified snapshots (:func:`verified_snapshot`) for compaction. Nothing
here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import pycrdt

from .errors import InvalidUpdateError
from .statevector import (
    DeleteSet,
    StateVector,
    decode_state_vector,
    doc_state,
    encode_state_vector,
)
from .update import UpdateSummary, summarize_update

__all__ = [
    "DEFAULT_COMPACT_MIN_BYTES",
    "EMPTY_UPDATE",
    "LOAD_GROUP",
    "Applied",
    "Held",
    "LiveDocument",
    "Release",
    "SnapshotMismatchError",
    "check_snapshot",
    "compact_threshold",
    "verified_snapshot",
]

EMPTY_UPDATE: Final = b"\x00\x00"
"""An update with no structs and no deletions: what a transaction that changed
nothing encodes to, and y-protocols' "nothing to add" sync step 2."""

LOAD_GROUP: Final = 100
"""Updates applied per transaction when rebuilding a document (grouping about
100 is ~40% cheaper than one each; one giant transaction is 4x slower)."""


DEFAULT_COMPACT_MIN_BYTES: Final = 256 * 1024
"""Log bytes below which a document's log is never folded into its snapshot."""


def compact_threshold(snapshot_bytes: int, min_bytes: int = DEFAULT_COMPACT_MIN_BYTES) -> int:
    """Log bytes above which a document is compacted: the log outgrew both its
    snapshot and ``min_bytes`` (so compaction costs O(1) per byte appended)."""
    return max(min_bytes, snapshot_bytes)


class SnapshotMismatchError(ValueError):
    """A snapshot does not reproduce the document it was made from."""


@dataclass(frozen=True, slots=True)
class Held:
    """An update waiting for its dependencies, with its header summary."""

    update: bytes
    summary: UpdateSummary


@dataclass(frozen=True, slots=True)
class Release:
    """What :meth:`LiveDocument.release` applied.

    ``integrated``: in order, what the document took of each released update
    (the update itself, or the part pycrdt integrated before refusing the
    rest); ``refused``: the released updates pycrdt refused (part of), each
    with that part.
    """

    integrated: list[bytes] = field(default_factory=list)
    refused: list[tuple[Held, bytes]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Applied:
    """What :meth:`LiveDocument.apply` did with one update.

    ``integrated``: what the document took of the update (the update itself, or
    the part pycrdt integrated before refusing the rest), None if it is held;
    ``error``: why part of it was refused; ``released``: held updates it let the
    document apply.
    """

    integrated: bytes | None
    error: str | None = None
    released: Release = field(default_factory=Release)


def _apply_update(doc: pycrdt.Doc[Any], update: bytes) -> None:
    doc.apply_update(update)


class LiveDocument:
    """A ``pycrdt.Doc`` and the received updates it holds until their dependencies
    arrive.

    ``exclusive``: every change to the document goes through this object (the
    relay's rooms), so its state vector is tracked from update headers instead
    of being read from the document at each update. A replica's documents also
    change by local edits and are not exclusive.

    ``integrate(doc, update)`` applies one update whose dependencies are present
    (the replica's marks the change as remote so that it is stored as such);
    pycrdt's ``ValueError``/``RuntimeError`` from it mean the update was refused,
    anything else propagates. ``max_held``/``max_held_bytes`` bound what is held
    (None: unbounded).
    """

    __slots__ = (
        "_integrate",
        "_sv",
        "doc",
        "held",
        "held_bytes",
        "max_held",
        "max_held_bytes",
        "name",
    )

    def __init__(
        self,
        doc: pycrdt.Doc[Any] | None = None,
        *,
        name: str = "",
        exclusive: bool = False,
        integrate: Callable[[pycrdt.Doc[Any], bytes], None] = _apply_update,
        max_held: int | None = None,
        max_held_bytes: int | None = None,
    ) -> None:
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc() if doc is None else doc
        self.name = name
        self.held: list[Held] = []
        self.held_bytes = 0
        self.max_held = max_held
        self.max_held_bytes = max_held_bytes
        self._integrate = integrate
        self._sv: StateVector | None = (
            decode_state_vector(self.doc.get_state()) if exclusive else None
        )

    def __repr__(self) -> str:
        return f"<LiveDocument {self.name!r} {len(self.held)} held>"

    def integrate_with(self, integrate: Callable[[pycrdt.Doc[Any], bytes], None]) -> None:
        """Apply updates with ``integrate`` from now on (see the class docstring)."""
        self._integrate = integrate

    # -- state ----------------------------------------------------------------------------

    def state_vector(self) -> StateVector:
        """The document's state vector (tracked when exclusive, else read). Read it, do not
        keep or change it: the tracked one changes in place as updates apply."""
        return self._read_sv() if self._sv is None else self._sv

    def _refresh(self) -> None:
        if self._sv is not None:
            self._sv = self._read_sv()

    # -- one update, step by step ---------------------------------------------------------

    def summarize(self, update: bytes) -> UpdateSummary:
        """The header of ``update``; :class:`InvalidUpdateError` if undecodable."""
        try:
            return summarize_update(update)
        except ValueError as exc:
            raise InvalidUpdateError(f"update for {self.name!r} rejected: {exc}") from exc

    def waits(self, summary: UpdateSummary) -> bool:
        """True if the update summarized needs something the document lacks."""
        return bool(summary.missing(self.state_vector()))

    def is_held(self, update: bytes) -> bool:
        """True if exactly ``update`` is already held."""
        return any(item.update == update for item in self.held)

    def check_hold(self, update: bytes) -> None:
        """Raise :class:`InvalidUpdateError` unless ``update`` may be held: within the
        limits, and decodable by pycrdt (the header reader does not look inside
        content, and a held update reaches the document only later)."""
        if (self.max_held is not None and len(self.held) >= self.max_held) or (
            self.max_held_bytes is not None and self.held_bytes + len(update) > self.max_held_bytes
        ):
            raise InvalidUpdateError(
                f"{len(self.held)} updates already wait for missing dependencies "
                f"({self.held_bytes} bytes); send those dependencies first"
            )
        scratch: pycrdt.Doc[Any] = pycrdt.Doc()
        try:
            scratch.apply_update(update)
        except (ValueError, RuntimeError) as exc:
            raise InvalidUpdateError(f"update for {self.name!r} rejected: {exc}") from exc

    def hold(self, update: bytes, summary: UpdateSummary) -> None:
        """Keep ``update`` until its dependencies arrive (after :meth:`check_hold`)."""
        self.held.append(Held(update, summary))
        self.held_bytes += len(update)

    def integrate(
        self, update: bytes, summary: UpdateSummary | None = None
    ) -> tuple[bytes, str | None]:
        """Apply an update whose dependencies are present (``summary``: its header, if
        read already).

        Returns what the document took of it (the update, or if pycrdt refused it
        part-way the diff from the state before) and why the rest was refused
        (None if it took everything).
        """
        before = self.state_vector()
        try:
            self._integrate(self.doc, update)
        except (ValueError, RuntimeError) as exc:
            part = self.doc.get_update(encode_state_vector(before))
            self._refresh()
            return part, f"update refused by pycrdt: {exc}"
        if self._sv is not None:
            if summary is not None:
                summary.advance(self._sv)  # in place: ``before`` is no longer needed
            else:
                self._sv = self._read_sv()
        return update, None

    def _read_sv(self) -> StateVector:
        return decode_state_vector(self.doc.get_state())

    def release(self) -> Release:
        """Apply every held update whose dependencies are now present, until none is."""
        release = Release()
        progress = bool(self.held)
        while progress:
            progress = False
            have = decode_state_vector(self.doc.get_state())
            for item in self.held:
                if not item.summary.missing(have):
                    self.held.remove(item)
                    self.held_bytes -= len(item.update)
                    taken, error = self.integrate(item.update)
                    release.integrated.append(taken)
                    if error is not None:
                        release.refused.append((item, taken))
                    progress = True
                    break
        self._refresh()
        return release

    # -- one update, whole ----------------------------------------------------------------

    def apply(self, update: bytes, summary: UpdateSummary | None = None) -> Applied:
        """Hold ``update`` if it needs what the document lacks, else integrate it and
        release what it unblocks (``summary``: its header, if read already).

        Raises :class:`InvalidUpdateError` if nothing of it can be used, or if it
        must wait and too much is held already. A held update (or one held
        already) gives ``integrated=None``. If pycrdt refuses it part-way, the
        part it integrated and the reason are returned, and nothing is released.
        """
        if summary is None:
            summary = self.summarize(update)
        if summary.missing(self.state_vector()):
            if not self.is_held(update):
                self.check_hold(update)
                self.hold(update, summary)
            return Applied(None)
        taken, error = self.integrate(update, summary)
        if error is not None or not self.held:
            return Applied(taken, error)
        return Applied(taken, None, self.release())

    # -- rebuilding -----------------------------------------------------------------------

    def load(self, snapshot: bytes | None, entries: Iterable[tuple[bytes, bool]]) -> list[bytes]:
        """Rebuild from a stored snapshot and log, in log order.

        ``entries`` are ``(update, check)``: entries known to have been integrated
        when they were stored (``check`` False) are applied in groups of
        :data:`LOAD_GROUP` per transaction; the others go through :meth:`apply`
        (held while their dependencies are missing, as they were live).
        ``ValueError``/``RuntimeError`` from pycrdt on the snapshot or on a group
        propagates: the stored content is unusable. Returns the checked entries
        that could not be used (pycrdt refused them, now or once released).
        """
        if snapshot is not None:
            self.doc.apply_update(snapshot)
        self._refresh()
        group: list[bytes] = []
        refused: list[bytes] = []
        for update, check in entries:
            if not check:
                group.append(update)
                if len(group) >= LOAD_GROUP:
                    self._apply_group(group)
                continue
            self._apply_group(group)
            try:
                applied = self.apply(update)
            except InvalidUpdateError:
                refused.append(update)
                continue
            if applied.error is not None:
                refused.append(update)
            refused.extend(held.update for held, _ in applied.released.refused)
        self._apply_group(group)
        refused.extend(held.update for held, _ in self.release().refused)
        return refused

    def _apply_group(self, group: list[bytes]) -> None:
        """Apply updates in one transaction (cheaper than one each), then empty ``group``."""
        if group:
            with self.doc.transaction():
                for update in group:
                    self.doc.apply_update(update)
            group.clear()
            self._refresh()


def check_snapshot(snapshot: bytes, expected: tuple[StateVector, DeleteSet]) -> None:
    """Raise :class:`SnapshotMismatchError` unless ``snapshot`` loads into the state
    ``expected`` (state vector and delete set)."""
    check: pycrdt.Doc[Any] = pycrdt.Doc()
    check.apply_update(snapshot)
    if doc_state(check) != expected:
        raise SnapshotMismatchError("the snapshot does not reproduce the document it was made from")


def verified_snapshot(doc: pycrdt.Doc[Any]) -> bytes:
    """``doc``'s state as one update, checked to rebuild the same items and
    deletions before anyone deletes what it replaces (compaction encodes through
    a ``Doc``, never ``merge_updates``: see DESIGN.md, Storage).

    Raises :class:`SnapshotMismatchError` if it does not."""
    snapshot = doc.get_update()
    check_snapshot(snapshot, doc_state(doc))
    return snapshot
