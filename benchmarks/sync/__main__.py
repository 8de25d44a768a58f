"""``python -m benchmarks.sync``: one run against one server, written as JSON, or (with
``--spec``) the worker process the orchestrator drives. Users run the whole group with
``python -m benchmarks --only sync``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..comparison import workdir
from ..harness.placement import Placement
from ..one_run import one_run_parser, parse_one_run, save_run
from ..servers import CRDT_SERVERS
from ..trace import prepare_trace
from .group import progress, run_server
from .params import Params
from .worker import worker_main


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.sync``: one run against one server (or, with ``--spec``,
    the worker process the orchestrator drives)."""
    parser = one_run_parser("sync", "One sync-benchmark run", CRDT_SERVERS)
    parser.add_argument("--edits", type=int, default=3000, help="trace edits (0: all)")
    parser.add_argument("--lags", default="1000", help="comma-separated (default 1000)")
    parser.add_argument("--joins", type=int, default=1)
    args = parse_one_run(parser, argv, worker_main)
    if args is None:  # the worker process ran
        return 0
    params = Params(
        "quick",
        edits=args.edits,
        lags=tuple(int(lag) for lag in args.lags.split(",") if lag),
        joins=args.joins,
        repeat=1,
    )
    placement = Placement.plan()
    with workdir("crdtsync-sync-run-", args.tmpdir, placement) as work:
        prepare_trace(work / "trace.bin")
        result = run_server(args.server, params, placement, work, work / "trace.bin")
    return save_run(args.out, result, progress(result))


if __name__ == "__main__":
    sys.exit(main())
