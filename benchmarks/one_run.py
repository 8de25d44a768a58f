"""One run of a group comparing servers by hand: ``python -m benchmarks.<group>
--server KEY --out FILE`` (and the group's own options), or, with the hidden
``--spec``, the group's worker process started by its orchestrator."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from . import peers
from .servers import SERVERS

__all__ = ["WorkerMain", "one_run_parser", "parse_one_run", "save_run"]

WorkerMain = Callable[[dict[str, Any], Path], Coroutine[Any, Any, None]]
"""A group's worker process: its spec and where to write its result."""


def one_run_parser(
    group: str, what: str, servers: Sequence[str], *, worker: bool = True
) -> argparse.ArgumentParser:
    """The command line of one run against one server: ``--server``, ``--out``,
    ``--tmpdir`` (with ``worker``: the hidden ``--spec`` of the group's worker process).
    ``what`` begins the description, e.g. "One sync-benchmark run"."""
    parser = argparse.ArgumentParser(
        prog=f"python -m benchmarks.{group}",
        description=f"{what} against one server, written as JSON. To run the benchmark "
        f"use: python -m benchmarks --only {group}",
    )
    if worker:
        parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--server", choices=servers, default="relay")
    parser.add_argument("--out", type=Path, required=True, help="write the run's JSON here")
    parser.add_argument("--tmpdir", type=Path, help="where the store and logs go")
    return parser


def parse_one_run(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    worker_main: WorkerMain | None = None,
) -> argparse.Namespace | None:
    """Parse the command line. With ``--spec``, run the worker process to its end and
    return None; else install the server's peer if needed (a usage error if that
    fails) and return the arguments of the run by hand."""
    args = parser.parse_args(argv)
    if worker_main is not None and args.spec is not None:
        spec = json.loads(args.spec.read_text(encoding="utf-8"))
        asyncio.run(worker_main(spec, args.out))
        return None
    peer = SERVERS[args.server].peer
    if peer is not None:
        status = peers.ensure()[peer]
        if not status.ok:
            parser.error(f"{args.server} is not available: {status.detail}")
    return args


def save_run(out: Path, record: dict[str, Any], progress: str) -> int:
    """Write one run by hand to ``out``, say how it went; its exit status."""
    out.write_text(json.dumps(record, indent=2), encoding="utf-8")
    print(progress, file=sys.stderr)
    return 0 if record["status"] == "ok" else 1
