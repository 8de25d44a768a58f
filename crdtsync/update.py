"""A read-only reader of Yjs update (v1) headers: which clock ranges an update holds.

pycrdt can apply, merge and diff updates but cannot say which items an update
carries. crdtsync needs that to hold back updates that arrive before an earlier
update of the same client: pycrdt 0.14.13 integrates such a "gapped" update
inconsistently (the same set of updates applied in different orders can end in
different documents), so a gapped update must wait until the gap is filled.

The format, as written by Yjs ``writeStructs`` and yrs ``Update::encode_v1``::

    var-uint  number of clients
    per client:
        var-uint  number of structs
        var-uint  client id
        var-uint  clock of the first struct
        structs (info byte, then GC/Skip length or an item's origins, parent, content)
    delete set (see :mod:`crdtsync.statevector`)

Only lengths are computed; content is skipped, never interpreted. Every read is
bounds-checked and malformed input raises ``ValueError``. The reader and the
item parsing (:class:`UpdateReader`, :func:`read_item_header`,
:func:`read_content`) are shared with :mod:`crdtsync.pieces`, which cuts an
update into parts.
"""

from __future__ import annotations

from dataclasses import dataclass

from .statevector import DeleteSet, StateVector, read_delete_set, read_var_uint

__all__ = [
    "ItemId",
    "UpdateReader",
    "UpdateSummary",
    "read_content",
    "read_item_header",
    "summarize_update",
    "utf16_length",
]

_MAX_DEPTH = 64  # nesting of lib0 "any" values
_BYTE_STRINGS = {3: 1, 5: 1, 6: 2}  # content types made of that many byte strings


@dataclass(frozen=True, slots=True)
class UpdateSummary:
    """What an update carries and what it refers to.

    ``ranges``: per client, the ``(first clock, end clock)`` ranges of its structs
    (end exclusive; Skip structs, which stand for ranges the update does not
    carry, split them). ``refs``: per client, one past the highest clock that an
    item in the update refers to (origin, right origin, parent).
    """

    ranges: dict[int, list[tuple[int, int]]]
    refs: dict[int, int]
    delete_set: DeleteSet

    @property
    def clients(self) -> set[int]:
        """Client ids whose items the update carries (not counting deletions)."""
        return {client for client, ranges in self.ranges.items() if ranges}

    def _reached(self, state_vector: StateVector) -> dict[int, int]:
        """Per client of the update, the clock a document at ``state_vector`` reaches
        by integrating it: the known clock extended through the update's ranges that
        connect to it (a range that starts beyond it, a gap, is not reached)."""
        reached: dict[int, int] = {}
        for client, spans in self.ranges.items():
            have = state_vector.get(client, 0)
            for start, end in sorted(spans) if len(spans) > 1 else spans:
                if start > have:
                    break
                have = max(have, end)
            reached[client] = have
        return reached

    def reach(self, state_vector: StateVector) -> StateVector:
        """The state a document at ``state_vector`` reaches by integrating this update."""
        reach = dict(state_vector)
        reach.update((client, have) for client, have in self._reached(state_vector).items() if have)
        return reach

    def advance(self, state_vector: StateVector) -> None:
        """Change ``state_vector`` in place into :meth:`reach`'s answer (only the
        update's clients are touched: no copy of a large state vector)."""
        for client, have in self._reached(state_vector).items():
            if have:
                state_vector[client] = have

    def missing(self, state_vector: StateVector) -> dict[int, int]:
        """What a document at ``state_vector`` lacks to integrate this update whole.

        Returns ``{client: clock}`` for each client whose items (up to ``clock``)
        the update depends on but neither the document nor the update has: a gap
        before the update's own items, an item it refers to, or an item it deletes.
        Empty when the update can be applied completely.
        """
        reached = self._reached(state_vector)
        missing: dict[int, int] = {}

        def need(client: int, clock: int) -> None:
            have = reached[client] if client in reached else state_vector.get(client, 0)
            if clock > have:
                missing[client] = max(missing.get(client, 0), clock)

        for client, spans in self.ranges.items():
            for _, end in spans:
                need(client, end)
        for client, clock in self.refs.items():
            need(client, clock)
        for client, ranges in self.delete_set.items():
            for clock, length in ranges:
                need(client, clock + length)
        return missing


class UpdateReader:
    """Bounds-checked reads of lib0 values from an update (``ValueError`` on
    truncated or malformed input). ``pos`` is the next byte to read."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def var_uint(self) -> int:
        # Inlined (it is most of an update's header): one byte is the common case,
        # and 32-bit client ids take five at most.
        data = self.data
        pos = self.pos
        if pos < len(data):
            byte = data[pos]
            if byte < 0x80:
                self.pos = pos + 1
                return byte
            value = byte & 0x7F
            shift = 7
            for index in range(pos + 1, min(len(data), pos + 10)):
                byte = data[index]
                value |= (byte & 0x7F) << shift
                if byte < 0x80:
                    self.pos = index + 1
                    return value
                shift += 7
        value, self.pos = read_var_uint(data, pos)  # raises the precise error
        return value

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise ValueError(f"truncated update at byte {self.pos}")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def skip(self, count: int) -> None:
        if count < 0 or self.pos + count > len(self.data):
            raise ValueError(f"truncated update at byte {self.pos}")
        self.pos += count

    def var_bytes(self) -> bytes:
        size = self.var_uint()
        start = self.pos
        self.skip(size)
        return self.data[start : self.pos]

    def skip_var_bytes(self) -> None:
        """Skip a lib0 byte string without copying it."""
        self.skip(self.var_uint())

    def var_string_utf16_length(self) -> int:
        """Skip a lib0 string; return its length in UTF-16 code units (Yjs clocks)."""
        return utf16_length(self.var_bytes())

    def var_int(self) -> None:
        """Skip a lib0 signed var-int."""
        for _ in range(10):
            if self.byte() < 0x80:
                return
        raise ValueError(f"variable-length integer at byte {self.pos} is too long")

    def any(self, depth: int = 0) -> None:
        """Skip one lib0 ``any`` value."""
        if depth > _MAX_DEPTH:
            raise ValueError("update nests values too deeply")
        tag = self.byte()
        if tag in (127, 126, 121, 120):  # undefined, null, false, true
            return
        if tag == 125:  # integer
            self.var_int()
        elif tag == 124:  # float32
            self.skip(4)
        elif tag in (123, 122):  # float64, bigint
            self.skip(8)
        elif tag == 119:  # string
            self.skip_var_bytes()
        elif tag == 118:  # object
            for _ in range(self.count()):
                self.skip_var_bytes()
                self.any(depth + 1)
        elif tag == 117:  # array
            for _ in range(self.count()):
                self.any(depth + 1)
        elif tag == 116:  # Uint8Array
            self.skip_var_bytes()
        else:
            raise ValueError(f"unknown value type {tag} in update")

    def count(self) -> int:
        """A var-uint count of elements, checked against the bytes left."""
        count = self.var_uint()
        if count > len(self.data) - self.pos:  # every element takes at least one byte
            raise ValueError(f"update claims {count} elements in {len(self.data) - self.pos} bytes")
        return count


_ASTRAL_LEADS = (b"\xf0", b"\xf1", b"\xf2", b"\xf3", b"\xf4")


def utf16_length(raw: bytes) -> int:
    """The length in UTF-16 code units (Yjs clock ticks) of UTF-8 ``raw``.

    Raises ``ValueError`` if ``raw`` is not valid UTF-8."""
    if raw.isascii():
        return len(raw)
    try:
        chars = len(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError("invalid UTF-8 in an update string") from exc
    # Characters beyond the BMP (4-byte sequences) take two UTF-16 units.
    return chars + sum(raw.count(lead) for lead in _ASTRAL_LEADS)


ItemId = tuple[int, int]
"""``(client, clock)`` of one item."""


def read_item_header(
    reader: UpdateReader, info: int
) -> tuple[ItemId | None, ItemId | None, ItemId | None]:
    """Read an item's header after its info byte: ``(origin, right origin,
    parent)``, each the id it refers to, or None (absent, or a root type by name)."""
    origin = (reader.var_uint(), reader.var_uint()) if info & 0x80 else None
    right = (reader.var_uint(), reader.var_uint()) if info & 0x40 else None
    parent = None
    if not info & 0xC0:  # no origins: the parent is written out
        if reader.var_uint() == 1:  # parent is a root type, by name
            reader.skip_var_bytes()
        else:  # parent is an item id
            parent = (reader.var_uint(), reader.var_uint())
        if info & 0x20:  # parent sub (map key)
            reader.skip_var_bytes()
    return origin, right, parent


def read_content(reader: UpdateReader, kind: int, *, measure: bool = True) -> int:
    """Skip an item's content of type ``kind``; return its length in clock ticks
    (0 for a string when not ``measure``: counting UTF-16 units costs a decode)."""
    if kind == 1:  # deleted: just a length
        return reader.var_uint()
    if kind == 4:  # string: its length in UTF-16 code units
        if measure:
            return reader.var_string_utf16_length()
        reader.skip_var_bytes()
        return 0
    if kind in _BYTE_STRINGS:  # binary, embed, format: one clock tick
        for _ in range(_BYTE_STRINGS[kind]):
            reader.skip_var_bytes()
        return 1
    if kind in (2, 8):  # JSON strings / lib0 values: one tick each
        count = reader.count()
        skip = reader.skip_var_bytes if kind == 2 else reader.any
        for _ in range(count):
            skip()
        return count
    if kind == 7:  # type
        if reader.var_uint() in (3, 5):  # XmlElement, XmlHook carry a name
            reader.skip_var_bytes()
        return 1
    if kind == 9:  # subdocument: guid and options
        reader.skip_var_bytes()
        reader.any()
        return 1
    raise ValueError(f"unknown content type {kind} in update")


def summarize_update(update: bytes) -> UpdateSummary:
    """Read which clock ranges, per client, ``update`` carries, and its delete set.

    Raises ``ValueError`` if ``update`` is not a well-formed v1 update.
    """
    reader = UpdateReader(update)
    ranges: dict[int, list[tuple[int, int]]] = {}
    refs: dict[int, int] = {}
    for _ in range(reader.count()):
        structs = reader.count()
        client = reader.var_uint()
        clock = reader.var_uint()
        spans = ranges.setdefault(client, [])
        for _ in range(structs):
            info = reader.byte()
            kind = info & 0x1F
            # GC and Skip structs are a bare length; yrs may write zero-length items.
            if kind in (0, 10):
                length = reader.var_uint()
            else:
                for ref in read_item_header(reader, info):
                    if ref is not None and refs.get(ref[0], 0) <= ref[1]:
                        refs[ref[0]] = ref[1] + 1
                length = read_content(reader, kind)
            if kind != 10 and length:
                if spans and spans[-1][1] == clock:
                    spans[-1] = (spans[-1][0], clock + length)
                else:
                    spans.append((clock, clock + length))
            clock += length
    delete_set, pos = read_delete_set(update, reader.pos)
    if pos != len(update):
        raise ValueError(f"{len(update) - pos} trailing bytes after the update")
    return UpdateSummary(ranges, refs, delete_set)
