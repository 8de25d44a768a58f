"""The relay's persistence: per document, an append-only update log plus a snapshot,
behind one small async interface (:class:`RelayStorage`).

:func:`open_storage` picks the backend from a URL:

- ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``: one SQLite
  file, the embedded default (:class:`SQLiteStorage`). Option
  ``?synchronous=normal`` skips the fsync per commit (survives a crash of the
  process, not a power loss); the default ``synchronous=full`` fsyncs every commit,
  because an ACK promises durability.
- ``memory://``: nothing survives the process (:class:`MemoryStorage`; for tests).
- ``redis://[:password@]host:port/db`` (``rediss://`` with TLS, ``unix:///path``):
  Redis, shared by several relay processes (:class:`RedisStorage`). Option
  ``?prefix=name`` (default ``crdtsync``) starts every key of the store; other
  redis-py options (``socket_timeout=...``) are passed on. Redis must persist
  every write before replying (``appendonly yes``, ``appendfsync always``) unless
  ``redis_volatile=True`` (``--redis-volatile``).

Every failure of a storage raises a :class:`crdtsync.errors.StoreError` subclass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import RelayStorage, RemoteCallback, StoredRoom, StoredUpdate
from .memory import MemoryData, MemoryStorage
from .sqlite import SQLiteStorage, Synchronous

if TYPE_CHECKING:
    from .redis import RedisStorage

__all__ = [
    "MemoryData",
    "MemoryStorage",
    "RedisStorage",
    "RelayStorage",
    "RemoteCallback",
    "SQLiteStorage",
    "StoredRoom",
    "StoredUpdate",
    "open_storage",
]

_ACCEPTED = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db "
    "(option: ?synchronous=full|normal), redis://host:port/db (option: ?prefix=name) "
    "or memory://"
)


def __getattr__(name: str) -> object:
    """``RedisStorage`` loads redis-py only when asked for (it is in the ``relay`` extra)."""
    if name == "RedisStorage":
        from .redis import RedisStorage  # noqa: PLC0415

        return RedisStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_storage(url: str, *, redis_volatile: bool = False) -> RelayStorage:
    """The storage a URL names, not opened yet (no I/O: ``await storage.open()`` next).

    Accepts ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, each
    with the optional query ``?synchronous=full|normal`` (default ``full``),
    ``redis://...`` (``rediss://``, ``unix://``; see the module docstring) and
    ``memory://``. The path is taken literally, up to a ``?``; its missing parent
    directories are created on ``open()``. An unknown scheme or option raises
    ``ValueError`` naming what is accepted. ``redis_volatile``: see
    :class:`RedisStorage` (``volatile``).
    """
    if url.startswith(("redis://", "rediss://", "unix://")):
        from .redis import RedisStorage  # noqa: PLC0415

        return RedisStorage(url, volatile=redis_volatile)
    if url == "memory://":
        return MemoryStorage()
    if url.startswith("memory:"):
        raise ValueError(
            f"storage URL {url!r}: memory storage takes no path or options; use {_ACCEPTED}"
        )
    if not url.startswith("sqlite:///"):
        raise ValueError(f"unknown storage URL {url!r}: use {_ACCEPTED}")
    path, _, query = url[len("sqlite:///") :].partition("?")
    if not path:
        raise ValueError(f"storage URL {url!r} names no file: use {_ACCEPTED}")
    if path == ":memory:":
        raise ValueError(f"storage URL {url!r}: for storage in memory use memory://")
    synchronous: Synchronous = "full"
    seen: set[str] = set()
    for option in query.split("&") if query else ():
        key, equals, value = option.partition("=")
        if key != "synchronous" or not equals:
            raise ValueError(
                f"unknown option {option!r} in storage URL {url!r}: the only option is "
                "synchronous=full|normal"
            )
        if key in seen:
            raise ValueError(f"option {key!r} given twice in storage URL {url!r}")
        seen.add(key)
        if value.lower() not in ("full", "normal"):
            raise ValueError(
                f"synchronous={value!r} in storage URL {url!r}: use synchronous=full or "
                "synchronous=normal"
            )
        synchronous = "normal" if value.lower() == "normal" else "full"
    return SQLiteStorage(path, synchronous)
