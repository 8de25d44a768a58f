"""``python -m benchmarks.records``: one run of the records group, or (``--worker ACTION
PATH``) one of its worker processes. Users run the group with
``python -m benchmarks --only records``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..harness.group import run_by_hand
from .group import Params, run_once
from .worker import create, reopen


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.records``: one run (``--worker``: create or reopen)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.records",
        description="One run of the records benchmark (python -m benchmarks --only records "
        "runs the group and writes its report).",
    )
    parser.add_argument("--worker", nargs=2, metavar=("ACTION", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--cursor", help=argparse.SUPPRESS)
    parser.add_argument("--records", type=int, default=20_000, help="records in the collection")
    parser.add_argument("--ops", type=int, default=2_000, help="updates, sets and gets timed")
    parser.add_argument("--out", type=Path, help="write the run's JSON here")
    args = parser.parse_args(argv)
    if args.worker:
        action, path = args.worker
        if action == "create":
            print(json.dumps(create(Path(path), args.records, args.ops)))
        else:
            print(json.dumps(reopen(Path(path), args.cursor)))
        return 0
    params = Params("quick", records=args.records, ops=args.ops)
    return run_by_hand("records", params, run_once, args.out)


if __name__ == "__main__":
    sys.exit(main())
