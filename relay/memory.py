"""Giving freed memory back to the system after rooms unload.

pycrdt (yrs) allocates a document through the C library's ``malloc``. When a room
unloads, its memory is freed, but glibc keeps freed memory in its arenas (mostly
the per-thread arenas and the top of the heap it does not shrink by itself), so
the process's RSS stays where it was with the documents loaded. ``malloc_trim(0)``
hands the free pages of every arena back to the kernel.

:class:`Trimmer` calls it at most once per ``interval`` seconds, and only where
the C library is glibc (elsewhere it does nothing). The janitor calls
:meth:`Trimmer.after_unload` after each pass that unloaded rooms.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import time
from collections.abc import Callable

__all__ = ["Trimmer", "malloc_trim"]

logger = logging.getLogger("relay.memory")

MIN_INTERVAL = 1.0
"""Seconds between two trims (a trim walks every arena: about a millisecond per
100 MB of heap), so that rooms unloading one after another under churn cost at
most one trim a second."""


def _load_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library is not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError) as exc:
        logger.debug("malloc_trim is not available: %s", exc)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _load_trim()


def malloc_trim() -> bool | None:
    """Return the free memory of glibc's arenas to the system: True if some was
    released, False if none could be, None where there is no glibc."""
    if _TRIM is None:
        return None
    return bool(_TRIM(0))


class Trimmer:
    """Calls :func:`malloc_trim` after rooms unload, at most once per ``interval``
    seconds (a pass that comes sooner is remembered and trimmed on a later call)."""

    def __init__(
        self,
        interval: float = MIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        trim: Callable[[], bool | None] = malloc_trim,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._trim = trim
        self._last: float | None = None
        self._pending = False
        self.trims = 0
        """Trims done since the start."""

    def after_unload(self, unloaded: int) -> bool | None:
        """Call after each janitor pass with the number of rooms it unloaded. Trims if
        rooms unloaded (in this pass or one that came too soon) and ``interval`` has
        passed since the last trim; returns what :func:`malloc_trim` returned, or
        None if it did not trim."""
        if unloaded:
            self._pending = True
        if not self._pending:
            return None
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            return None
        self._pending = False
        self._last = now
        started = time.perf_counter()
        released = self._trim()
        self.trims += 1
        logger.debug(
            "malloc_trim(0) after unloading rooms returned %s (%.1f ms)",
            released,
            (time.perf_counter() - started) * 1000,
        )
        return released
