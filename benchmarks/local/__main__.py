"""``python -m benchmarks.local``: the local group's worker (``--worker``: one
configuration) and helper (``--prepare-trace``: the compact trace). Users run the group
with ``python -m benchmarks --only local``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import cast

from ..trace import DEFAULT_TRACE, load_compact, load_trace, save_compact
from .configs import STORE_KINDS, Config, StoreKind
from .worker import run_worker


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.local",
        description="Worker processes of the local-edit benchmark. "
        "To run the benchmark use: python -m benchmarks --only local",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--worker", action="store_true", help="run one configuration")
    action.add_argument(
        "--prepare-trace",
        type=Path,
        metavar="DEST",
        help="write the compact trace to DEST and print its number of edits",
    )
    parser.add_argument("--source", type=Path, default=DEFAULT_TRACE, help="JSON trace to read")
    parser.add_argument("--store", choices=STORE_KINDS, default="bare")
    parser.add_argument("--per-transaction", type=int, default=1, metavar="N")
    parser.add_argument("--edits", type=int, metavar="N", help="trace prefix (default: all)")
    parser.add_argument("--trace-cache", type=Path, metavar="FILE", help="from --prepare-trace")
    parser.add_argument("--out", type=Path, metavar="FILE", help="write the result JSON here")
    parser.add_argument("--tmpdir", type=Path, help="directory for the store files")
    args = parser.parse_args(argv)
    if args.worker and (args.trace_cache is None or args.out is None):
        parser.error("--worker needs --trace-cache and --out")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.local``."""
    args = _parse_args(argv)
    if args.prepare_trace is not None:
        trace = load_trace(args.source, verify=True)
        save_compact(trace, args.prepare_trace)
        print(len(trace))
        return 0
    edits = args.edits if args.edits is not None else len(load_compact(args.trace_cache))
    config = Config(cast(StoreKind, args.store), args.per_transaction, edits)
    result = run_worker(config, args.trace_cache, args.tmpdir)
    args.out.write_text(json.dumps(asdict(result)), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
