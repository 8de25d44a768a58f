"""``python -m benchmarks.store``: one run of the store group, or (``--worker ACTION
PATH``) one of its worker processes. Users run the group with
``python -m benchmarks --only store``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..harness.group import run_by_hand
from .group import Params, run_once
from .worker import create, reopen


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.store``: one run (``--worker``: create or reopen a store)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.store")
    parser.add_argument("--worker", nargs=2, metavar=("ACTION", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.worker:
        action, path = args.worker
        if action == "create":
            print(json.dumps(create(Path(path), args.documents, args.edits)))
        else:
            print(json.dumps(reopen(Path(path), args.documents)))
        return 0
    params = Params("quick", documents=args.documents, edits=args.edits)
    return run_by_hand("store", params, run_once, args.out, _without_reopens)


def _without_reopens(result: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in result.items() if key != "reopens"}


if __name__ == "__main__":
    sys.exit(main())
