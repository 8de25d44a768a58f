"""``crdtsync-relay admin``: look after a relay store (SQLite or Redis) from the shell.

    crdtsync-relay admin --store URL list               # documents, log entries, sizes
    crdtsync-relay admin --store URL info DOC           # log, snapshot, claims, last write
    crdtsync-relay admin --store URL export DOC > doc.bin   # the state as one Yjs update
    crdtsync-relay admin --store URL import DOC < doc.bin   # merge a Yjs update into DOC
    crdtsync-relay admin --store URL compact DOC        # fold the log into a verified snapshot
    crdtsync-relay admin --store URL verify             # every document replays; checksums

Safe while relays serve the same store:

- Redis: every command works live. Reads take no lock; ``import`` is one append
  (relays that have the document loaded get it through the feed, as any update);
  ``compact`` is the same verified, concurrency-safe compaction relays run.
- SQLite: a running relay holds its file exclusively (SQLite admits one process
  while it writes), so every command needs the relay stopped, and says so (exit
  status 3) instead of waiting. The read-only commands (list, info, export,
  verify) open the file read-only and never lock a relay out: one that starts
  while they read waits for the read in progress. While a relay serves, ``GET
  /docs/<doc id>`` on the relay exports a document.

Exit status: 0 done, 1 failed (``verify`` found problems, ``export`` of a
document the store does not have), 2 bad usage or input, 3 the store is locked
by a running relay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pycrdt

from crdtsync.errors import StoreError, StoreLockedError
from crdtsync.ids import DocId, check_doc_id

from .config import parse_args
from .logs import configure_logging
from .persistence import compaction_snapshot
from .room import live_document
from .server import DEFAULT_STORE
from .storage import RelayStorage, StoredRoom, open_storage
from .storage.sqlite import SQLiteStorage
from .storage.sqlite_reader import SQLiteReader

__all__ = ["main"]

READ_ONLY = frozenset({"list", "info", "export", "verify"})
EXIT_LOCKED = 3


class UsageError(Exception):
    """Bad input from the command line or stdin (exit status 2)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crdtsync-relay admin",
        description="Inspect and maintain a relay store (SQLite or Redis), also while relays "
        "serve it (see each command; SQLite needs the relay stopped).",
        epilog="Exit status: 0 done, 1 failed or problems found, 2 bad usage, 3 the SQLite "
        "store is in use by a running relay.",
    )
    parser.add_argument("--store", default=DEFAULT_STORE, help="storage URL (default: %(default)s)")
    parser.add_argument(
        "--redis-volatile",
        action="store_true",
        help="accept a Redis that does not fsync every write (as the relay's flag)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser("list", help="documents with their log and snapshot sizes")
    listing.add_argument("--json", action="store_true", help="one JSON array")
    commands.add_parser(
        "info", help="one document: log, snapshot, claims, last write"
    ).add_argument("doc", help="document id")
    commands.add_parser(
        "export", help="write the document's state (one Yjs v1 update) to stdout"
    ).add_argument("doc", help="document id")
    commands.add_parser(
        "import", help="merge the Yjs update read from stdin into the document"
    ).add_argument("doc", help="document id")
    commands.add_parser(
        "compact", help="fold the document's log into a verified snapshot"
    ).add_argument("doc", help="document id")
    commands.add_parser("verify", help="check that every document replays (and checksums)")
    return parser


def main(argv: Sequence[str]) -> int:
    """``crdtsync-relay admin ...``: returns the exit status."""
    args = parse_args(_parser(), argv)
    configure_logging("ERROR", "text")  # what goes wrong is said once, below
    try:
        return asyncio.run(_run(args))
    except UsageError as exc:
        print(f"crdtsync-relay admin: {exc}", file=sys.stderr)
        return 2
    except StoreLockedError as exc:
        print(f"crdtsync-relay admin: {exc}. {_LOCKED}", file=sys.stderr)
        return EXIT_LOCKED
    except StoreError as exc:
        print(f"crdtsync-relay admin: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a bad document id or store URL
        print(f"crdtsync-relay admin: {exc}", file=sys.stderr)
        return 2


_LOCKED = (
    "A running relay holds this SQLite store (SQLite admits one process while it "
    "writes): stop the relay and run this again, or export a document while it serves "
    "with GET /docs/<doc id> on the relay (with a token if it requires them)"
)


def _storage(url: str, command: str, volatile: bool) -> RelayStorage:
    storage = open_storage(url, redis_volatile=volatile)
    if isinstance(storage, SQLiteStorage) and command in READ_ONLY:
        return SQLiteReader(storage.path)
    return storage


async def _run(args: argparse.Namespace) -> int:
    doc_id = check_doc_id(args.doc) if hasattr(args, "doc") else None
    data = _read_stdin() if args.command == "import" else b""
    if args.command == "export" and sys.stdout.isatty():
        raise UsageError("export writes binary data: redirect it to a file (> doc.bin)")
    async with _storage(args.store, args.command, args.redis_volatile) as storage:
        if args.command == "list":
            return await _list(storage, args.json)
        if args.command == "verify":
            return await _verify(storage)
        assert doc_id is not None
        if args.command == "info":
            return await _info(storage, doc_id)
        if args.command == "export":
            return await _export(storage, doc_id)
        if args.command == "import":
            return await _import(storage, doc_id, data)
        return await _compact(storage, doc_id)


def _read_stdin() -> bytes:
    if sys.stdin.isatty():
        raise UsageError("import reads a Yjs update from stdin: < doc.bin")
    data = sys.stdin.buffer.read()
    check: pycrdt.Doc[Any] = pycrdt.Doc()
    try:
        check.apply_update(data)
    except (ValueError, RuntimeError) as exc:
        raise UsageError(f"stdin is not a Yjs v1 update ({len(data)} bytes): {exc}") from exc
    return data


def _sizes(stored: StoredRoom) -> dict[str, Any]:
    return {
        "doc": stored.doc_id,
        "log_entries": len(stored.updates),
        "log_bytes": stored.log_bytes,
        "snapshot_bytes": len(stored.snapshot or b""),
    }


async def _list(storage: RelayStorage, as_json: bool) -> int:
    rows = [_sizes(await storage.load(doc_id)) for doc_id in await storage.documents()]
    if as_json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    print("log_entries\tlog_bytes\tsnapshot_bytes\tdoc")
    for row in rows:
        print(f"{row['log_entries']}\t{row['log_bytes']}\t{row['snapshot_bytes']}\t{row['doc']}")
    print(f"{len(rows)} document(s)", file=sys.stderr)
    return 0


async def _info(storage: RelayStorage, doc_id: DocId) -> int:
    stored = await storage.load(doc_id)
    live = live_document(doc_id)
    refused = live.load(stored.snapshot, ((entry.update, True) for entry in stored.updates))
    info = _sizes(stored) | {
        "exists": doc_id in await storage.documents(),
        "snapshot_upto": stored.snapshot_upto,
        "first_log_id": stored.updates[0].id if stored.updates else None,
        "last_log_id": stored.updates[-1].id if stored.updates else None,
        "claims": len(stored.claims),
        "owners": sorted(set(stored.claims.values())),
        "state_bytes": len(live.doc.get_update()),
        "held_updates": len(live.held),
        "refused_updates": len(refused),
    }
    last_write = getattr(storage, "last_write", None)
    if last_write is not None:
        stamp = await last_write(doc_id)
        info["last_write"] = None if stamp is None else _iso(stamp)
    print(json.dumps(info, ensure_ascii=False, indent=2))
    return 0


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


async def _export(storage: RelayStorage, doc_id: DocId) -> int:
    stored = await storage.load(doc_id)
    if stored.snapshot is None and not stored.updates:
        # A mistyped id must not leave an empty "backup" behind a success.
        print(f"crdtsync-relay admin: no document {doc_id!r} in this store", file=sys.stderr)
        return 1
    live = live_document(doc_id)
    live.load(stored.snapshot, ((entry.update, True) for entry in stored.updates))
    state = live.doc.get_update()
    sys.stdout.buffer.write(state)
    sys.stdout.buffer.flush()
    print(f"exported {doc_id!r}: {len(state)} bytes", file=sys.stderr)
    return 0


async def _import(storage: RelayStorage, doc_id: DocId, data: bytes) -> int:
    (entry_id,) = await storage.append([(doc_id, data)])
    print(f"imported {len(data)} bytes into {doc_id!r} (log entry {entry_id})", file=sys.stderr)
    return 0


async def _compact(storage: RelayStorage, doc_id: DocId) -> int:
    stored = await storage.load(doc_id)
    if not stored.updates:
        print(f"{doc_id!r}: nothing to compact", file=sys.stderr)
        return 0
    try:
        snapshot, upto = await asyncio.to_thread(compaction_snapshot, stored)
        await storage.compact(doc_id, snapshot, upto)
    except (ValueError, RuntimeError) as exc:
        print(f"crdtsync-relay admin: {doc_id!r} not compacted: {exc}", file=sys.stderr)
        return 1
    print(
        f"compacted {doc_id!r}: log entries up to {upto} into a {len(snapshot)}-byte snapshot",
        file=sys.stderr,
    )
    return 0


async def _verify(storage: RelayStorage) -> int:
    documents = await storage.documents()
    problems = entries = 0
    for doc_id in documents:
        try:
            stored = await storage.load(doc_id)  # checks every checksum
            live = live_document(doc_id)
            refused = live.load(stored.snapshot, ((e.update, True) for e in stored.updates))
        except (StoreError, ValueError, RuntimeError) as exc:
            problems += 1
            print(f"PROBLEM {doc_id!r}: {exc}")
            continue
        entries += len(stored.updates)
        if refused:
            problems += 1
            print(f"PROBLEM {doc_id!r}: {len(refused)} stored update(s) no longer apply")
        if live.held:
            print(f"note {doc_id!r}: {len(live.held)} update(s) wait for missing dependencies")
    print(f"verified {len(documents)} document(s), {entries} log entries: {problems} problem(s)")
    return 1 if problems else 0
