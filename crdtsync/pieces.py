"""Cutting a Yjs update into pieces that a peer integrates one after another.

A relay sends a large document to a joining replica in pieces, as the
connection drains (``relay.syncs``). Each piece is itself a Yjs v1 update that
a document already holding the pieces before it integrates *whole*, at once:

- pieces follow the items' dependencies: an item comes after its origin, its
  right origin and its parent (a valid order always exists: the order in which
  the items were created);
- a long string, JSON list or list of values is cut into several items, as Yjs
  itself writes an item whose diff starts in its middle (the later part's
  origin is the last unit of the earlier part);
- pieces carry no deletions: the SYNC that ends the transfer carries the whole
  delete set (it always does).

So a replica whose connection breaks after ``k`` pieces has integrated them,
its state vector says so, and the next sync resumes there instead of starting
from zero. Whole structs are copied byte for byte; only cut items are
re-encoded (a new origin, then the rest of the content).

pycrdt can encode, merge and diff updates but not cut one; this reads the v1
format with :mod:`crdtsync.update`'s reader. No I/O: :func:`split_update` is a
generator that does a bounded amount of work per step, so a host can
interleave it with other work.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field

from .statevector import StateVector, encode_var_uint
from .update import ItemId, UpdateReader, read_content, read_item_header, utf16_length

__all__ = ["split_update"]

logger = logging.getLogger("crdtsync.pieces")

_GC, _DELETED, _JSON, _STRING, _ANY, _SKIP = 0, 1, 2, 4, 8, 10
_CUTTABLE = frozenset({_JSON, _STRING, _ANY})


@dataclass(slots=True)
class _Struct:
    """One struct of the update: byte positions, what it refers to, its length."""

    start: int  # the info byte
    content: int  # after the header (origins, parent): where the content starts
    end: int
    info: int
    refs: tuple[ItemId, ...]  # origin, right origin, parent (those present)
    right: ItemId | None
    length: int = -1  # clock ticks; measured when needed (a string costs a decode)


@dataclass(slots=True, eq=False)
class _Block:
    """One client's structs in the update, and how far they have been emitted."""

    client: int
    clock: int  # clock of the current struct
    left: int  # structs not completely emitted yet
    pos: int  # start of the current struct
    current: _Struct | None = None
    done_units: int = 0  # clock ticks of the current struct already emitted (it was cut)
    done_pos: int = 0  # where the rest of a cut struct's content starts
    done_elements: int = 0  # JSON/any elements of a cut struct already emitted


@dataclass(slots=True)
class _Run:
    """One client's consecutive structs in the piece being built."""

    clock: int
    end: int
    chunks: list[bytes] = field(default_factory=list)


def split_update(
    update: bytes, have: StateVector, piece_bytes: int, *, step: int = 256
) -> Generator[bytes | None, None, StateVector]:
    """The structs of ``update`` as pieces of about ``piece_bytes`` bytes, each
    integrable whole by a document at state ``have`` that holds the pieces
    before it (see the module docstring). The delete set is left out.

    A generator: each step does a bounded amount of work (``step`` structs) and
    yields either a piece or None (nothing finished yet; call again). A single
    item that cannot be cut (a binary, an embed, a huge value in a list) makes
    a larger piece. Its return value (``StopIteration.value``) is the state a
    document at ``have`` reaches with every piece. Raises ``ValueError`` if
    ``update`` is malformed.
    """
    if piece_bytes < 64:
        raise ValueError(f"piece_bytes must be at least 64, not {piece_bytes}")
    return _Splitter(update, have, piece_bytes, step).run()


class _Splitter:
    def __init__(self, update: bytes, have: StateVector, piece_bytes: int, step: int) -> None:
        self.data = update
        self.reach = dict(have)  # what the receiver holds once the pieces so far are in
        self.empty: set[ItemId] = set()  # zero-length items sent (yrs writes some)
        self.piece_bytes = piece_bytes
        self.step = step
        self.blocks: list[_Block] = []
        self.ready: deque[_Block] = deque()
        self.waiting: dict[int, list[tuple[int, int, _Block]]] = {}  # client -> heap
        self.runs: dict[int, _Run] = {}
        self.size = 0
        self.work = 0
        self.seq = 0  # tie-break in the waiting heaps
        self.waiters = 0  # blocks in the waiting heaps

    # -- the walk ---------------------------------------------------------------------------

    def run(self) -> Generator[bytes | None, None, StateVector]:
        yield from self._scan()
        self.ready.extend(self.blocks)
        while self.ready or self.waiters:
            forced = False
            if not self.ready:
                # No client's next struct has what it needs: the update itself lacks
                # something (never so for a document's diff). Send the oldest waiter
                # anyway; the receiver holds it until it can apply it.
                block = self._pop_any_waiter()
                logger.warning("update split: no struct is ready; sending one with a gap")
                forced = True
            else:
                block = self.ready.popleft()
            while block.left:
                struct = self._current(block)
                missing = None if forced else self._missing(block, struct)
                if missing is not None:
                    self.seq += 1
                    self.waiters += 1
                    heapq.heappush(
                        self.waiting.setdefault(missing[0], []), (missing[1], self.seq, block)
                    )
                    break
                forced = False
                yield from self._emit(block, struct)
                self.work += 1
                if self.work >= self.step:
                    self.work = 0
                    yield None
        if self.runs:
            yield self._flush()
        return self.reach

    def _scan(self) -> Iterator[None]:
        """Find where each client's structs start (one pass, content skipped)."""
        reader = UpdateReader(self.data)
        for _ in range(reader.count()):
            structs = reader.count()
            client = reader.var_uint()
            clock = reader.var_uint()
            if structs:
                self.blocks.append(_Block(client, clock, structs, reader.pos))
            for _ in range(structs):
                info = reader.byte()
                kind = info & 0x1F
                if kind in (_GC, _SKIP):
                    reader.var_uint()
                else:
                    read_item_header(reader, info)
                    read_content(reader, kind, measure=False)
                self.work += 1
                if self.work >= self.step:
                    self.work = 0
                    yield None

    def _pop_any_waiter(self) -> _Block:
        heap = min((h for h in self.waiting.values() if h), key=lambda h: h[0][:2])
        self.waiters -= 1
        return heapq.heappop(heap)[2]

    def _current(self, block: _Block) -> _Struct:
        struct = block.current
        if struct is None:
            reader = UpdateReader(self.data, block.pos)
            info = reader.byte()
            kind = info & 0x1F
            if kind in (_GC, _SKIP):
                content = reader.pos
                length = reader.var_uint()
                struct = _Struct(block.pos, content, reader.pos, info, (), None, length)
            else:
                origin, right, parent = read_item_header(reader, info)
                content = reader.pos
                read_content(reader, kind, measure=False)
                refs = tuple(ref for ref in (origin, right, parent) if ref is not None)
                struct = _Struct(block.pos, content, reader.pos, info, refs, right)
            block.current = struct
        return struct

    def _missing(self, block: _Block, struct: _Struct) -> ItemId | None:
        """An id the receiver must hold before ``struct`` (the rest of it, if cut)
        integrates, and does not yet; None if it has everything."""
        reach = self.reach
        if block.clock + block.done_units > reach.get(block.client, 0):
            return block.client, block.clock + block.done_units - 1  # a gap before it
        refs = struct.refs if not block.done_units else (struct.right,) if struct.right else ()
        for client, clock in refs:
            if reach.get(client, 0) <= clock and (client, clock) not in self.empty:
                return client, clock
        return None

    def _advance(self, client: int, clock: int) -> None:
        """The receiver will hold ``client``'s items below ``clock``: wake the blocks
        that waited for them."""
        if self.reach.get(client, 0) >= clock:
            return
        self.reach[client] = clock
        self._wake(client, clock)

    def _wake(self, client: int, clock: int) -> None:
        """Blocks waiting for ``client``'s items below ``clock`` check again."""
        heap = self.waiting.get(client)
        while heap and heap[0][0] < clock:
            self.waiters -= 1
            self.ready.append(heapq.heappop(heap)[2])

    # -- emitting ---------------------------------------------------------------------------

    def _emit(self, block: _Block, struct: _Struct) -> Iterator[bytes]:
        """Put the current struct of ``block`` (what is left of it) into pieces."""
        kind = struct.info & 0x1F
        if kind == _SKIP:  # a range the update does not carry: nothing to send
            self._finish(block, struct, advance=False)
            return
        while True:
            start = block.clock + block.done_units
            run = self.runs.get(block.client)
            if run is not None and run.end != start:
                yield self._flush()  # one run per client in a piece, without gaps
            rest = struct.end - (block.done_pos if block.done_units else struct.start)
            room = self.piece_bytes - self.size
            if rest + 24 <= room or (self.size == 0 and kind not in _CUTTABLE):
                data, units = self._whole(block, struct, kind)
                self._add(block.client, start, units, data)
                self._finish(block, struct)
                return
            if self.size and (kind not in _CUTTABLE or room < self.piece_bytes // 4):
                yield self._flush()
                continue
            data, units = self._cut(block, struct, kind, room)
            self._add(block.client, start, units, data)
            if block.done_pos >= struct.end:
                struct.length = block.done_units
                self._finish(block, struct)
                return
            self._advance(block.client, block.clock + block.done_units)
            yield self._flush()

    def _whole(self, block: _Block, struct: _Struct, kind: int) -> tuple[bytes, int]:
        """The struct's bytes (or what is left of a cut item) and its clock ticks."""
        if not block.done_units:
            if struct.length < 0:
                struct.length = read_content(UpdateReader(self.data, struct.content), kind)
            return self.data[struct.start : struct.end], struct.length
        tail = self.data[block.done_pos : struct.end]
        if kind == _STRING:
            units = utf16_length(tail)
            content = encode_var_uint(len(tail)) + tail
        else:
            units = UpdateReader(self.data, struct.content).count() - block.done_elements
            content = encode_var_uint(units) + tail
        struct.length = block.done_units + units
        return self._header(block, struct) + content, units

    def _cut(self, block: _Block, struct: _Struct, kind: int, room: int) -> tuple[bytes, int]:
        """The next part of a long item that fits in ``room`` bytes (at least one
        unit), and its clock ticks; ``block`` records how far the item is sent."""
        header = self._header(block, struct)
        budget = max(room - len(header) - 10, 1)
        reader = UpdateReader(self.data, struct.content)
        if kind == _STRING:
            size = reader.var_uint()
            first = block.done_pos if block.done_units else reader.pos
            end = reader.pos + size
            cut = min(end, first + budget)
            while first < cut < end and self.data[cut] & 0xC0 == 0x80:
                cut -= 1  # not inside a UTF-8 sequence
            if cut == first:  # room for less than a character: take one
                cut += 1
                while cut < end and self.data[cut] & 0xC0 == 0x80:
                    cut += 1
            part = self.data[first:cut]
            units = utf16_length(part)
            content = encode_var_uint(len(part)) + part
        else:
            total = reader.count()
            first = block.done_pos if block.done_units else reader.pos
            reader.pos = first
            units = 0
            while block.done_elements + units < total:
                before = reader.pos
                if kind == _JSON:
                    reader.skip_var_bytes()
                else:
                    reader.any()
                if units and reader.pos - first > budget:
                    reader.pos = before
                    break
                units += 1
            cut = reader.pos
            content = encode_var_uint(units) + self.data[first:cut]
            block.done_elements += units
        block.done_units += units
        block.done_pos = cut
        return header + content, units

    def _header(self, block: _Block, struct: _Struct) -> bytes:
        """The item header for what is left of ``struct``: its own, or (once cut)
        an origin at the last unit sent, as Yjs writes an item from an offset."""
        if not block.done_units:
            return self.data[struct.start : struct.content]
        info = (struct.info & 0x1F) | 0x80 | (struct.info & 0x60)
        origin = encode_var_uint(block.client) + encode_var_uint(block.clock + block.done_units - 1)
        right = b""
        if struct.right is not None:
            right = encode_var_uint(struct.right[0]) + encode_var_uint(struct.right[1])
        return bytes([info]) + origin + right

    def _finish(self, block: _Block, struct: _Struct, *, advance: bool = True) -> None:
        block.clock += struct.length
        block.left -= 1
        block.pos = struct.end
        block.current = None
        block.done_units = block.done_elements = block.done_pos = 0
        if advance:
            self._advance(block.client, block.clock)
            if struct.length == 0:  # yrs writes some, and others may refer to their id
                self.empty.add((block.client, block.clock))
                self._wake(block.client, block.clock + 1)

    def _add(self, client: int, clock: int, units: int, data: bytes) -> None:
        """Append ``client``'s struct (or part) covering ``units`` ticks from ``clock``."""
        run = self.runs.get(client)
        if run is None:
            run = self.runs[client] = _Run(clock, clock)
        run.chunks.append(data)
        run.end = clock + units
        self.size += len(data)

    def _flush(self) -> bytes:
        """The piece built so far, encoded (structs per client, empty delete set)."""
        out = [encode_var_uint(len(self.runs))]
        for client, run in self.runs.items():
            out += [
                encode_var_uint(len(run.chunks)),
                encode_var_uint(client),
                encode_var_uint(run.clock),
            ]
            out += run.chunks
        out.append(b"\x00")
        self.runs = {}
        self.size = 0
        return b"".join(out)
