"""Cursors of a records collection, and which records changed since one.

A cursor is where a replica's copy of a collection stood: the document's state
vector (per Yjs client, how many items of it the replica had), never a
timestamp. It is handed out as an opaque string: ``c1.`` then, base64url
encoded, a CRC-32 of the rest, 8 bytes of the collection name's BLAKE2b digest
(a cursor of another collection is refused) and the encoded state vector.

Which records changed since a cursor, without reading every record: every
change to a record adds a head (:mod:`crdtsync.registers`) whose id is its Yjs
id ``<client>.<clock>``, listed with its record in the ``heads`` map. A change the replica did
not have at the cursor has a clock at or beyond the cursor's state vector for
its client; so do the heads that replaced it since (they saw it, and a
replica's state is causally complete: a write is integrated only after what it
depends on). So the records changed since a cursor are those of the ids
``<client>.<clock>`` in ``heads`` for every clock between the cursor's state
vector and the current one: a few lookups per change, however many records the
collection holds. When the gap is larger than the map itself (a first sync of
a big collection), reading the whole map once is cheaper, and gives the same
answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import zlib
from typing import Any, Final

import pycrdt

from .registers import index_record
from .statevector import StateVector, decode_state_vector, encode_state_vector

__all__ = ["SCAN_ABOVE", "decode_cursor", "encode_cursor", "heads_since"]

_PREFIX: Final = "c1."
_DIGEST: Final = 8

SCAN_ABOVE: Final = 10_000
"""Clock ticks between two states beyond which :func:`heads_since` may read the
whole ``heads`` map instead of looking up each tick."""


def _name_digest(collection: str) -> bytes:
    return hashlib.blake2b(collection.encode("utf-8"), digest_size=_DIGEST).digest()


def encode_cursor(collection: str, state_vector: StateVector) -> str:
    """The cursor of ``collection`` at ``state_vector``."""
    body = _name_digest(collection) + encode_state_vector(state_vector)
    raw = zlib.crc32(body).to_bytes(4, "big") + body
    return _PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(collection: str, cursor: object) -> StateVector:
    """The state vector in a cursor of ``collection``.

    Raises ``ValueError`` for anything that is not such a cursor: not a str, not
    made by :func:`encode_cursor`, damaged, or made for another collection.
    """
    if not isinstance(cursor, str) or not cursor.startswith(_PREFIX):
        raise ValueError(f"not a records cursor: {cursor!r:.80}")
    text = cursor[len(_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not a records cursor (bad encoding): {cursor!r:.80}") from exc
    if len(raw) < 4 + _DIGEST + 1 or zlib.crc32(raw[4:]) != int.from_bytes(raw[:4], "big"):
        raise ValueError(f"not a records cursor (damaged): {cursor!r:.80}")
    if raw[4 : 4 + _DIGEST] != _name_digest(collection):
        raise ValueError(f"this cursor belongs to another collection than {collection!r}")
    try:
        return decode_state_vector(raw[4 + _DIGEST :])
    except ValueError as exc:
        raise ValueError(f"not a records cursor (bad state vector): {cursor!r:.80}") from exc


def _gap(since: StateVector, now: StateVector) -> int:
    return sum(max(0, clock - since.get(client, 0)) for client, clock in now.items())


def heads_since(
    doc: pycrdt.Doc[Any], heads: pycrdt.Map[Any], since: StateVector, now: StateVector
) -> dict[str, set[str]]:
    """Records with a head written after ``since`` (up to ``now``, the document's
    current state vector), each with the ids of those heads."""
    touched: dict[str, set[str]] = {}
    gap = _gap(since, now)
    if gap == 0:
        return touched
    with doc.transaction():
        if gap > SCAN_ABOVE and gap > len(heads):
            for dot, entry in json.loads(str(heads)).items():
                record_id = index_record(entry)
                client, _, clock = dot.partition(".")
                if (
                    record_id is not None
                    and client.isdigit()
                    and clock.isdigit()
                    and int(clock) >= since.get(int(client), 0)
                ):
                    touched.setdefault(record_id, set()).add(dot)
            return touched
        for client, end in now.items():
            for clock in range(since.get(client, 0), end):
                dot = f"{client}.{clock}"
                record_id = index_record(heads.get(dot))
                if record_id is not None:
                    touched.setdefault(record_id, set()).add(dot)
    return touched
