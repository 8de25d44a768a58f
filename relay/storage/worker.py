"""One thread that runs a storage's blocking calls in order, for the event loop.

A ``ThreadPoolExecutor`` costs, per call, a concurrent future, a work item, two
locks, a condition variable and the chaining of an asyncio future to the
concurrent one; the relay makes one such call per group commit. A
:class:`SerialWorker` takes calls from a ``queue.SimpleQueue`` (implemented in
C) and hands each result straight to an asyncio future with
``call_soon_threadsafe``: the same one thread wake-up per call, with far less
around it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["SerialWorker"]

logger = logging.getLogger("relay.storage")

_T = TypeVar("_T")
_Item = tuple[Callable[[], Any], asyncio.AbstractEventLoop | None, "asyncio.Future[Any] | None"]


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class SerialWorker:
    """A thread running calls one at a time, in the order they were made."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        # A daemon: a storage never closed must not keep the interpreter alive. An
        # SQLite commit cut by the exit is what a crash leaves: atomic, as promised.
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            self._run_one(*item)
            # Nothing of the last call may stay alive while the thread waits for the
            # next: a read's result can be a whole document.
            del item

    @staticmethod
    def _run_one(
        call: Callable[[], Any],
        loop: asyncio.AbstractEventLoop | None,
        future: asyncio.Future[Any] | None,
    ) -> None:
        try:
            result = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, as an executor does
            if loop is None or future is None:
                logger.error("storage call %r failed with nobody waiting: %s", call, exc)
            else:
                loop.call_soon_threadsafe(_set_exception, future, exc)
            return
        if loop is not None and future is not None:
            loop.call_soon_threadsafe(_set_result, future, result)

    def run(self, call: Callable[[], _T]) -> asyncio.Future[_T]:
        """Run ``call`` on the thread after every call made before; await its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._queue.put((call, loop, future))
        return future

    def submit(self, call: Callable[[], object]) -> None:
        """Run ``call`` on the thread with nobody waiting (a failure is logged)."""
        self._queue.put((call, None, None))

    def shutdown(self) -> None:
        """Stop the thread once the calls already made are done."""
        self._queue.put(None)
