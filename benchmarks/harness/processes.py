"""Child processes of the benchmarks: start (pinned), talk to by lines, stop.

Servers, load generators and workers run as separate processes so that the
process measured is only what it is (the orchestrator reads its CPU and RSS
from ``/proc/<pid>``, :mod:`.procfs`). A worker is driven through a line
conversation: the orchestrator writes a command line to its stdin, the worker
answers one line on its stdout (:mod:`.commands` is the worker's side).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from array import array
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import IO, Any, cast

from .. import PROJECT_DIR
from .placement import pin, pinning_preexec

__all__ = [
    "LineReader",
    "WorkerProcess",
    "free_port",
    "output_tail",
    "run_command",
    "run_module",
    "run_worker",
    "spawn",
    "stop_process",
    "tail",
]

STOP_TIMEOUT_S = 15.0


def spawn(
    command: Sequence[str], cwd: Path, log: Path, cpus: Sequence[int] | None, *, stdin: int
) -> subprocess.Popen[bytes]:
    """Start ``command`` with its stdout piped and its stderr appended to ``log``, pinned
    to ``cpus`` from ``exec`` on (None: not pinned)."""
    with log.open("ab") as stderr:
        return subprocess.Popen(
            list(command),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=pinning_preexec(cpus),  # noqa: PLW1509 - no threads here
        )


def run_command(
    command: Sequence[str], *, cwd: Path | None = PROJECT_DIR, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` to its end, its output captured as text; never raises on its status
    (``subprocess.TimeoutExpired`` after ``timeout``)."""
    return subprocess.run(
        list(command), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def run_module(
    module: str, *args: str, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m module args...`` in the project directory (see :func:`run_command`)."""
    return run_command([sys.executable, "-m", module, *args], timeout=timeout)


def run_worker(module: str, *args: str, timeout: float | None = None) -> dict[str, Any]:
    """``python -m module --worker args...``: the JSON object on its last line of output.

    Raises ``RuntimeError`` if it exits with an error (its last lines of stderr say why).
    """
    done = run_module(module, "--worker", *args, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"worker failed ({done.returncode}): {output_tail(done.stderr, 3)}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def free_port() -> int:
    """A TCP port on 127.0.0.1 free now (for a server process told its port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def output_tail(text: str, lines: int = 5) -> str:
    """The last ``lines`` lines of ``text`` on one line."""
    return " | ".join(text.strip().splitlines()[-lines:])


def tail(path: Path, lines: int = 5) -> str:
    """The last ``lines`` lines of a log file on one line (empty if unreadable)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return output_tail(text, lines)


class LineReader:
    """Lines from a child's stdout pipe, with a timeout (select on the descriptor)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.fd = stream.fileno()
        self.buffer = b""
        self.eof = False

    def readline(self, timeout: float) -> str:
        """The next line without its newline; raises TimeoutError or EOFError."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            if self.eof:
                raise EOFError("the process closed its output")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no output within {timeout:.0f} s")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                chunk = os.read(self.fd, 65536)
                if chunk:
                    self.buffer += chunk
                else:
                    self.eof = True
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode(errors="replace").strip()


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout``; the exit status (negative: a signal)."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                proc.kill()
            proc.wait(10)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with suppress(OSError):
                stream.close()
    return proc.returncode


class WorkerProcess:
    """One ``python -m benchmarks.<module> --spec FILE --out FILE`` process and its
    stdin/stdout conversation: the orchestrator writes command lines, the worker
    answers one line each; at the end it has written its result JSON to ``out``."""

    def __init__(
        self,
        module: str,
        spec: dict[str, Any],
        work: Path,
        name: str,
        cpus: Sequence[int] | None,
    ) -> None:
        self.module = module
        self.spec_path = work / f"{name}.spec.json"
        self.out = work / f"{name}.out.json"
        self.log = work / f"{name}.log"
        self.spec_path.write_text(json.dumps(spec), encoding="utf-8")
        self.cpus = cpus
        self.proc: subprocess.Popen[bytes] | None = None
        self.reader: LineReader | None = None
        self.pinned: list[int] | None = None

    def start(self) -> None:
        """Start the process (pinned from the start where asked)."""
        command = [sys.executable, "-m", self.module, "--spec", str(self.spec_path)]
        command += ["--out", str(self.out)]
        self.proc = spawn(command, PROJECT_DIR, self.log, self.cpus, stdin=subprocess.PIPE)
        self.pinned = pin(self.proc.pid, self.cpus)
        assert self.proc.stdout is not None
        self.reader = LineReader(self.proc.stdout)

    @property
    def pid(self) -> int:
        """The process id."""
        assert self.proc is not None
        return self.proc.pid

    def expect(self, *words: str, timeout: float) -> list[str]:
        """Wait for a line starting with one of ``words``; its words. RuntimeError if
        another line comes, none within ``timeout`` or the process ends."""
        assert self.reader is not None
        wanted = " or ".join(repr(word) for word in words)
        try:
            line = self.reader.readline(timeout)
        except (TimeoutError, EOFError) as exc:
            raise RuntimeError(
                f"{self.module}: no {wanted} ({exc}); log: {tail(self.log)}"
            ) from exc
        if line.split()[:1] not in ([word] for word in words):
            raise RuntimeError(f"{self.module} said {line!r}, expected {wanted}")
        return line.split()

    def send(self, line: str) -> None:
        """Write one command line to the process."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def step(self, command: str, answer: str, timeout: float) -> None:
        """Send ``command`` and wait for ``answer``; a worker that answers ``failed``
        (see :func:`.commands.serve_commands`) raises RuntimeError with its failure."""
        self.send(command)
        if self.expect(answer, "failed", timeout=timeout)[0] == "failed":
            self.expect("done", timeout=60)
            raise RuntimeError(self.result().get("failure") or "the worker failed")

    def finish(self) -> dict[str, Any]:
        """Send ``finish``, wait for ``done``; the result JSON the worker wrote."""
        self.send("finish")
        self.expect("done", timeout=60)
        return self.result()

    def result(self) -> dict[str, Any]:
        """The result JSON it wrote."""
        return cast(dict[str, Any], json.loads(self.out.read_text(encoding="utf-8")))

    def read_array(self, path: Path) -> array[int]:
        """int64 values a worker wrote with ``array.tofile`` (empty if none)."""
        values: array[int] = array("q")
        if path.exists():
            values.frombytes(path.read_bytes())
        return values

    def stop(self) -> int | None:
        """Close its stdin and wait; SIGTERM/SIGKILL if it does not exit."""
        if self.proc is None:
            return None
        if self.proc.stdin is not None:
            with suppress(OSError):
                self.proc.stdin.close()
        with suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        return stop_process(self.proc)
