"""Several server processes on one private redis-server, measured as one server.

A :class:`ServerCluster` starts a ``redis-server`` (127.0.0.1, a free port, AOF with
``appendfsync always`` in the run's directory: what our relay requires by default)
and then its member processes, every one pinned to the server's cores. The load
generator deals rooms over the members' URLs (room ``slot`` to member ``slot % n``);
the cluster's CPU is the sum of every member's and Redis's own, and each sample
is kept so the report can split it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..harness.processes import LineReader, free_port, spawn, stop_process, tail
from ..harness.procfs import process_cpu_s, process_status_mb
from ..peers import NODE_DIR
from ..servers import SERVERS, ServerInfo, ServerProcess

__all__ = ["CONFIGS", "ClusterConfig", "RedisProcess", "ServerCluster", "redis_missing"]

START_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """One configuration of the comparison."""

    key: str
    label: str
    member: str
    """``relay`` (ours, native protocol) or ``hocuspocus`` (with the Redis extension)."""
    processes: int
    redis: bool
    ours: bool
    stores: str

    @property
    def info(self) -> ServerInfo:
        """What the load generator speaks to it."""
        base = SERVERS[self.member]
        return ServerInfo(
            self.key, self.label, base.protocol, self.stores, base.peer, ours=self.ours
        )


CONFIGS: dict[str, ClusterConfig] = {
    config.key: config
    for config in (
        ClusterConfig(
            "relay-sqlite",
            "crdtsync relay on SQLite, 1 process",
            "relay",
            1,
            False,
            True,
            "SQLite, fsync per group commit, ACK after it",
        ),
        ClusterConfig(
            "relay-redis",
            "crdtsync relay on Redis, 1 process",
            "relay",
            1,
            True,
            True,
            "Redis (AOF appendfsync always), ACK after Redis replied",
        ),
        ClusterConfig(
            "relay-redis-x2",
            "crdtsync relay on Redis, 2 processes",
            "relay",
            2,
            True,
            True,
            "Redis (AOF appendfsync always), ACK after Redis replied",
        ),
        ClusterConfig(
            "hocuspocus-redis",
            "Hocuspocus + extension-redis, 1 process",
            "hocuspocus",
            1,
            True,
            False,
            "memory only; Redis pub/sub between processes (Redis AOF always, unused for data)",
        ),
        ClusterConfig(
            "hocuspocus-redis-x2",
            "Hocuspocus + extension-redis, 2 processes",
            "hocuspocus",
            2,
            True,
            False,
            "memory only; Redis pub/sub between processes (Redis AOF always, unused for data)",
        ),
    )
}


def redis_missing() -> str | None:
    """Why Redis configurations cannot run here, or None."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (Debian: apt-get install redis-server)"
    return None


class RedisProcess:
    """A private redis-server for one run."""

    def __init__(self, work: Path, cpus: Sequence[int] | None) -> None:
        self.work = work
        self.cpus = cpus
        self.port = free_port()
        self.log = work / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "redis-server"
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--dir", str(self.work), "--appendonly", "yes", "--appendfsync", "always"]
        command += ["--save", "", "--logfile", ""]
        self.proc = spawn(command, self.work, self.log, self.cpus, stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        reader = LineReader(self.proc.stdout)
        while True:
            try:
                line = reader.readline(START_TIMEOUT_S)
            except (TimeoutError, EOFError) as exc:
                raise RuntimeError(f"redis-server did not start ({exc}): {tail(self.log)}") from exc
            if "Ready to accept connections" in line:
                return

    def cpu_s(self) -> float | None:
        return process_cpu_s(self.proc.pid) if self.proc is not None else None

    def stop(self) -> int | None:
        return stop_process(self.proc) if self.proc is not None else None


class _Hocuspocus(ServerProcess):
    """Hocuspocus with the Redis extension (``peer_servers/hocuspocus_redis_server.mjs``)."""

    def __init__(self, work: Path, cpus: Sequence[int] | None, redis_port: int) -> None:
        super().__init__("hocuspocus", work, cpus)
        self.redis_port = redis_port

    def command(self) -> tuple[list[str], Path]:
        node = shutil.which("node") or "node"
        script = "hocuspocus_redis_server.mjs"
        return [node, script, "127.0.0.1", "0", "127.0.0.1", str(self.redis_port)], NODE_DIR


class ServerCluster(ServerProcess):
    """``config.processes`` servers (and a redis-server) standing in for one server."""

    def __init__(self, config: ClusterConfig, work: Path, cpus: Sequence[int] | None) -> None:
        super().__init__(config.member, work, cpus)
        self.config = config
        self.kind = config.key
        self.info = config.info
        self.redis = RedisProcess(work, cpus) if config.redis else None
        self.members: list[ServerProcess] = []
        self.samples: list[list[float | None]] = []
        """Every :meth:`cpu_s` call: the CPU seconds of each member, then Redis's."""

    def start(self) -> str:
        """Start Redis, then every member; return the first member's URL."""
        if self.redis is not None:
            self.redis.start()
        for index in range(self.config.processes):
            work = self.work / f"member-{index}"
            work.mkdir(exist_ok=True)
            member: ServerProcess
            if self.config.member == "relay":
                store = [] if self.redis is None else ["--store", self.redis.url]
                member = ServerProcess("relay", work, self.cpus, relay_args=store)
            else:
                assert self.redis is not None
                member = _Hocuspocus(work, self.cpus, self.redis.port)
            self.members.append(member)
            member.start()
        self.url = self.members[0].url
        self.pinned = self.members[0].pinned
        self.log = self.members[0].log
        return self.url

    @property
    def urls(self) -> list[str]:
        return [member.url for member in self.members]

    @property
    def pid(self) -> int:
        return self.members[0].pid

    def cpu_s(self) -> float | None:
        parts = [member.cpu_s() for member in self.members]
        parts.append(self.redis.cpu_s() if self.redis is not None else 0.0)
        self.samples.append(parts)
        if any(part is None for part in parts):
            return None
        return sum(part for part in parts if part is not None)

    def cpu_split(self) -> tuple[float, float] | None:
        """CPU seconds of the members and of Redis between the last two samples (the
        measured window)."""
        if len(self.samples) < 2 or any(p is None for p in self.samples[-1] + self.samples[-2]):
            return None
        before, after = self.samples[-2], self.samples[-1]
        deltas = [
            a - b for a, b in zip(after, before, strict=True) if a is not None and b is not None
        ]
        return sum(deltas[:-1]), deltas[-1]

    def peak_rss_mb(self) -> float | None:
        sizes = [member.peak_rss_mb() for member in self.members]
        if self.redis is not None and self.redis.proc is not None:
            sizes.append(process_status_mb(self.redis.proc.pid))
        return None if any(size is None for size in sizes) else sum(s for s in sizes if s)

    def stop(self) -> int | None:
        """Stop every member, then Redis; the first non-zero member status (or 0)."""
        statuses = [member.stop() for member in self.members]
        if self.redis is not None:
            self.redis.stop()
        return next((status for status in statuses if status not in (0, None)), 0)
