"""The storage's worker thread (:mod:`relay.storage.worker`): calls run in order,
off the event loop, and their results and errors reach the caller."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import weakref

import pytest

from relay.storage.worker import SerialWorker


async def test_calls_run_in_order_on_another_thread() -> None:
    worker = SerialWorker("test-storage")
    seen: list[int] = []
    here = threading.get_ident()

    def call(n: int) -> int:
        assert threading.get_ident() != here
        seen.append(n)
        return n * 2

    try:
        results = await asyncio.gather(*(worker.run(lambda n=n: call(n)) for n in range(50)))
        assert results == [n * 2 for n in range(50)] and seen == list(range(50))
    finally:
        worker.shutdown()


async def test_errors_reach_the_caller_and_the_worker_goes_on() -> None:
    worker = SerialWorker("test-storage")

    def fail() -> None:
        raise OSError("disk full")

    try:
        with pytest.raises(OSError, match="disk full"):
            await worker.run(fail)
        assert await worker.run(lambda: "still here") == "still here"
    finally:
        worker.shutdown()


async def test_a_cancelled_wait_and_an_unwatched_failure_are_harmless(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = SerialWorker("test-storage")
    gate = threading.Event()
    try:
        slow = worker.run(gate.wait)
        slow.cancel()  # the caller gave up; the call still runs, its result is dropped
        gate.set()
        with caplog.at_level(logging.ERROR, logger="relay.storage"):
            worker.submit(lambda: 1 / 0)
            assert await worker.run(lambda: 7) == 7  # after the failed one, in order
        assert "failed with nobody waiting" in caplog.text
    finally:
        worker.shutdown()


async def test_the_worker_keeps_nothing_of_a_finished_call() -> None:
    """A read's result can be a whole document: once the caller has it and drops it,
    the worker must not keep it (or the call) alive while it does something else."""
    worker = SerialWorker("test-storage")

    class Big:
        pass

    started, release = threading.Event(), threading.Event()

    def read() -> Big:
        return Big()

    def next_call() -> None:
        started.set()
        release.wait(timeout=30)

    try:
        result = await worker.run(read)
        gone = weakref.ref(result)
        del result
        waiting = worker.run(next_call)
        # The thread is inside the next call: nothing of the first one is on its stack.
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 30)
        gc.collect()
        assert gone() is None, "the worker thread still holds the last result"
        release.set()
        await waiting
    finally:
        release.set()
        worker.shutdown()
