"""State vectors and delete sets: decoding the lib0 encodings of Yjs/pycrdt, comparing docs.

A state vector maps each CRDT client id to the number of items (the clock) seen
from that client. ``pycrdt.Doc.get_state()`` and ``pycrdt.get_state(update)``
return it encoded as lib0 variable-length unsigned integers: the number of
entries, then ``client, clock`` pairs.

Deletions do not advance a state vector: two documents with equal state vectors
can still differ in what they deleted. Two documents hold the same state when
their state vectors *and* delete sets are equal (:func:`same_state`); their
encoded updates may still differ byte for byte, because each document squashes
adjacent items according to its own history.
"""

from __future__ import annotations

from typing import Any

import pycrdt

__all__ = [
    "DeleteSet",
    "StateVector",
    "decode_state_vector",
    "doc_state",
    "encode_state_vector",
    "encode_var_uint",
    "read_delete_set",
    "read_var_uint",
    "same_state",
    "write_var_uint",
]

StateVector = dict[int, int]
DeleteSet = dict[int, list[tuple[int, int]]]
"""``{client_id: [(clock, length), ...]}``, ranges sorted and merged."""

_MAX_VAR_UINT_BYTES = 10  # 64-bit values; anything longer is malformed


def read_var_uint(data: bytes, pos: int) -> tuple[int, int]:
    """Read one lib0 var-uint at ``pos``; return ``(value, next position)``.

    Raises ``ValueError`` if the data is truncated or the integer is too long.
    """
    value = 0
    shift = 0
    for index in range(pos, min(len(data), pos + _MAX_VAR_UINT_BYTES)):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, index + 1
        shift += 7
    if len(data) - pos >= _MAX_VAR_UINT_BYTES:
        raise ValueError(f"variable-length integer at byte {pos} is too long")
    raise ValueError(f"truncated variable-length integer at byte {pos}")


def decode_state_vector(data: bytes) -> StateVector:
    """Decode an encoded state vector into ``{client_id: clock}``.

    Raises ``ValueError`` on malformed or trailing data.
    """
    count, pos = read_var_uint(data, 0)
    if count > len(data):  # every entry takes at least two bytes
        raise ValueError(f"state vector claims {count} entries in {len(data)} bytes")
    result: StateVector = {}
    for _ in range(count):
        client, pos = read_var_uint(data, pos)
        clock, pos = read_var_uint(data, pos)
        result[client] = clock
    if pos != len(data):
        raise ValueError(f"{len(data) - pos} trailing bytes after the state vector")
    return result


def write_var_uint(out: bytearray, value: int) -> None:
    """Append ``value`` to ``out`` as a lib0 var-uint."""
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def encode_var_uint(value: int) -> bytes:
    """``value`` as a lib0 var-uint (the inverse of :func:`read_var_uint`)."""
    out = bytearray()
    write_var_uint(out, value)
    return bytes(out)


def encode_state_vector(state_vector: StateVector) -> bytes:
    """Encode ``{client_id: clock}`` as lib0 does (the inverse of :func:`decode_state_vector`)."""
    out = bytearray()
    write_var_uint(out, len(state_vector))
    for client, clock in state_vector.items():
        write_var_uint(out, client)
        write_var_uint(out, clock)
    return bytes(out)


def read_delete_set(data: bytes, pos: int) -> tuple[DeleteSet, int]:
    """Read an encoded delete set at ``pos``; return it (sorted, merged) and the next position."""
    if pos < len(data) and data[pos] == 0:  # no deletions: the common case
        return {}, pos + 1
    count, pos = read_var_uint(data, pos)
    result: DeleteSet = {}
    for _ in range(count):
        client, pos = read_var_uint(data, pos)
        ranges_count, pos = read_var_uint(data, pos)
        ranges = result.setdefault(client, [])
        for _ in range(ranges_count):
            clock, pos = read_var_uint(data, pos)
            length, pos = read_var_uint(data, pos)
            ranges.append((clock, length))
    merged: DeleteSet = {}
    for client, ranges in result.items():
        out: list[tuple[int, int]] = []
        for clock, length in sorted(ranges):
            if out and out[-1][0] + out[-1][1] >= clock:
                start, size = out[-1]
                out[-1] = (start, max(size, clock + length - start))
            elif length:
                out.append((clock, length))
        if out:
            merged[client] = out
    return merged, pos


def doc_state(doc: pycrdt.Doc[Any]) -> tuple[StateVector, DeleteSet]:
    """The state vector and delete set of ``doc``: what defines its content.

    Items a document holds while waiting for missing dependencies are not part
    of it (they are not integrated yet).
    """
    # A pycrdt snapshot encodes exactly this: the delete set, then the state vector.
    encoded = pycrdt.Snapshot.from_doc(doc).encode()
    delete_set, pos = read_delete_set(encoded, 0)
    return decode_state_vector(encoded[pos:]), delete_set


def same_state(a: pycrdt.Doc[Any], b: pycrdt.Doc[Any]) -> bool:
    """True if both documents hold the same items and the same deletions."""
    return doc_state(a) == doc_state(b)
