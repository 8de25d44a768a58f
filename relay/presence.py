"""Awareness (presence) on the relay: the y-protocols awareness update format and
one table of current states per room. No I/O, no clock of its own.

An awareness update is ``varuint count`` then, per client, ``varuint client id``,
``varuint clock``, ``varstring state`` (JSON; ``null`` means the client left).
Native AWARENESS frames and y-websocket messages of type 1 carry the same bytes,
so Python replicas and Yjs clients see each other's cursors and names.

The relay applies the y-protocols rules (a higher clock wins; ``null`` at the
same clock removes), remembers which connection announced each client id, and
when that connection goes away, or a state is not renewed for
:data:`OUTDATED_TIMEOUT` seconds, tells everyone the client left. Awareness is
never stored.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from crdtsync.statevector import read_var_uint, write_var_uint

__all__ = [
    "OUTDATED_TIMEOUT",
    "AwarenessEntry",
    "Presence",
    "decode_awareness",
    "encode_awareness",
]

OUTDATED_TIMEOUT = 30.0
"""Seconds after which a client whose state was not renewed counts as gone
(y-protocols' ``outdatedTimeout``; clients renew every 15 s)."""

MAX_ENTRIES = 1000
"""Most client states one awareness update may carry."""

_NULL = "null"


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's presence: its id, its awareness clock and its state as JSON
    text (``"null"`` when it left)."""

    client_id: int
    clock: int
    state: str

    @property
    def removed(self) -> bool:
        """True if this entry says the client left."""
        return self.state == _NULL


def decode_awareness(payload: bytes) -> list[AwarenessEntry]:
    """Decode and validate an awareness update.

    Raises ``ValueError`` if it is truncated, has trailing bytes, carries more
    than :data:`MAX_ENTRIES` states, or a state that is not JSON (other clients
    would fail to parse it).
    """
    data = bytes(payload)
    count, pos = read_var_uint(data, 0)
    if count > MAX_ENTRIES:
        raise ValueError(f"awareness update with {count} states (at most {MAX_ENTRIES})")
    entries: list[AwarenessEntry] = []
    for _ in range(count):
        client_id, pos = read_var_uint(data, pos)
        clock, pos = read_var_uint(data, pos)
        length, pos = read_var_uint(data, pos)
        if pos + length > len(data):
            raise ValueError("truncated awareness state")
        try:
            state = data[pos : pos + length].decode("utf-8")
            json.loads(state)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"awareness state of client {client_id} is not JSON: {exc}") from exc
        pos += length
        entries.append(AwarenessEntry(client_id, clock, state))
    if pos != len(data):
        raise ValueError(f"{len(data) - pos} trailing bytes after the awareness update")
    return entries


def encode_awareness(entries: Iterable[AwarenessEntry]) -> bytes:
    """Encode ``entries`` as one awareness update."""
    items = list(entries)
    out = bytearray()
    write_var_uint(out, len(items))
    for entry in items:
        write_var_uint(out, entry.client_id)
        write_var_uint(out, entry.clock)
        state = entry.state.encode("utf-8")
        write_var_uint(out, len(state))
        out += state
    return bytes(out)


@dataclass(slots=True)
class _State:
    clock: int
    state: str
    owner: Hashable | None
    updated: float


class Presence:
    """The current awareness states of one room and who announced them."""

    def __init__(self, timeout: float = OUTDATED_TIMEOUT) -> None:
        self.timeout = timeout
        self._states: dict[int, _State] = {}
        self._clocks: dict[int, int] = {}  # last clock seen per client, removed ones too

    def __len__(self) -> int:
        return len(self._states)

    def states(self) -> dict[int, str]:
        """``{client id: state JSON}`` of every present client."""
        return {client: s.state for client, s in self._states.items()}

    def apply(self, entries: Iterable[AwarenessEntry], owner: Hashable, now: float) -> bytes | None:
        """Apply an update received from ``owner`` at time ``now``.

        Returns the update to forward to the others (only the entries that changed
        something, as y-protocols does), or None if nothing changed.
        """
        accepted: list[AwarenessEntry] = []
        for entry in entries:
            known = self._clocks.get(entry.client_id)
            current = self._states.get(entry.client_id)
            newer = known is None or entry.clock > known
            if not newer and not (entry.clock == known and entry.removed and current):
                continue  # stale, or a repeat
            self._clocks[entry.client_id] = entry.clock
            if entry.removed:
                self._states.pop(entry.client_id, None)
            else:
                self._states[entry.client_id] = _State(entry.clock, entry.state, owner, now)
            accepted.append(entry)
        return encode_awareness(accepted) if accepted else None

    def snapshot(self) -> bytes | None:
        """Every present client's state as one update (for a newcomer), or None."""
        if not self._states:
            return None
        return encode_awareness(
            AwarenessEntry(client, s.clock, s.state) for client, s in self._states.items()
        )

    def remove_owner(self, owner: Hashable) -> bytes | None:
        """``owner`` disconnected: remove the clients it announced; returns the
        removal update to send to the others, or None."""
        gone = [client for client, s in self._states.items() if s.owner == owner]
        return self._remove(gone)

    def expire(self, now: float) -> bytes | None:
        """Remove states not renewed within :attr:`timeout`; returns the removal
        update to send, or None."""
        gone = [c for c, s in self._states.items() if now - s.updated >= self.timeout]
        return self._remove(gone)

    def _remove(self, clients: list[int]) -> bytes | None:
        if not clients:
            return None
        removals: list[AwarenessEntry] = []
        for client in clients:
            # y-protocols: ``null`` at the client's own clock removes it everywhere.
            # The relay then forgets the client, so that when it comes back its
            # next announcement is taken whatever its clock.
            state = self._states.pop(client)
            self._clocks.pop(client, None)
            removals.append(AwarenessEntry(client, state.clock, _NULL))
        return encode_awareness(removals)
