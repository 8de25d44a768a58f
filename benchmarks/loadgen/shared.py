"""Counters shared by the load-generator processes that hold clients of the same room,
and the client ids every process derives alike."""

from __future__ import annotations

import mmap
import zlib
from pathlib import Path

__all__ = ["SharedCounters", "client_id_for"]


def client_id_for(id_seed: int, room: str, index: int) -> int:
    """A 32-bit client id, the same in every process of a run (never 0)."""
    return zlib.crc32(f"{id_seed}/{room}/{index}".encode()) or 1


class SharedCounters:
    """Per room: ``seen[receiver][sender]`` (the last counter a receiver observed from
    a sender), ``sent[sender]`` and ``done[sender]`` (1 once it stopped writing), as
    int64 in one buffer: private, or a memory-mapped file shared by the processes
    that hold clients of the same room."""

    def __init__(self, rooms: int, clients: int, path: str | None = None) -> None:
        self.clients = clients
        self.stride = clients * clients + 2 * clients
        size = max(1, rooms * self.stride) * 8
        self._mmap: mmap.mmap | None = None
        if path is None:
            self._raw = memoryview(bytearray(size))
        else:
            with open(path, "r+b") as fh:
                self._mmap = mmap.mmap(fh.fileno(), size)
            self._raw = memoryview(self._mmap)
        self.values = self._raw.cast("q")

    @staticmethod
    def create(path: Path, rooms: int, clients: int) -> None:
        """Write a zeroed counters file for ``rooms`` rooms of ``clients`` clients."""
        path.write_bytes(bytes(max(1, rooms * (clients * clients + 2 * clients)) * 8))

    def seen_index(self, slot: int, receiver: int, sender: int) -> int:
        """Where ``seen[receiver][sender]`` of room ``slot`` is."""
        return slot * self.stride + receiver * self.clients + sender

    def sent_index(self, slot: int, sender: int) -> int:
        """Where ``sent[sender]`` of room ``slot`` is."""
        return slot * self.stride + self.clients * self.clients + sender

    def done_index(self, slot: int, sender: int) -> int:
        """Where ``done[sender]`` of room ``slot`` is."""
        return self.sent_index(slot, sender) + self.clients

    def close(self) -> None:
        """Release the mapping."""
        self.values.release()
        self._raw.release()
        if self._mmap is not None:
            self._mmap.close()
