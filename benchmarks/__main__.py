"""Command line: ``python -m benchmarks [--quick | --full] [--only GROUP,...]``.

Each group is a package of this package exporting ``run(options: RunOptions) -> bool``.
Add a group by writing its package and listing it in :data:`GROUPS`. Before the
groups that compare servers, the peers are installed into ``benchmarks/.peers``
(:mod:`benchmarks.peers`, idempotent); after the groups, ``benchmarks/RESULTS.md``
and the plots are regenerated from every group's latest JSON (:mod:`benchmarks.page`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

from . import RESULTS_DIR, RunOptions
from .servers import ALL_SERVERS

GROUPS: dict[str, str] = {
    "relay": "fan-out: our relay (native and /yjs, durable) vs @y/websocket-server, "
    "Hocuspocus, pycrdt-websocket and a bare forwarder",
    "sync": "catch-up after 1k/10k/100k offline edits and a late joiner on the editing trace, "
    "every server",
    "memory": "server RSS per idle connection and per loaded document, and after unloading",
    "redis": "the relay on Redis vs SQLite, 1 vs 2 relay processes on Redis, and Hocuspocus "
    "with extension-redis (CPU per delivery including Redis's)",
    "local": "local edits: bare pycrdt vs crdtsync Replica in each durability mode",
    "store": "reopening a replica store holding 1,000 documents",
    "offline": "cold start with 1,000 documents; prefetch of 1,000 small and one 20 MB "
    "document over HTTP",
    "records": "a collection of 100,000 records: add, update, get, changes(), open, size",
    "joins": "replicas joining a large document at once: relay memory per joiner, /health "
    "latency meanwhile (our relay)",
}
"""Benchmark groups, in the order they run: package name (in this package) -> summary."""
PEER_GROUPS = ("relay", "sync", "memory", "redis")
"""Groups that compare servers (and need the peers installed)."""


def _names(value: str, known: Sequence[str], what: str) -> tuple[str, ...]:
    """Parse a comma-separated list of ``known`` names (``what``: "group", "server")."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what}(s) {', '.join(unknown) or '(none given)'}; "
            f"available: {', '.join(known)}"
        )
    return tuple(dict.fromkeys(names))


def _group_list(value: str) -> list[str]:
    """Parse ``--only``: a comma-separated list of known group names."""
    return list(_names(value, list(GROUPS), "group"))


def _server_list(value: str) -> tuple[str, ...]:
    """Parse ``--servers``: a comma-separated list of known server keys."""
    return _names(value, ALL_SERVERS, "server")


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
        help="short runs, one per configuration (the default; a few minutes)",
    )
    mode.add_argument(
        "--full",
        dest="mode",
        action="store_const",
        const="full",
        help="the numbers to quote: longer windows, three runs, the whole trace (< 30 min)",
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
        "--servers",
        type=_server_list,
        default=None,
        metavar="SERVER[,SERVER...]",
        help=f"compare only these servers (available: {', '.join(ALL_SERVERS)})",
    )
    parser.add_argument(
        "--no-install",
        dest="install_peers",
        action="store_false",
        help="do not install missing peers into benchmarks/.peers (they are skipped)",
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
    options = RunOptions(
        mode=args.mode,
        results_dir=args.results_dir,
        tmpdir=args.tmpdir,
        servers=args.servers,
        install_peers=args.install_peers,
    )
    if any(name in PEER_GROUPS for name in args.only):
        from .peers import ensure  # noqa: PLC0415 - only when a group compares servers

        for status in ensure(install=args.install_peers).values():
            if not status.ok:
                print(f"peers: {status.name} unavailable: {status.detail}", file=sys.stderr)
    failed = [name for name in args.only if not run_group(name, options)]
    from .page import write_page  # noqa: PLC0415 - after the groups

    print(f"wrote {write_page(args.results_dir)}", file=sys.stderr)
    if failed:
        print(f"FAILED runs in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
