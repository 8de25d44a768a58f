"""Records for offline apps: a collection of JSON records in one replica document.

``replica.records("inspections")`` is a :class:`Records` collection whose records
live in the document ``"inspections"``: every write is an ordinary transaction
of that document, stored (and counted in ``pending()``) before the call returns,
and synced through the relay like any document, to Python replicas and Yjs
clients alike. The document layout and the merge rules are in
:mod:`crdtsync.registers`; cursors and "what changed since" in
:mod:`crdtsync.cursor`.

Merge rules, in short: fields merge one by one (two replicas editing different
fields both keep their edits); concurrent writes of the same field converge on
one value everywhere and are reported by :meth:`Records.conflicts` until a write
that has seen them all (:meth:`Records.resolve`, or any later write of the
field) replaces them; a delete keeps the record as a tombstone, an edit
concurrent with it lands inside the tombstone, and :meth:`Records.restore`
brings every field back.

Cost, for a collection of n records: opening it costs loading the document;
:meth:`~Records.get`, :meth:`~Records.update` and the other single-record calls
read one record; :meth:`~Records.changes` looks up each change since the
cursor. :meth:`~Records.all`, :meth:`~Records.find`, :meth:`~Records.tombstones`
read every record; ``len()`` and :meth:`~Records.conflicts` read every record the
first time, then only the records that changed.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pycrdt

from .cursor import decode_cursor, encode_cursor, heads_since
from .errors import ReplicaClosedError, store_error_in
from .events import ConflictDetected, EventBus, RecordsChanged
from .ids import DocId, ReplicaId
from .recording import OpenDocument
from .registers import (
    DELETED,
    HEADS,
    JSON,
    RECORD_PREFIX,
    WRITERS,
    Candidate,
    Conflict,
    Head,
    RecordState,
    Tombstone,
    check_fields,
    check_record_id,
    check_value,
    head_payload,
    index_entry,
    index_summary,
    read_heads,
    written_at,
)
from .statevector import StateVector, decode_state_vector

__all__ = ["Changes", "Records"]

Record = dict[str, JSON]
Writes = list[tuple[str | None, JSON]]
"""What a write sets: ``(field, value)`` pairs (field :data:`DELETED`: delete or restore)."""


class _IdTakenError(Exception):
    """A new record id is in use already (draw another)."""


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed in a collection since a cursor.

    ``upserted``: the records added, edited or restored since, as they are now;
    ``deleted``: the ids of records deleted since (or edited while deleted);
    ``cursor``: where this answer stands, for the next call. Applying it to a copy
    of ``all()`` taken at the old cursor (update with ``upserted``, drop
    ``deleted``) gives ``all()`` now.
    """

    upserted: dict[str, Record]
    deleted: list[str]
    cursor: str


class Records:
    """A collection of records (see the module docstring); get it with
    :meth:`crdtsync.Replica.records`, which returns the same object for a name.

    Record ids are non-empty str of at most 256 characters (``ValueError``
    otherwise); values are JSON values (``TypeError`` naming the field
    otherwise; ``ValueError`` for NaN, infinities, integers JavaScript cannot
    hold, and nesting deeper than 32). A bad call writes nothing.
    """

    def __init__(
        self, name: DocId, document: OpenDocument, events: EventBus, replica_id: ReplicaId
    ) -> None:
        if document.settle is not None:
            raise RuntimeError(f"document {name!r} already has a records collection")
        self._name = name
        self._document = document
        self._doc: pycrdt.Doc[Any] = document.doc
        self._events = events
        self._replica_id = replica_id
        self._heads: pycrdt.Map[Any] = self._doc.get(HEADS, type=pycrdt.Map)
        self._writers: pycrdt.Map[Any] = self._doc.get(WRITERS, type=pycrdt.Map)
        self._writer_names: dict[str, str] = {}
        self._client: int = self._doc.client_id
        self._registered = False
        """True once ``writers`` names this replica for the document's client id."""
        self._sv_encoded = b""
        self._sv: StateVector = {}
        self._seen: StateVector = self._state_vector()
        """Where changes have been reported (events, caches) up to."""
        self._mark: tuple[int, int] | None = None
        """The document's local transaction count (stored, unsaved) after our last
        write: unchanged, no other local edit moved our clock since."""
        self._live: set[str] | None = None
        """Ids of live records, once something needed them all (then kept up to date)."""
        self._conflicted: set[str] | None = None
        """Ids of live records with a conflict, once :meth:`conflicts` needed them."""
        document.settle = self._settle

    def __repr__(self) -> str:
        return f"<Records {self._name!r}>"

    @property
    def name(self) -> str:
        """The collection's name, which is also its document id."""
        return self._name

    # -- reading -------------------------------------------------------------------------

    def get(self, record_id: str) -> Record | None:
        """The record ``record_id`` (a new dict), or None if it is absent or deleted."""
        key = check_record_id(record_id)
        with self._doc.transaction():
            state = self._read(key)
        return state.fields() if state.live else None

    def __contains__(self, record_id: object) -> bool:
        """True if ``record_id`` is a live record (False for anything that is not an id)."""
        try:
            key = check_record_id(record_id)
        except ValueError:
            return False
        with self._doc.transaction():
            return self._read(key).live

    def __len__(self) -> int:
        """The number of live records."""
        return len(self._live_ids())

    def __iter__(self) -> Iterator[str]:
        """The ids of live records, sorted."""
        return iter(sorted(self._live_ids()))

    def all(self) -> dict[str, Record]:
        """Every live record, ``{id: record}``, sorted by id."""
        return {state.record_id: state.fields() for state in self._states() if state.live}

    def find(self, **values: Any) -> dict[str, Record]:
        """The live records whose fields equal every one of ``values``, ``{id: record}``.

        A value of None also matches a record without that field.
        """
        for field, value in values.items():
            check_value(field, value)
        found: dict[str, Record] = {}
        for record_id, record in self.all().items():
            if all(record.get(field) == value for field, value in values.items()):
                found[record_id] = record
        return found

    def tombstone(self, record_id: str) -> Tombstone | None:
        """The tombstone of ``record_id`` if it is deleted, else None."""
        key = check_record_id(record_id)
        with self._doc.transaction():
            state = self._read(key)
        return self._tombstone(state)

    def tombstones(self) -> dict[str, Tombstone]:
        """Every deleted record's tombstone, ``{id: tombstone}``, sorted by id."""
        found: dict[str, Tombstone] = {}
        for state in self._states():
            tombstone = self._tombstone(state)
            if tombstone is not None:
                found[state.record_id] = tombstone
        return found

    def _tombstone(self, state: RecordState) -> Tombstone | None:
        head = state.tombstone_head()
        if head is None:
            return None
        return Tombstone(state.record_id, self._writer(head), written_at(head.at), state.fields())

    # -- writing -------------------------------------------------------------------------

    def add(self, fields: Mapping[str, Any]) -> str:
        """Create a record with ``fields``; return its new unique id."""
        writes: Writes = list(check_fields(fields).items()) or [(DELETED, False)]
        record_id = secrets.token_hex(8)

        def plan(state: RecordState) -> Writes:
            if state.exists:  # 64 random bits: never, in practice
                raise _IdTakenError
            return writes

        while True:
            try:
                self._write(record_id, plan)
            except _IdTakenError:
                record_id = secrets.token_hex(8)
                continue
            return record_id

    def put(self, record_id: str, fields: Mapping[str, Any]) -> None:
        """Create ``record_id`` with ``fields``, or set those fields of the existing
        record (the others are kept). A deleted record is restored first."""
        key = check_record_id(record_id)
        writes: Writes = list(check_fields(fields).items())

        def plan(state: RecordState) -> Writes:
            if state.deleted:
                return [(DELETED, False), *writes]
            if not state.exists and not writes:
                return [(DELETED, False)]  # an empty record still exists
            return writes

        self._write(key, plan)

    def update(self, record_id: str, /, **fields: Any) -> None:
        """Set ``fields`` of the live record ``record_id``; the others are kept.

        Raises ``KeyError`` if the record is absent or deleted (``put`` creates,
        ``restore`` undeletes).
        """
        key = check_record_id(record_id)
        writes: Writes = list(check_fields(fields).items())

        def plan(state: RecordState) -> Writes:
            if not state.live:
                raise KeyError(f"no record {key!r} in {self._name!r}" + _why(state))
            return writes

        self._write(key, plan)

    def delete(self, record_id: str) -> None:
        """Delete ``record_id``, keeping it as a tombstone (who, when, its fields).

        Deleting a deleted record does nothing; ``KeyError`` if there is no such record.
        """
        key = check_record_id(record_id)
        self._write(key, lambda state: [] if self._known(state).deleted else [(DELETED, True)])

    def restore(self, record_id: str) -> None:
        """Undo the deletion of ``record_id``: its fields come back, with the edits
        made inside the tombstone. Restoring a live record does nothing;
        ``KeyError`` if there is no such record."""
        key = check_record_id(record_id)
        self._write(key, lambda state: [(DELETED, False)] if self._known(state).deleted else [])

    def resolve(self, record_id: str, field: str, value: Any) -> None:
        """Write ``value`` to ``field`` as a write that has seen every value this
        replica has for it: the conflict is gone here at once, and on every other
        replica once they have this write (unless a newer concurrent write came
        meanwhile: that is a new conflict). Works on deleted records too;
        ``KeyError`` if there is no such record."""
        key = check_record_id(record_id)
        writes: Writes = list(check_fields({field: value}).items())
        self._write(key, lambda state: writes if self._known(state).exists else [])

    def _known(self, state: RecordState) -> RecordState:
        if not state.exists:
            raise KeyError(f"no record {state.record_id!r} in {self._name!r}")
        return state

    # -- changes and conflicts -------------------------------------------------------------

    def cursor(self) -> str:
        """This replica's position in the collection, as an opaque string (a state
        vector, never a timestamp): pass it to :meth:`changes` later."""
        return encode_cursor(self._name, self._state_vector())

    def changes(self, since: str | None = None) -> Changes:
        """The records added, edited or deleted since the replica stood at ``since``
        (a :meth:`cursor`, or the ``cursor`` of an earlier :class:`Changes`), by
        anyone, locally or through sync. ``since=None``: every live record.

        Raises ``ValueError`` if ``since`` is not a cursor of this collection.
        """
        now = self._state_vector()
        cursor = encode_cursor(self._name, now)
        if since is None:
            return Changes(self.all(), [], cursor)
        upserted: dict[str, Record] = {}
        deleted: list[str] = []
        with self._doc.transaction():
            touched = heads_since(self._doc, self._heads, decode_cursor(self._name, since), now)
            for record_id in sorted(touched):
                state = self._read(record_id)
                if state.live:
                    upserted[record_id] = state.fields()
                elif state.exists:
                    deleted.append(record_id)
        return Changes(upserted, deleted, cursor)

    def conflicts(self) -> list[Conflict]:
        """Every field of a live record that holds concurrent values, sorted by record
        id and field. Every replica that has the same writes reports the same list."""
        self._settle(local=True)
        if self._conflicted is None:
            self._build_caches()
        assert self._conflicted is not None
        found: list[Conflict] = []
        for record_id in sorted(self._conflicted):
            state = self._read(record_id)
            for field, heads in sorted(state.conflicted().items()):
                candidates = [
                    Candidate(head.value, self._writer(head), written_at(head.at)) for head in heads
                ]
                found.append(Conflict(record_id, field, heads[0].value, candidates))
        return found

    # -- the document ------------------------------------------------------------------------

    def _state_vector(self) -> StateVector:
        """The document's state vector (do not change the dict: it is reused)."""
        encoded = self._doc.get_state()
        if encoded != self._sv_encoded:
            self._sv_encoded, self._sv = encoded, decode_state_vector(encoded)
        return self._sv

    def _read(self, record_id: str) -> RecordState:
        # Getting a root type that does not exist creates an empty one in this Doc
        # only: nothing is written, stored or sent.
        record = self._doc.get(RECORD_PREFIX + record_id, type=pycrdt.Map)
        return RecordState(record_id, read_heads(str(record)))

    def _states(self) -> list[RecordState]:
        """Every record (live or deleted), sorted by id; refreshes the caches."""
        self._settle(local=True)
        with self._doc.transaction():
            ids = index_summary(str(self._heads)).records
            states = [self._read(record_id) for record_id in sorted(ids)]
        live = {state.record_id for state in states if state.live}
        self._live = live
        self._conflicted = {s.record_id for s in states if s.record_id in live and s.conflicted()}
        return states

    def _build_caches(self) -> None:
        """The live and conflicted records from one read of the ``heads`` map and reads
        of the records it cannot vouch for (those with delete/restore heads or two
        heads of a field): not every record."""
        with self._doc.transaction():
            summary = index_summary(str(self._heads))
            doubtful = summary.maybe_deleted | summary.maybe_conflicted
            states = {record_id: self._read(record_id) for record_id in doubtful}
        self._live = {
            record_id
            for record_id in summary.records
            if record_id not in states or states[record_id].live
        }
        self._conflicted = {
            record_id
            for record_id, state in states.items()
            if record_id in self._live and state.conflicted()
        }

    def _live_ids(self) -> set[str]:
        self._settle(local=True)
        if self._live is None:
            self._build_caches()
        assert self._live is not None
        return self._live

    def _writer(self, head: Head) -> str:
        """Who wrote ``head``: the name its client registered, else its client id."""
        client = head.client
        name = self._writer_names.get(client)
        if name is None:
            registered = self._writers.get(client)
            if not isinstance(registered, str):
                return client
            name = self._writer_names[client] = registered
        return name

    def _write(self, record_id: str, plan: Callable[[RecordState], Writes]) -> None:
        """One transaction: read the record, ask ``plan`` what to write (it may raise
        to write nothing), and make each ``(field, value)`` replace the heads of that
        field this replica has with one new head (:mod:`crdtsync.registers`). The
        change is stored before this returns."""
        if self._document.closed:
            raise ReplicaClosedError(
                f"{self._name!r} cannot be written: the replica is closed, or the document "
                "was reset, removed or evicted (then call replica.records() again)"
            )
        doc = self._doc
        try:
            with doc.transaction():
                record = doc.get(RECORD_PREFIX + record_id, type=pycrdt.Map)
                state = RecordState(record_id, read_heads(str(record)))
                writes = plan(state)
                if not writes:
                    return
                client = self._client
                document = self._document
                # Our clock: where our last write left it, unless another local
                # transaction (an edit of the Doc itself) ran since: then read it.
                if self._mark == (document.last_seq, len(document.unsaved)):
                    start = self._seen
                else:
                    start = self._state_vector()
                clock = start.get(client, 0)
                if not self._registered:
                    if self._writers.get(str(client)) != self._replica_id:
                        self._writers[str(client)] = self._replica_id
                        clock += 1
                    self._registered = True
                at = int(time.time() * 1000)
                heads = self._heads
                dots: set[str] = set()
                for field, value in writes:
                    for head in state.heads(field):
                        del record[head.dot]
                        with contextlib.suppress(KeyError):  # a client may not list it
                            del heads[head.dot]
                    dot = f"{client}.{clock}"  # the entry's own Yjs id
                    record[dot] = head_payload(field, value, at)
                    heads[dot] = index_entry(record_id, field)
                    dots.add(dot)
                    clock += 2
        except ExceptionGroup as group:
            error = store_error_in(group)
            if error is None:
                raise
            raise error from group
        self._mark = (document.last_seq, len(document.unsaved))
        if start == self._seen:  # nothing else changed since the last report
            self._seen = {**start, client: clock}
            self._report({record_id: dots}, local=True)
        else:
            self._settle(local=True)

    # -- reporting changes -------------------------------------------------------------------

    def _settle(self, local: bool) -> None:
        """Report what changed since the last report (events, caches). Called after each
        write, and by the document before (``local``: edits made on the Doc directly)
        and after (received) each remote update."""
        now = self._state_vector()
        if now == self._seen:
            return
        if not self._events and self._live is None and self._conflicted is None:
            self._seen = now  # nobody to tell (a first sync of a big collection, say)
            return
        touched = heads_since(self._doc, self._heads, self._seen, now)
        self._seen = now
        if touched:
            self._report(touched, local)

    def _report(self, touched: dict[str, set[str]], local: bool) -> None:
        observed = bool(self._events)
        if not observed and self._live is None and self._conflicted is None:
            return
        upserted: list[str] = []
        deleted: list[str] = []
        detected: list[tuple[str, str]] = []
        with self._doc.transaction():
            states = [self._read(record_id) for record_id in sorted(touched)]
        for state in states:
            record_id = state.record_id
            if not state.exists:
                continue
            live = state.live
            (upserted if live else deleted).append(record_id)
            conflicted = state.conflicted() if live else {}
            if self._live is not None:
                _mark(self._live, record_id, live)
            if self._conflicted is not None:
                _mark(self._conflicted, record_id, bool(conflicted))
            if not local:
                new = touched[record_id]
                detected.extend(
                    (record_id, field)
                    for field, heads in sorted(conflicted.items())
                    if any(head.dot in new for head in heads)
                )
        if observed and (upserted or deleted):
            self._events.emit(RecordsChanged(self._name, tuple(upserted), tuple(deleted), local))
            for record_id, field in detected:
                self._events.emit(ConflictDetected(self._name, record_id, field))


def _mark(ids: set[str], record_id: str, present: bool) -> None:
    if present:
        ids.add(record_id)
    else:
        ids.discard(record_id)


def _why(state: RecordState) -> str:
    return " (it is deleted; restore() or put() brings it back)" if state.deleted else ""
