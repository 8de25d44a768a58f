"""``python -m benchmarks.offline``: one run of the offline group, or (``--worker
ACTION PATH``) one of its worker processes. Users run the group with
``python -m benchmarks --only offline``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..harness.group import run_by_hand
from .group import Params, run_once
from .worker import cold_start, create_store, prefetch, seed_relay


def main(argv: Sequence[str] | None = None) -> int:
    """One run of the group, or one worker action (``--worker ACTION PATH``)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.offline")
    parser.add_argument("--worker", nargs=2, metavar=("ACTION", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--big-mb", type=int, default=20)
    parser.add_argument("--url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--pattern", default="*", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.worker:
        action, path = args.worker
        if action == "create":
            result = create_store(Path(path), args.documents)
        elif action == "cold-start":
            result = cold_start(Path(path))
        elif action == "seed":
            result = asyncio.run(seed_relay(path, args.documents, args.big_mb))
        else:
            result = asyncio.run(prefetch(Path(path), args.url, args.pattern))
        print(json.dumps(result))
        return 0
    params = Params("quick", documents=args.documents, big_mb=args.big_mb)
    return run_by_hand("offline", params, run_once, args.out)


if __name__ == "__main__":
    sys.exit(main())
