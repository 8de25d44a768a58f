"""The servers under test: what each is, what it speaks and stores, how to start it.

Every server runs as its own process on 127.0.0.1 with a free port, prints
``... listening on ws://HOST:PORT`` as its first stdout line and stops on
SIGTERM. The peers come from ``benchmarks/.peers`` (:mod:`benchmarks.peers`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import PROJECT_DIR
from .harness.placement import affinity_of_threads
from .harness.processes import LineReader, spawn, stop_process, tail
from .harness.procfs import process_cpu_s, process_status_mb
from .peers import NODE_DIR, SOURCES_DIR, PeerStatus, pycrdt_websocket_python
from .wire import Codec, Protocol, codec

__all__ = [
    "ALL_SERVERS",
    "CRDT_SERVERS",
    "SERVERS",
    "ServerInfo",
    "ServerProcess",
    "available",
]

START_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """One server of the comparison."""

    key: str
    label: str
    protocol: Protocol
    stores: str
    """What it does with updates (persistence), said in every table."""
    peer: str | None = None
    """Which :func:`benchmarks.peers.ensure` installation it needs (None: this project)."""
    prefix: str = ""
    """Path prefix of a y-websocket server (crdtsync's relay: ``/yjs``)."""
    ours: bool = False

    def codec(self, doc_id: str, replica: str = "bench") -> Codec:
        """A client codec for one document on this server."""
        return codec(self.protocol, doc_id, replica, self.prefix)


SERVERS: dict[str, ServerInfo] = {
    info.key: info
    for info in (
        ServerInfo(
            "relay",
            "crdtsync relay, native protocol",
            "native",
            "SQLite, fsync'd group commit, ACK after it",
            ours=True,
        ),
        ServerInfo(
            "relay-yjs",
            "crdtsync relay, /yjs (y-websocket protocol)",
            "yjs",
            "SQLite, fsync'd group commit (y-protocols has no ACK)",
            prefix="/yjs",
            ours=True,
        ),
        ServerInfo(
            "y-websocket",
            "@y/websocket-server (Node)",
            "yjs",
            "memory only (its default)",
            peer="node",
        ),
        ServerInfo(
            "hocuspocus",
            "Hocuspocus (Node)",
            "hocuspocus",
            "memory only (no extension)",
            peer="node",
        ),
        ServerInfo(
            "pycrdt-websocket",
            "pycrdt-websocket",
            "yjs",
            "memory only (no YStore, its default)",
            peer="pycrdt-websocket",
        ),
        ServerInfo(
            "bare",
            "bare forwarder (no CRDT)",
            "raw",
            "nothing (forwards bytes)",
        ),
    )
}
ALL_SERVERS: tuple[str, ...] = tuple(SERVERS)
"""Every server, in report order."""
CRDT_SERVERS: tuple[str, ...] = tuple(key for key in SERVERS if key != "bare")
"""The servers that hold documents (the bare forwarder stores nothing)."""


def available(keys: Sequence[str], peers: dict[str, PeerStatus]) -> dict[str, str | None]:
    """For each server, None if it can run, else why not."""
    reasons: dict[str, str | None] = {}
    for key in keys:
        peer = SERVERS[key].peer
        status = peers.get(peer) if peer is not None else None
        if peer is None:
            reasons[key] = None
        elif status is None:
            reasons[key] = f"{peer}: not checked"
        else:
            reasons[key] = None if status.ok else f"{status.name}: {status.detail}"
    return reasons


class ServerProcess:
    """One server in a subprocess on 127.0.0.1, a free port."""

    def __init__(
        self,
        kind: str,
        work: Path,
        cpus: Sequence[int] | None,
        relay_args: Sequence[str] = (),
    ) -> None:
        self.kind = kind
        self.info = SERVERS[kind]
        self.work = work
        self.cpus = cpus
        self.relay_args = list(relay_args)
        self.db = work / "relay.db"
        self.log = work / f"{kind}-server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pinned: list[int] | None = None
        self.url = ""

    def command(self) -> tuple[list[str], Path]:
        """The server's command line and working directory."""
        if self.kind in ("relay", "relay-yjs"):
            # An absolute path gives sqlite://// + path; synchronous=full is the default.
            command = [sys.executable, "-m", "relay", "--host", "127.0.0.1", "--port", "0"]
            command += ["--store", f"sqlite:///{self.db}", "--log-level", "WARNING"]
            # The abuse limits are for the network: a load generator on loopback floods
            # one connection and opens 1,000 from one address on purpose. The peers
            # have no such limits either.
            command += ["--max-updates-per-second", "0", "--max-bytes-per-second", "0"]
            command += ["--max-connections-per-address", "0"]
            return command + self.relay_args, PROJECT_DIR
        if self.kind == "bare":
            return [
                sys.executable,
                "-m",
                "benchmarks.bare_forwarder",
                "--host",
                "127.0.0.1",
            ], PROJECT_DIR
        if self.kind == "pycrdt-websocket":
            script = SOURCES_DIR / "pycrdt_ws_server.py"
            return [str(pycrdt_websocket_python()), str(script), "--host", "127.0.0.1"], self.work
        node = shutil.which("node") or "node"
        scripts = {"y-websocket": "y_websocket_server.mjs", "hocuspocus": "hocuspocus_server.mjs"}
        return [node, scripts[self.kind], "127.0.0.1", "0"], NODE_DIR

    def start(self) -> str:
        """Start (pinned from exec on), wait for ``listening on ws://...``; return the URL."""
        command, cwd = self.command()
        self.proc = spawn(command, cwd, self.log, self.cpus, stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        try:
            line = LineReader(self.proc.stdout).readline(START_TIMEOUT_S)
        except (TimeoutError, EOFError) as exc:
            raise RuntimeError(f"{self.kind} did not start ({exc}): {tail(self.log)}") from exc
        if "listening on " not in line:
            raise RuntimeError(f"{self.kind} did not start: {line!r} {tail(self.log)}")
        self.url = line.split("listening on ", 1)[1].split()[0]
        self.pinned = affinity_of_threads(self.proc.pid) if self.cpus else None
        return self.url

    @property
    def urls(self) -> list[str]:
        """Every URL serving the same documents (one process: its own)."""
        return [self.url]

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None
        return self.proc.pid

    def cpu_s(self) -> float | None:
        """CPU seconds so far (every thread)."""
        return process_cpu_s(self.pid) if self.proc is not None else None

    def peak_rss_mb(self) -> float | None:
        """Peak RSS so far (``VmHWM``)."""
        return process_status_mb(self.pid) if self.proc is not None else None

    def rss_mb(self) -> float | None:
        """Current RSS (``VmRSS``)."""
        return process_status_mb(self.pid, "VmRSS") if self.proc is not None else None

    def stop(self) -> int | None:
        """Graceful stop (SIGTERM; SIGKILL after a timeout); the exit status."""
        if self.proc is None:
            return None
        return stop_process(self.proc)
