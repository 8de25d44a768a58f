"""A connection's background work, as a task only while there is work.

An idle connection must cost little: a task waiting on an :class:`asyncio.Event`
holds a task, its coroutine's frame, the event, its waiters' deque and a
future (about 1.5 KB each, per connection). :class:`OnDemand` holds a step
function instead and starts a task only when :meth:`OnDemand.set` is called;
the task runs the step again while ``set()`` came during it, then ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["OnDemand"]


class OnDemand:
    """Runs ``step()`` in a task after each :meth:`set`, one run at a time (a
    ``set()`` during a run runs it once more afterwards), the way a task looping on
    ``await event.wait(); event.clear(); step()`` would, without a task between
    runs. ``step`` returns True when there is nothing more to do for good: then
    :meth:`done` is true and :meth:`set` does nothing any more. An exception from
    ``step`` also ends it (it is raised again by :meth:`stop`)."""

    __slots__ = ("_again", "_finished", "_name", "_step", "_task")

    def __init__(self, step: Callable[[], Awaitable[bool]], name: str | None = None) -> None:
        self._step = step
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._finished = False

    def set(self) -> None:
        """There is work: run ``step`` (now, or again after the run under way)."""
        if self._finished:
            return
        self._again = True
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    def done(self) -> bool:
        """``step`` returned True, raised, or :meth:`stop` was called."""
        return self._finished

    async def join(self) -> None:
        """Wait until the run under way (if any) and the runs asked for meanwhile
        are over, without cancelling them if the caller is cancelled."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        """No more runs: cancel the one under way and wait for it to end; raise what
        ``step`` raised, if it did."""
        self._finished = True
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # the caller itself was cancelled

    async def _run(self) -> None:
        try:
            while self._again and not self._finished:
                self._again = False
                if await self._step():
                    self._finished = True
        except BaseException:
            self._finished = True
            raise  # kept in the task: stop() raises it
        self._task = None  # nothing of a finished run is held while idle
