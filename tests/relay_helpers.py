"""Helpers for tests that run a real relay: in-process or as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pycrdt

ROOT = Path(__file__).resolve().parent.parent


async def eventually(
    doc: pycrdt.Doc[Any], predicate: Callable[[], bool], timeout: float = 20
) -> None:
    """Wait (on the document's change events, not a sleep) until ``predicate()`` holds."""
    changed = asyncio.Event()
    subscription = doc.observe(lambda event: changed.set())
    try:
        async with asyncio.timeout(timeout):
            while True:
                changed.clear()
                if predicate():
                    return
                await changed.wait()
    finally:
        doc.unobserve(subscription)


async def wait_state(replica: Any, predicate: Callable[[Any], bool], timeout: float = 30) -> Any:
    """Wait (on SyncStateChanged events, not a sleep) until ``predicate(sync_state)``;
    return the state."""
    from crdtsync import SyncStateChanged  # noqa: PLC0415

    changed = asyncio.Event()
    stop = replica.observe(lambda e: changed.set() if isinstance(e, SyncStateChanged) else None)
    try:
        async with asyncio.timeout(timeout):
            while not predicate(replica.sync_state):
                changed.clear()
                await changed.wait()
    finally:
        stop()
    return replica.sync_state


class RelayProcess:
    """``python -m relay`` in a subprocess, on 127.0.0.1 and a free (or given) port.

    ``args``: more command-line flags; ``env``: more environment variables;
    ``open_files``: the ``(soft, hard)`` limit of open files the relay starts with
    (set with ``setrlimit`` before it runs)."""

    def __init__(
        self,
        store: str,
        log: Path,
        port: int = 0,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        *,
        open_files: tuple[int, int] | None = None,
    ) -> None:
        self.store = store
        self.log = log
        self.port = port
        self.args = list(args)
        """More command-line arguments."""
        self.env = dict(env or {})
        """More environment variables."""
        self.open_files = open_files
        self.url = ""
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        """Every log line so far (of every start)."""
        self._line = asyncio.Event()
        self._copier: asyncio.Task[None] | None = None

    async def start(self) -> str:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "relay",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--store",
            self.store,
            "--log-level",
            "INFO",
            *self.args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            preexec_fn=self._limit_files if self.open_files is not None else None,
        )
        self._copier = asyncio.get_running_loop().create_task(self._copy_log())
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 30)).decode()
        if "listening on" not in line:
            raise RuntimeError(f"relay did not start: {line!r}; log: {self.log.read_text()}")
        self.url = line.split("listening on ")[1].split()[0]
        self.port = int(self.url.rsplit(":", 1)[1])
        return self.url

    def _limit_files(self) -> None:
        """In the child, before ``exec``: its open-file limit."""
        assert self.open_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, self.open_files)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def _copy_log(self) -> None:
        """Copy the relay's stderr to its log file, line by line, waking :meth:`logged`."""
        assert self.proc is not None and self.proc.stderr is not None
        with self.log.open("ab") as log:
            async for raw in self.proc.stderr:
                log.write(raw)
                log.flush()
                self.lines.append(raw.decode(errors="replace"))
                line, self._line = self._line, asyncio.Event()
                line.set()

    async def logged(self, text: str, after: int = 0, timeout: float = 60) -> int:
        """Wait until a log line from number ``after`` on contains ``text``; return
        the number of the line after it (to wait for what comes next)."""
        async with asyncio.timeout(timeout):
            while True:
                for index in range(after, len(self.lines)):
                    if text in self.lines[index]:
                        return index + 1
                after = len(self.lines)
                await self._line.wait()

    async def _stopped(self) -> None:
        assert self.proc is not None
        await self.proc.wait()
        if self._copier is not None:
            await self._copier

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self._stopped()

    async def terminate(self) -> int:
        """SIGTERM: graceful shutdown; returns the exit code."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self._stopped(), 30)
        assert self.proc.returncode is not None
        return self.proc.returncode

    async def ensure_stopped(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            await self.kill()


async def raw_http(port: int, request: bytes, timeout: float = 30) -> bytes:
    """Send ``request`` raw to a relay on loopback (and nothing more); the whole
    answer, up to the relay closing the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        async with asyncio.timeout(timeout):
            return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
