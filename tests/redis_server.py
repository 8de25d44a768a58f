"""A private ``redis-server`` for tests: 127.0.0.1, a free port, AOF with
``appendfsync always`` in a temporary directory. Never the machine's own
instance on 6379 (which may keep nothing on disk).

``make test`` and ``.ci/run`` install the Debian package ``redis-server`` when the
binary is missing; without it the Redis tests skip, except in CI (CI=true) where
they fail.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

import pytest

REDIS_SERVER = shutil.which("redis-server")
START_TIMEOUT = 30.0


def need_redis() -> str:
    """The redis-server binary, or skip (fail in CI) naming the fix."""
    if REDIS_SERVER is None:
        message = (
            "redis-server not found: install the Debian package redis-server "
            "(make test and .ci/run do) to run the Redis tests"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return REDIS_SERVER


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process over ``directory`` (its AOF survives restarts)."""

    def __init__(self, directory: Path, *, fsync: str = "always", appendonly: str = "yes") -> None:
        self.directory = directory
        self.port = free_port()
        self.fsync = fsync
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = directory / "redis.log"
        self._drain: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it and return once it accepts connections (it says so on stdout)."""
        binary = need_redis()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                self.appendonly,
                "--appendfsync",
                self.fsync,
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                "",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        seen: list[bytes] = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if b"Ready to accept connections" in line:
                # Keep draining its output so that it never blocks on a full pipe.
                self._drain = threading.Thread(
                    target=_copy, args=(self.proc.stdout, self.log, seen), daemon=True
                )
                self._drain.start()
                return
        self.kill()
        raise RuntimeError(f"redis-server did not start: {b''.join(seen).decode(errors='replace')}")

    def kill(self) -> None:
        """SIGKILL: Redis gets no chance to save anything more."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        drain, self._drain = self._drain, None
        if drain is not None:
            drain.join()
        if proc.stdout is not None:
            proc.stdout.close()

    def restart(self) -> None:
        """Kill it and start it again on the same port and directory (from its AOF)."""
        self.kill()
        self.start()


def _copy(stream: IO[bytes], log: Path, first: list[bytes]) -> None:
    """Copy redis-server's output to its log until it exits."""
    with log.open("ab") as out:
        out.writelines(first)
        for line in stream:
            out.write(line)


_SHARED: list[RedisServer] = []


def shared_server() -> RedisServer:
    """One private redis-server for the whole test process (started on first use,
    killed at exit); tests keep apart by key prefix. Skips (fails in CI) without
    the binary."""
    if not _SHARED:
        need_redis()
        directory = Path(tempfile.mkdtemp(prefix="crdtsync-redis-"))
        server = RedisServer(directory)
        server.start()
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        atexit.register(server.kill)  # runs first
        _SHARED.append(server)
    return _SHARED[0]
