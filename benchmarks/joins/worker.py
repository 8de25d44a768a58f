"""The joins group's worker: ``joiners`` replicas connect to the relay at once and each
waits until it holds the whole document; one JSON line of results on stdout."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence

import pycrdt

from crdtsync import Replica

from .document import DOC, digest

__all__ = ["main"]


async def _join(url: str, expected: str, timeout: float) -> dict[str, object]:
    replica = Replica(":memory:")
    started = time.perf_counter()
    try:
        await replica.connect(url)
        await replica.wait_synced(DOC, timeout=timeout)
        seconds = time.perf_counter() - started
        text = str(replica.open(DOC).get("t", type=pycrdt.Text))
        return {"seconds": seconds, "intact": digest(text) == expected, "chars": len(text)}
    finally:
        await replica.disconnect()
        replica.close()


async def _run(url: str, joiners: int, expected: str, timeout: float) -> list[dict[str, object]]:
    return list(await asyncio.gather(*(_join(url, expected, timeout) for _ in range(joiners))))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.joins.worker")
    parser.add_argument("--url", required=True)
    parser.add_argument("--joiners", type=int, required=True)
    parser.add_argument("--digest", required=True)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    try:
        joins = asyncio.run(_run(args.url, args.joiners, args.digest, args.timeout))
    except (OSError, TimeoutError) as exc:
        print(json.dumps({"status": "FAILED", "failure": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps({"status": "ok", "joins": joins}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
