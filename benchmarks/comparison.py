"""What the groups comparing servers (relay, sync, memory) share around their runs.

:meth:`Comparison.begin` decides which servers can run (installing their peers unless
``--no-install``) and where the processes run; the comparison then gives the work
directory, runs every server in turn (:meth:`Comparison.run_each_server`, a worker
driven against a fresh server with :func:`worker_on_server`) and builds the group's
JSON (:meth:`Comparison.results`). A run by hand goes through :mod:`benchmarks.one_run`.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import Field, asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from . import Mode, RunOptions, peers
from .harness.group import envelope, now_iso, run_repeated
from .harness.placement import Placement, own_affinity
from .harness.processes import WorkerProcess, tail
from .servers import SERVERS, ServerProcess, available

__all__ = [
    "RUN_ERRORS",
    "Comparison",
    "not_run_lines",
    "workdir",
    "worker_on_server",
]

RUN_ERRORS = (RuntimeError, OSError, ValueError, KeyError, TypeError)
"""What fails one run (reported as FAILED) instead of stopping the group."""

Record = dict[str, Any]
"""One run against one server, as written in the group's JSON ``runs``."""


class GroupParams(Protocol):
    """The sizes of a group comparing servers (a frozen dataclass)."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    @property
    def mode(self) -> Mode: ...

    @property
    def repeat(self) -> int: ...

    @property
    def servers(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class Comparison:
    """One invocation of a group that compares servers."""

    group: str
    options: RunOptions
    servers: tuple[str, ...]
    """The servers asked for that can run, in report order."""
    unavailable: dict[str, str]
    """The servers asked for that cannot run, and why."""
    placement: Placement
    started: str

    @classmethod
    def begin(cls, group: str, options: RunOptions, eligible: Sequence[str]) -> Comparison:
        """The servers of ``eligible`` the command line asked for whose peers are
        installed (installing them unless ``--no-install``); the others are skipped,
        said on stderr and in the report."""
        started = now_iso()
        wanted = [key for key in (options.servers or eligible) if key in eligible]
        reasons = available(wanted, peers.ensure(install=options.install_peers))
        unavailable = {key: reason for key, reason in reasons.items() if reason is not None}
        for key, reason in unavailable.items():
            print(f"{group} group: skipping {SERVERS[key].label}: {reason}", file=sys.stderr)
        servers = tuple(key for key in wanted if key not in unavailable)
        return cls(group, options, servers, unavailable, Placement.plan(), started)

    def workdir(self) -> AbstractContextManager[Path]:
        """The group's temporary directory (see :func:`workdir`)."""
        return workdir(f"crdtsync-{self.group}-bench-", self.options.tmpdir, self.placement)

    def run_each_server(
        self,
        params: GroupParams,
        work: Path,
        run_server: Callable[[str, Path], Record],
        progress: Callable[[Record], str],
    ) -> list[Record]:
        """``run_server(server, run_dir)`` for every server of ``params``, ``repeat`` times
        interleaved (:func:`~.harness.group.run_repeated`), each run in a directory of its
        own under ``work``; every record gets its ``repetition``."""

        def one(server: str, repetition: int) -> Record:
            run_dir = work / f"run-{server}-{repetition}"
            run_dir.mkdir()
            record = run_server(server, run_dir)
            record["repetition"] = repetition
            return record

        def describe(server: str) -> str:
            return f"{self.group}, {SERVERS[server].label}"

        return run_repeated(params.servers, params.repeat, one, describe, progress)

    def results(
        self,
        params: GroupParams,
        parameters: dict[str, Any],
        goals: list[dict[str, Any]],
        runs: list[Record],
    ) -> dict[str, Any]:
        """The group's JSON: the envelope, ``params`` and the group's own ``parameters``,
        where the processes ran, the servers (labels), those not run and the peers'
        versions; the goals and every run."""
        return {
            **envelope(self.group, params.mode, self.started),
            "parameters": {
                **asdict(params),
                **parameters,
                "placement": asdict(self.placement),
                "servers": {key: SERVERS[key].label for key in params.servers},
                "unavailable_servers": self.unavailable,
                "peer_versions": peers.versions(),
            },
            "goals": goals,
            "runs": runs,
        }


@contextmanager
def workdir(prefix: str, tmpdir: Path | None, placement: Placement) -> Iterator[Path]:
    """A temporary directory for the runs (stores, logs, specs), removed afterwards; this
    orchestrator keeps to the load generators' cores meanwhile."""
    with (
        tempfile.TemporaryDirectory(prefix=prefix, dir=tmpdir) as tmp,
        own_affinity(placement.all_loadgen_cpus()),
    ):
        yield Path(tmp)


@contextmanager
def worker_on_server(
    record: Record,
    server: ServerProcess,
    module: str,
    spec: dict[str, Any],
    *,
    work: Path,
    cpus: Sequence[int] | None,
) -> Iterator[WorkerProcess]:
    """Start ``server``, then a worker process ``python -m <module>`` (its spec: ``spec``
    with the server's key and URL), and hand it over once it is ready. A failure (in
    here or in the ``with`` block) marks ``record`` FAILED, with the worker's own reason
    when it gave one; both processes are stopped at the end, and ``record["server_exit"]``
    is the server's exit status (the first one, unless a later one is not 0): a server
    that did not exit cleanly fails the run too."""
    worker: WorkerProcess | None = None
    try:
        url = server.start()
        name = module.rsplit(".", 1)[-1] + "-worker"
        worker = WorkerProcess(
            module, {"server": server.kind, "url": url, **spec}, work, name, cpus
        )
        worker.start()
        worker.expect("ready", timeout=60)
        yield worker
    except RUN_ERRORS as exc:
        record["status"] = "FAILED"
        record["failure"] = f"{type(exc).__name__}: {exc}"
        if worker is not None and worker.out.exists():
            record["failure"] = worker.result().get("failure") or record["failure"]
    finally:
        if worker is not None:
            worker.stop()
        exit_status = server.stop()
        record.setdefault("server_exit", exit_status)
        if exit_status != 0:
            record["server_exit"] = exit_status
    if record["status"] == "ok" and exit_status not in (0, None):
        record["status"] = "FAILED"
        record["failure"] = f"the server exited with {exit_status}: {tail(server.log)}"


def not_run_lines(unavailable: dict[str, str]) -> list[str]:
    """One report line per server that could not run, with the reason."""
    return [f"- Not run: {SERVERS[key].label}: {reason}." for key, reason in unavailable.items()]
