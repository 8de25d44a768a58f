"""How a records collection lies in its Yjs document: multi-value registers of plain JSON.

A collection (:class:`crdtsync.records.Records`) keeps its records in the
document named after it, in plain ``Y.Map`` root types holding JSON values, so
that any Yjs client (``yjs`` in a browser, ``pycrdt``, ``yrs``) reads and writes
them with no crdtsync code and the wire format stays plain Yjs::

    rec:<record id>   Y.Map   one per record: its *heads*, by head id
        "<client>.<clock>" -> {"f": "<field>", "v": <JSON value>, "at": <ms>}   a field write
        "<client>.<clock>" -> {"d": true | false, "at": <ms>}                   a delete / restore
    heads             Y.Map   every head of every record: head id -> [record id, field]
                              (field null for a delete / restore head)
    writers           Y.Map   "<client>" -> who writes under that Yjs client id
                              (the writing Replica's replica_id, or any label)

**A head is a write nobody has overwritten yet.** Its id is the Yjs id of the
head's own map entry: ``<client>.<clock>`` (decimal), the writer's client id and
the clock its document stands at just before it sets the entry
(``Y.getState(ydoc.store, ydoc.clientID)`` in Yjs). Each field is a
*multi-value register*: its heads are the writes of that field that no later
write has seen. ``at`` is the writer's wall clock in milliseconds since the
epoch, shown to people and used to order concurrent heads, never to decide
what changed.

**Writing a field** (the one rule every client follows, in one transaction):
delete every head of that field in ``rec:<id>`` and its entry in ``heads``, then
add the new head under its own id in both. In Yjs::

    ydoc.transact(() => {
      const record = ydoc.getMap('rec:' + id), heads = ydoc.getMap('heads')
      for (const [key, head] of record) {
        if (head.f === field) { record.delete(key); heads.delete(key) }
      }
      const key = `${ydoc.clientID}.${Y.getState(ydoc.store, ydoc.clientID)}`
      record.set(key, { f: field, v: value, at: Date.now() })
      heads.set(key, [id, field])
    })

Deleting and restoring a record write the ``d`` register the same way (its
heads are the entries with ``d`` instead of ``f``; their ``heads`` entry is
``[id, null]``). Register the writer once
with ``ydoc.getMap('writers').set(String(ydoc.clientID), name)``.

**Reading** (:class:`RecordState`): a record exists once ``rec:<id>`` has a head.
A field's value is that of its *winning* head, the greatest by ``(at, id)``
(``at`` first, then the head id compared as a string); a field with more than
one head is in *conflict*: those heads are concurrent writes (neither writer
had seen the other's), every replica that has both sees the same heads, and a
write that saw them all replaces them. A record is deleted while *any* head of
its ``d`` register says ``true``: a delete wins over a concurrent restore.

**Why this shape.** A root type per record, because root types merge by name:
two replicas that create the same record id offline both keep their fields (a
``Y.Map`` nested under a key would keep only one replica's map). Unique keys
per write, because a ``Y.Map`` key keeps a single value: concurrent writes to
one key lose all but one, while entries under distinct keys all survive, which
is what makes the concurrent values visible; deleting exactly the entries a
writer saw is what makes "saw the previous value" visible. The ``heads`` map
lets a replica find the records changed since a state vector without reading
every record: every change adds a head whose id is a clock beyond that state
vector (see :mod:`crdtsync.cursor`); and since it names each head's field, one
read of it tells which records may be deleted or in conflict (:func:`index_summary`).

**Deletes keep the record.** A delete writes a ``d: true`` head and touches no
field, so an edit made concurrently with a delete lands inside the tombstone;
the record stays deleted (no record comes back by itself because someone else
was still editing it), and :meth:`~crdtsync.records.Records.restore` brings it
back with every field, including that edit. Nothing is lost either way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

__all__ = [
    "DELETED",
    "HEADS",
    "MAX_DEPTH",
    "MAX_RECORD_ID",
    "MAX_SAFE_INTEGER",
    "RECORD_PREFIX",
    "WRITERS",
    "Candidate",
    "Conflict",
    "Head",
    "IndexSummary",
    "RecordState",
    "Tombstone",
    "check_fields",
    "check_record_id",
    "check_value",
    "head_payload",
    "index_entry",
    "index_record",
    "index_summary",
    "read_heads",
    "written_at",
]

RECORD_PREFIX: Final = "rec:"
"""Name of a record's root map: ``rec:<record id>``."""
HEADS: Final = "heads"
"""Name of the root map of every head id to its record id."""
WRITERS: Final = "writers"
"""Name of the root map of Yjs client ids (decimal strings) to who writes under them."""
DELETED: Final = None
"""The register key of a record's deleted state, among its field names."""

MAX_RECORD_ID: Final = 256
"""The longest record id, in characters."""
MAX_SAFE_INTEGER: Final = 2**53 - 1
"""Integers beyond this lose precision in JavaScript (every Yjs browser client)."""
MAX_DEPTH: Final = 32
"""Deepest nesting of lists and dicts in a value (Yjs decoders stop at 64)."""

JSON = Any  # str | int | float | bool | None | list[JSON] | dict[str, JSON]


def check_record_id(record_id: object) -> str:
    """Return ``record_id`` if it is a usable record id, else raise ``ValueError``:
    a non-empty str of at most :data:`MAX_RECORD_ID` characters (valid unicode)."""
    if not isinstance(record_id, str):
        raise ValueError(f"a record id must be a str, not {type(record_id).__name__}")
    if not record_id:
        raise ValueError("a record id must not be empty")
    if len(record_id) > MAX_RECORD_ID:
        raise ValueError(
            f"a record id has at most {MAX_RECORD_ID} characters, not {len(record_id)}"
        )
    if not _encodable(record_id):
        raise ValueError(f"record id {record_id!r} is not valid unicode text")
    return record_id


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_value(field: str, value: object, depth: int = 0) -> None:
    """Raise unless ``value`` is a JSON value that every Yjs client reads back equal.

    ``TypeError`` (naming ``field``) for anything but str, int, float, bool,
    None, and lists and dicts (with str keys) of them; ``ValueError`` for NaN and
    infinities, integers beyond :data:`MAX_SAFE_INTEGER`, text that is not valid
    unicode, and nesting deeper than :data:`MAX_DEPTH`.
    """
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        if not _encodable(value):
            raise ValueError(f"field {field!r}: the text is not valid unicode")
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise ValueError(
                f"field {field!r}: {value} is beyond ±2**53-1, which JavaScript cannot hold"
            )
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"field {field!r}: {value} is not a JSON number")
    elif isinstance(value, list | dict):
        if depth >= MAX_DEPTH:
            raise ValueError(f"field {field!r}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, list):
            for item in value:
                check_value(field, item, depth + 1)
            return
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"field {field!r}: a dict key must be a str, not {type(key).__name__}"
                )
            if not _encodable(key):
                raise ValueError(f"field {field!r}: a dict key is not valid unicode")
            check_value(field, item, depth + 1)
    else:
        raise TypeError(
            f"field {field!r}: {type(value).__name__} is not a JSON value "
            "(str, int, float, bool, None, or lists and dicts of them)"
        )


def check_fields(fields: Mapping[str, object]) -> dict[str, JSON]:
    """Validate field names (non-empty str) and values (:func:`check_value`); return a copy."""
    if not isinstance(fields, Mapping):
        raise TypeError(f"fields must be a mapping of field name to value, not {type(fields)}")
    checked: dict[str, JSON] = {}
    for field, value in fields.items():
        if not isinstance(field, str):
            raise TypeError(f"a field name must be a str, not {type(field).__name__}")
        if not field or not _encodable(field):
            raise ValueError(f"field name {field!r} must be non-empty unicode text")
        check_value(field, value)
        checked[field] = value
    return checked


def head_payload(field: str | None, value: JSON, at: int) -> dict[str, JSON]:
    """The entry a write adds: a field write, or (``field`` is :data:`DELETED`) a
    delete (``value`` True) or restore (False)."""
    if field is DELETED:
        return {"d": bool(value), "at": at}
    return {"f": field, "v": value, "at": at}


def index_entry(record_id: str, field: str | None) -> list[str | None]:
    """The ``heads`` entry of a head of ``field`` of ``record_id``."""
    return [record_id, field]


def index_record(entry: object) -> str | None:
    """The record id in a ``heads`` entry (None if it is not one)."""
    if type(entry) is list and entry and type(entry[0]) is str:
        return entry[0]
    return None


@dataclass(frozen=True, slots=True)
class IndexSummary:
    """What one read of the ``heads`` map tells about every record.

    ``records``: every record with a head; ``maybe_deleted``: those with a head of
    the deleted register (a delete, or a restore); ``maybe_conflicted``: those
    with two heads of one field (or an entry that does not name its field).
    """

    records: set[str]
    maybe_deleted: set[str]
    maybe_conflicted: set[str]


def index_summary(heads_json: str) -> IndexSummary:
    """Summarize the ``heads`` map from its JSON (``str(map)``)."""
    records: set[str] = set()
    maybe_deleted: set[str] = set()
    maybe_conflicted: set[str] = set()
    seen: set[tuple[str, str]] = set()
    entries = json.loads(heads_json)
    for entry in entries.values() if isinstance(entries, dict) else ():
        record_id = index_record(entry)
        if record_id is None:
            continue
        records.add(record_id)
        field = entry[1] if len(entry) > 1 else ""
        if field is None:
            maybe_deleted.add(record_id)
        elif type(field) is not str or (record_id, field) in seen:
            maybe_conflicted.add(record_id)
        else:
            seen.add((record_id, field))
    return IndexSummary(records, maybe_deleted, maybe_conflicted)


def written_at(at: int | float) -> datetime:
    """A head's ``at`` (milliseconds since the epoch) as an aware UTC datetime."""
    return datetime.fromtimestamp(at / 1000, UTC)


class Head(NamedTuple):
    """One head of a record: ``dot`` is its id (``<client>.<clock>``); ``field`` is the
    field it writes, or :data:`DELETED` for the deleted register, whose ``value``
    is then True (deleted) or False (restored)."""

    dot: str
    field: str | None
    value: JSON
    at: int | float

    @property
    def client(self) -> str:
        """The Yjs client id that wrote this head (the part of its id before the dot)."""
        return self.dot.partition(".")[0]


def _order(head: Head) -> tuple[int | float, str]:
    """Concurrent heads are ordered by this; the greatest wins."""
    return (head.at, head.dot)


def read_heads(record_json: str) -> list[Head]:
    """The heads of a record from its root map's JSON (``str(map)``).

    Entries that do not have the shape above (written by a client that does not
    follow the layout) are ignored.
    """
    entries = json.loads(record_json)
    if not isinstance(entries, dict):
        return []
    heads: list[Head] = []
    for dot, entry in entries.items():
        if type(entry) is not dict:
            continue
        at = entry.get("at", 0)
        if type(at) is not int and type(at) is not float:
            at = 0
        field = entry.get("f")
        if type(field) is str and field:
            heads.append(Head(dot, field, entry.get("v"), at))
        elif field is None and type(entry.get("d")) is bool:
            heads.append(Head(dot, DELETED, entry["d"], at))
    return heads


@dataclass(frozen=True, slots=True)
class Candidate:
    """One concurrent value of a field in conflict: who wrote it and when (their clock,
    for display only). ``replica_id`` is the writing Replica's ``replica_id`` (for a
    Yjs client: what it registered in ``writers``, else its client id)."""

    value: JSON
    replica_id: str
    written_at: datetime


@dataclass(frozen=True, slots=True)
class Conflict:
    """Concurrent writes of one field of one record, that no write has resolved yet.

    ``value`` is what the field holds now (the winning candidate, the same on
    every replica); ``candidates`` are every concurrent value, winner first.
    """

    record_id: str
    field: str
    value: JSON
    candidates: list[Candidate]


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A deleted record: who deleted it and when (their clock), and the fields it keeps
    (``restore`` brings them back)."""

    record_id: str
    replica_id: str
    deleted_at: datetime
    fields: dict[str, JSON]


class RecordState:
    """A record as its heads make it (see the module docstring for the rules)."""

    __slots__ = ("by_field", "record_id")

    def __init__(self, record_id: str, heads: list[Head]) -> None:
        self.record_id = record_id
        self.by_field: dict[str | None, list[Head]] = {}
        """Heads per field (:data:`DELETED` for the deleted register), winner first."""
        for head in heads:
            self.by_field.setdefault(head.field, []).append(head)
        for group in self.by_field.values():
            if len(group) > 1:
                group.sort(key=_order, reverse=True)

    @property
    def exists(self) -> bool:
        """True once anything was written to the record (it may be deleted)."""
        return bool(self.by_field)

    @property
    def deleted(self) -> bool:
        """True while any head of the deleted register says deleted (delete wins)."""
        return any(head.value is True for head in self.by_field.get(DELETED, ()))

    @property
    def live(self) -> bool:
        """True if the record exists and is not deleted."""
        return self.exists and not self.deleted

    def fields(self) -> dict[str, JSON]:
        """The record: each field's winning value."""
        return {
            field: group[0].value for field, group in self.by_field.items() if field is not DELETED
        }

    def heads(self, field: str | None) -> list[Head]:
        """The heads of ``field`` (winner first): what a write of it replaces."""
        return self.by_field.get(field, [])

    def conflicted(self) -> dict[str, list[Head]]:
        """Fields with concurrent heads, each with its heads, winner first."""
        return {
            field: group
            for field, group in self.by_field.items()
            if field is not DELETED and len(group) > 1
        }

    def tombstone_head(self) -> Head | None:
        """The winning "deleted" head, if the record is deleted."""
        for head in self.by_field.get(DELETED, ()):
            if head.value is True:
                return head
        return None
