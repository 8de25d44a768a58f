"""Relay persistence behind one small async interface (:class:`RelayStorage`).

``open_storage(url)`` picks the backend from a URL:

- ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (the default
  backend; add ``?synchronous=normal`` to skip the fsync per commit);
- ``memory://`` (nothing survives the process; for tests).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from .base import RelayStorage, RemoteCallback, StoredRoom, StoredUpdate
from .memory import MemoryData, MemoryStorage
from .sqlite import SQLiteStorage

__all__ = [
    "MemoryData",
    "MemoryStorage",
    "RelayStorage",
    "RemoteCallback",
    "SQLiteStorage",
    "StoredRoom",
    "StoredUpdate",
    "open_storage",
]

_ACCEPTED = "sqlite:///relative/path.db, sqlite:////absolute/path.db or memory://"


def open_storage(url: str) -> RelayStorage:
    """The storage a URL names (no I/O; call ``await storage.open()``).

    Raises ``ValueError`` for an unknown scheme or option.
    """
    if url in ("memory://", "memory:"):
        return MemoryStorage()
    if not url.startswith("sqlite:///"):
        raise ValueError(f"unknown storage URL {url!r}: use {_ACCEPTED}")
    parts = urlsplit(url)
    path = url[len("sqlite:///") :].split("?", 1)[0]
    if not path:
        raise ValueError(f"storage URL {url!r} has no file path: use {_ACCEPTED}")
    options = parse_qs(parts.query, keep_blank_values=True)
    synchronous = "full"
    for key, values in options.items():
        if key != "synchronous" or values[-1].lower() not in ("full", "normal"):
            raise ValueError(
                f"unknown option {key}={values[-1]!r} in {url!r}: only synchronous=full|normal"
            )
        synchronous = values[-1].lower()
    return SQLiteStorage(path, "normal" if synchronous == "normal" else "full")
