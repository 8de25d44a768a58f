"""``python -m benchmarks.store``: one run of the store group, or (``--worker ACTION
PATH``) one of its worker processes. Users run the group with
``python -m benchmarks --only store``."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

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
    with tempfile.TemporaryDirectory(prefix="crdtsync-store-run-") as tmp:
        result = run_once(params, Path(tmp))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "reopens"}), file=sys.stderr)
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
