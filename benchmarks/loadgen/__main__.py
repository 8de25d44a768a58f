"""``python -m benchmarks.loadgen --spec FILE --out FILE``: one load-generator process,
started and driven through stdin/stdout by the relay group's orchestrator."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from ..harness.commands import say, stdin_lines
from .late import run_late
from .rooms import run_rooms
from .spec import LateResult, RoomsResult, Spec, latency_path


async def _main_async(spec: Spec, out: Path) -> None:
    reader = await stdin_lines()
    result: RoomsResult | LateResult
    if spec.scenario == "d":
        result = await run_late(spec, reader)
    else:
        result, latencies, ack_latencies = await run_rooms(spec, reader)
        with latency_path(out).open("wb") as fh:
            latencies.tofile(fh)
        with latency_path(out, "ack").open("wb") as fh:
            ack_latencies.tofile(fh)
    out.write_text(json.dumps(asdict(result)), encoding="utf-8")
    say("done")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.loadgen`` (started by the orchestrator)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.loadgen",
        description="Load-generator process of the relay benchmark, driven through "
        "stdin/stdout by it. To run the benchmark use: python -m benchmarks --only relay",
    )
    parser.add_argument(
        "--spec", type=Path, required=True, help="JSON Spec written by the orchestrator"
    )
    parser.add_argument("--out", type=Path, required=True, help="where to write the result JSON")
    args = parser.parse_args(argv)
    spec = Spec(**json.loads(args.spec.read_text(encoding="utf-8")))
    random.seed(spec.seed or None)
    asyncio.run(_main_async(spec, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
