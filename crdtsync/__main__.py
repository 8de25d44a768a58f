"""The ``crdtsync`` command: inspect a local store, or run the offline demo.

crdtsync info PATH            replica id, documents, pending counts, sizes
crdtsync demo [--store PATH]  offline edits that survive a restart
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import pycrdt

from . import __version__
from .errors import CrdtsyncError
from .replica import Replica

__all__ = ["main"]

logger = logging.getLogger("crdtsync.cli")


def _info(path: Path) -> int:
    if not path.exists():
        print(f"crdtsync: no store at {path}", file=sys.stderr)
        return 1
    with Replica(path) as replica:
        print(f"store:      {path} ({path.stat().st_size:,} bytes)")
        print(f"replica id: {replica.replica_id}")
        documents = replica.documents()
        print(f"documents:  {len(documents)}")
        for doc_id in documents:
            print(f"  {doc_id}: {replica.pending(doc_id)} pending")
    return 0


def _demo(path: Path) -> int:
    """Two 'sessions' of a field app with no network: the second sees the first's work."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with Replica(path) as replica:
        doc = replica.open("inspection-42")
        form = doc.get("form", type=pycrdt.Map)
        visits = int(form.get("visits", 0)) + 1
        form["visits"] = visits
        form["status"] = "in progress" if visits < 3 else "done"
        notes = doc.get("notes", type=pycrdt.Text)
        notes += f"visit {visits}: checked the site offline.\n"
        print(f"session {visits}: edited inspection-42 with no network")
        print(f"  status: {form['status']}")
        pending = replica.pending("inspection-42")
        print(f"  pending upload: {pending} change(s), saved on this device")
    with Replica(path) as replica:
        doc = replica.open("inspection-42")
        print(f"reopened {path}: the edits are still there")
        print("  notes:")
        for line in str(doc.get("notes", type=pycrdt.Text)).splitlines():
            print(f"    {line}")
    print("run it again: each run is another offline session on the same device.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``crdtsync`` console script."""
    parser = argparse.ArgumentParser(
        prog="crdtsync", description="Offline-first CRDT replicas: local store tools."
    )
    parser.add_argument("--version", action="version", version=f"crdtsync {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="show what a local store holds")
    info.add_argument("path", type=Path, help="the store file (SQLite)")
    demo = commands.add_parser("demo", help="offline edits that survive a restart")
    demo.add_argument(
        "--store", type=Path, default=Path("demo-data/field-app.db"), help="store file to use"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "info":
            return _info(args.path)
        return _demo(args.store)
    except CrdtsyncError as exc:
        print(f"crdtsync: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
