"""The worker side of the line conversation with the orchestrator (asyncio).

The orchestrator (:class:`.processes.WorkerProcess`) writes one command per line
to the worker's stdin; the worker answers each with one word on its stdout.
:func:`serve_commands` is the loop of the sync and memory workers: ``ready``,
then one answer per command until ``finish``, then ``done`` once the result JSON
is written; an error answers ``failed`` instead, and the result says why.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["WORKER_ERRORS", "Handler", "command_line", "say", "serve_commands", "stdin_lines"]

Handler = Callable[[list[str]], Awaitable[str]]
"""Runs one command (its arguments after the command word); returns the answer word."""

WORKER_ERRORS = (OSError, ConnectionError, TimeoutError, RuntimeError, ValueError)
"""What fails a worker's run (reported in its result) rather than crashing it."""


async def stdin_lines() -> asyncio.StreamReader:
    """stdin as an asyncio stream (the orchestrator's commands)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def command_line(reader: asyncio.StreamReader) -> list[str]:
    """The next command's words; EOFError when the orchestrator closed stdin."""
    line = (await reader.readline()).decode().split()
    if not line:
        raise EOFError("the orchestrator closed stdin")
    return line


def say(message: str) -> None:
    """Answer the orchestrator (one line on stdout)."""
    print(message, flush=True)


async def serve_commands(
    handlers: Mapping[str, Handler],
    result: dict[str, Any],
    out: Path,
    cleanup: Callable[[], Awaitable[None]],
) -> None:
    """Say ``ready``, run every command with its handler until ``finish``, then
    ``cleanup()``, write ``result`` to ``out`` as JSON and say ``done``. A handler's
    error (:data:`WORKER_ERRORS`) marks ``result`` FAILED and answers ``failed``."""
    reader = await stdin_lines()
    try:
        say("ready")
        while (command := await command_line(reader))[0] != "finish":
            handler = handlers.get(command[0])
            if handler is None:
                raise ValueError(f"unknown command {command!r}")
            say(await handler(command[1:]))
    except WORKER_ERRORS as exc:
        result["status"] = "FAILED"
        result["failure"] = f"{type(exc).__name__}: {exc}"
        say("failed")
    finally:
        await cleanup()
    out.write_text(json.dumps(result), encoding="utf-8")
    say("done")
