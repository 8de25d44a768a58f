"""State vectors: decoding the lib0 encoding used by Yjs and pycrdt, and comparing them.

A state vector maps each CRDT client id to the number of items (the clock) seen
from that client. ``pycrdt.Doc.get_state()`` and ``pycrdt.get_state(update)``
return it encoded as lib0 variable-length unsigned integers: the number of
entries, then ``client, clock`` pairs.

Deletions do not advance a state vector: two documents with equal state vectors
can still differ in what they deleted.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["StateVector", "covers", "decode_state_vector", "read_var_uint"]

StateVector = dict[int, int]

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


def covers(have: Mapping[int, int], need: Mapping[int, int]) -> bool:
    """True if ``have`` has seen at least everything ``need`` has, for every client."""
    return all(have.get(client, 0) >= clock for client, clock in need.items())
