"""Command line: ``python -m benchmarks [--quick | --full] [--only GROUP,...]``.

Each group is a module of this package exposing ``run(options: RunOptions) -> bool``.
Add a group (``relay``, ``sync``, ...) by writing its module and listing it in
:data:`GROUPS`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

from . import RESULTS_DIR, RunOptions

GROUPS: dict[str, str] = {
    "local": "local edits: bare pycrdt vs crdtsync Replica in each durability mode",
    "relay": "the relay under real websocket clients vs a bare forwarder (durable ACKs)",
}
"""Benchmark groups, in the order they run: module name (in this package) -> summary."""


def _group_list(value: str) -> list[str]:
    """Parse ``--only``: a comma-separated list of known group names."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in GROUPS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown group(s) {', '.join(unknown) or '(none given)'}; "
            f"available: {', '.join(GROUPS)}"
        )
    return list(dict.fromkeys(names))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run crdtsync's benchmarks, print the results as markdown and "
        "write them (JSON and markdown) to the results directory.",
        epilog="groups: " + "; ".join(f"{name}: {about}" for name, about in GROUPS.items()),
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        dest="mode",
        action="store_const",
        const="quick",
        help="trace prefixes, one run per configuration (the default; about a minute)",
    )
    mode.add_argument(
        "--full",
        dest="mode",
        action="store_const",
        const="full",
        help="the whole trace, three runs per configuration (several minutes)",
    )
    parser.set_defaults(mode="quick")
    parser.add_argument(
        "--only",
        type=_group_list,
        default=list(GROUPS),
        metavar="GROUP[,GROUP...]",
        help=f"run only these groups (available: {', '.join(GROUPS)})",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        metavar="DIR",
        help="where to write <group>.json and <group>.md (default: benchmarks/results)",
    )
    parser.add_argument(
        "--tmpdir",
        type=Path,
        metavar="DIR",
        help="where store files are created (default: the system temporary directory); "
        "fsync cost depends on its filesystem",
    )
    return parser.parse_args(argv)


def run_group(name: str, options: RunOptions) -> bool:
    """Import ``benchmarks.<name>`` and run it; True if all its runs passed their checks."""
    module = importlib.import_module(f"{__package__}.{name}")
    run = cast(Callable[[RunOptions], bool], module.run)
    return run(options)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected groups; exit status 1 if any run FAILED."""
    args = parse_args(argv)
    options = RunOptions(mode=args.mode, results_dir=args.results_dir, tmpdir=args.tmpdir)
    failed = [name for name in args.only if not run_group(name, options)]
    if failed:
        print(f"FAILED runs in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
