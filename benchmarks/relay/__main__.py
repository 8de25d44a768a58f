"""``python -m benchmarks.relay``: one run of one scenario against one server, written
as JSON (users run the whole group with ``python -m benchmarks --only relay``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict

from ..comparison import workdir
from ..harness.placement import Placement
from ..one_run import one_run_parser, parse_one_run, save_run
from ..servers import ALL_SERVERS
from ..trace import prepare_trace
from .group import progress, run_one
from .scenarios import Params


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.relay``: one run of one scenario."""
    parser = one_run_parser(
        "relay", "One run of one relay-benchmark scenario", ALL_SERVERS, worker=False
    )
    parser.add_argument("--scenario", choices=["a", "b", "c", "d"], default="a")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds (default 0.5)")
    parser.add_argument("--duration", type=float, default=1.0, help="seconds (default 1)")
    parser.add_argument("--rooms", type=int, help="rooms in (c) (default 100)")
    parser.add_argument("--clients", type=int, help="clients in (b) (default 20)")
    parser.add_argument("--updates", type=int, help="document size in (d) (default 20,000)")
    parser.add_argument(
        "--loadgen-processes",
        type=int,
        help="load-generator processes (default: one per core left after the server's); "
        "with fewer rooms than processes the rooms' clients are split over them",
    )
    args = parse_one_run(parser, argv)
    assert args is not None
    base = Params.for_mode("quick")
    params = Params(
        "quick",
        warmup_s=args.warmup,
        duration_s=args.duration,
        repeat=1,
        b_clients=args.clients or base.b_clients,
        c_rooms=args.rooms or base.c_rooms,
        late_updates=args.updates or base.late_updates,
        loadgen_processes=args.loadgen_processes,
    )
    scenario = params.scenario(args.scenario)
    if scenario.key == "d" and args.server != "relay":
        parser.error("scenario d runs against the relay only (python -m benchmarks.sync: all)")
    placement = Placement.plan()
    with workdir("crdtsync-relay-run-", args.tmpdir, placement) as work:
        cache = work / "trace.bin"
        if scenario.key == "d":
            prepare_trace(cache)
        result = run_one(
            scenario, args.server, params, placement=placement, work=work, trace_cache=cache
        )
    return save_run(args.out, asdict(result), progress(result))


if __name__ == "__main__":
    sys.exit(main())
