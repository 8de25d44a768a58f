"""``python -m benchmarks.memory``: one run against one server, written as JSON, or (with
``--spec``) the worker process the orchestrator drives. Users run the whole group with
``python -m benchmarks --only memory``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace

from ..comparison import workdir
from ..harness.placement import Placement
from ..one_run import one_run_parser, parse_one_run, save_run
from ..servers import ALL_SERVERS
from .group import progress, run_server
from .params import Params
from .worker import worker_main


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.memory``: one run against one server (``--spec``: the worker)."""
    parser = one_run_parser("memory", "One memory-benchmark run", ALL_SERVERS)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--documents", type=int, default=200)
    args = parse_one_run(parser, argv, worker_main)
    if args is None:  # the worker process ran
        return 0
    params = replace(
        Params.for_mode("quick"), connections=args.connections, documents=args.documents
    )
    placement = Placement.plan()
    with workdir("crdtsync-memory-run-", args.tmpdir, placement) as work:
        result = run_server(args.server, params, placement, work)
    return save_run(args.out, result, progress(result))


if __name__ == "__main__":
    sys.exit(main())
