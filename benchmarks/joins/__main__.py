"""``python -m benchmarks.joins``: one configuration by hand, written as JSON. Users run
the whole group with ``python -m benchmarks --only joins``."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ..harness.placement import Placement
from .group import Params, progress, run_joins, seed


def main(argv: Sequence[str] | None = None) -> int:
    """Seed a document of ``--size-mb`` MB, let ``--joiners`` replicas join at once."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.joins",
        description="Replicas joining one large document at once against a fresh relay: "
        "its RSS and /health latency meanwhile, written as JSON. To run the benchmark "
        "use: python -m benchmarks --only joins",
    )
    parser.add_argument("--size-mb", type=int, default=30)
    parser.add_argument("--joiners", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True, help="write the run's JSON here")
    parser.add_argument("--tmpdir", type=Path, help="where the store and logs go")
    args = parser.parse_args(argv)
    params = replace(Params.for_mode("quick"), size_mb=args.size_mb, joiners=(args.joiners,))
    with tempfile.TemporaryDirectory(prefix="crdtsync-joins-", dir=args.tmpdir) as tmp:
        work = Path(tmp)
        expected, encoded = seed(work / "seed" / "relay.db", params.size_mb)
        result = run_joins(
            args.joiners, params, Placement.plan(), work / "run", (work / "seed", expected, encoded)
        )
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(progress(result), file=sys.stderr)
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
