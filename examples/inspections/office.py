"""The office of the field-inspection example: assigns inspections, follows the results.

It keeps its own replica (an SQLite file) of the records collection ``inspections``,
the same collection the inspectors' pages edit through the relay's ``/yjs/inspections``.

    python examples/inspections/office.py watch --demo   # what `make example` runs
    python examples/inspections/office.py conflicts      # a one-off command (not while watching)
    python examples/inspections/office.py --help

``watch`` prints every change as it arrives: a ``RecordsChanged`` event wakes it and it
asks ``changes(since=cursor)`` for what changed since it last looked (never a scan of
the whole collection); the cursor is kept in ``<store>.cursor``, so a restart reports
what came in meanwhile. ``ConflictDetected`` events print the concurrent values and the
command that resolves them. While it watches, type the other commands (``help``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import stat
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from crdtsync import (
    ConflictDetected,
    Records,
    RecordsChanged,
    Replica,
    ReplicaEvent,
    StoreLockedError,
)

COLLECTION = "inspections"
SYNC_TIMEOUT = 5.0
"""Seconds to wait for the relay before working on the local copy alone."""

DEMO = {
    "I-101": ("Bridge 12", "Riverside Rd", "Check the north pier for cracks"),
    "I-102": ("Pump station 3", "4 Mill Lane", "Inspect the backup generator"),
    "I-103": ("School roof", "17 Oak Street", "Look for storm damage on the roof"),
}


class Office:
    """The office's replica, its ``inspections`` collection and what it printed last."""

    def __init__(self, replica: Replica, cursor_file: Path) -> None:
        self.replica = replica
        self.records: Records = replica.records(COLLECTION)
        self.cursor_file = cursor_file
        self.known: dict[str, dict[str, Any]] = {}
        """Each record as last printed, to print what changed in it."""
        self.cursor = ""

    # -- following changes -----------------------------------------------------------------

    def start_watching(self) -> None:
        """Print what changed since the last run (the saved cursor), then follow events."""
        saved = self.cursor_file.read_text().strip() if self.cursor_file.exists() else ""
        if saved:  # what this replica received since then (by one-off commands, say)
            changes = self.records.changes(since=saved)
            self.print_changes(changes.upserted, changes.deleted)
            self.save_cursor(changes.cursor)
        else:
            self.save_cursor(self.records.cursor())
        self.known = self.records.all()
        self.replica.observe(self.on_event)

    def on_event(self, event: ReplicaEvent) -> None:
        if isinstance(event, RecordsChanged) and event.collection == COLLECTION:
            # What changed since we last looked, from the CRDT's own state: each record
            # once, as it is now, however many edits the event covers.
            changes = self.records.changes(since=self.cursor)
            self.print_changes(changes.upserted, changes.deleted, quiet=event.local)
            self.save_cursor(changes.cursor)
        elif isinstance(event, ConflictDetected) and event.collection == COLLECTION:
            self.print_conflict(event.record_id, event.field)

    def print_changes(
        self, upserted: dict[str, dict[str, Any]], deleted: list[str], quiet: bool = False
    ) -> None:
        """Print each changed record (what changed in it, if it was printed before).
        ``quiet``: the office's own writes (the commands said what they did)."""
        for record_id, record in upserted.items():
            before = self.known.get(record_id)
            self.known[record_id] = record
            if before is None:
                fields = ", ".join(f"{k}={v!r}" for k, v in in_order(record))
                text = f"{record_id} new: {fields}"
            else:
                changed = [(k, v) for k, v in in_order(record) if before.get(k) != v]
                text = f"{record_id} changed: " + "; ".join(
                    f"{k}: {before.get(k)!r} -> {v!r}" for k, v in changed
                )
                if not changed:
                    continue
            if not quiet:
                say(f"received {text}")
        for record_id in deleted:
            self.known.pop(record_id, None)
            if not quiet:
                say(f"received {record_id} deleted")

    def print_conflict(self, record_id: str, field: str) -> None:
        for conflict in self.records.conflicts():
            if (conflict.record_id, conflict.field) != (record_id, field):
                continue
            say(f"conflict {record_id} {field}: {len(conflict.candidates)} values written at once")
            for number, candidate in enumerate(conflict.candidates, 1):
                who = (
                    "office"
                    if candidate.replica_id == self.replica.replica_id
                    else candidate.replica_id
                )
                shown = "  <- shown now" if number == 1 else ""
                at = candidate.written_at.astimezone().strftime("%H:%M:%S")
                say(f"   {number}. {candidate.value!r} ({who}, {at}){shown}")
            say(f"   keep one: resolve {record_id} {field} --pick N")

    def save_cursor(self, cursor: str) -> None:
        self.cursor = cursor
        self.cursor_file.write_text(cursor + "\n")

    # -- the commands ------------------------------------------------------------------------

    def run(self, args: argparse.Namespace) -> None:
        """Carry out one command (anything but ``watch``)."""
        records = self.records
        if args.command == "assign":
            fields = {"site": args.site, "address": args.address, "task": args.task}
            fields |= {"due": args.due, "status": "assigned"}
            if args.id:
                records.put(args.id, fields)
            else:
                args.id = records.add(fields)
            say(f"assigned {args.id}: {args.site}, {args.address}: {args.task}")
        elif args.command == "list":
            for record_id, record in records.all().items():
                say(
                    f"{record_id:8} {record.get('status', ''):10} {record.get('site', '')}, "
                    f"{record.get('address', '')}"
                )
        elif args.command == "show":
            shown = records.get(args.id)
            if shown is None:
                raise KeyError(f"no inspection {args.id!r}")
            say(json.dumps({args.id: dict(in_order(shown))}, indent=2))
        elif args.command == "set":
            records.update(args.id, **{args.field: args.value})
            say(f"set {args.id} {args.field} = {args.value!r}")
        elif args.command == "conflicts":
            found = records.conflicts()
            if not found:
                say("no conflicts")
            for conflict in found:
                self.print_conflict(conflict.record_id, conflict.field)
        elif args.command == "resolve":
            self.resolve(args.id, args.field, args.pick, args.value)

    def resolve(self, record_id: str, field: str, pick: int | None, value: str | None) -> None:
        """Write the chosen value as a write that has seen every concurrent one."""
        if pick is not None:
            conflict = next(
                (
                    c
                    for c in self.records.conflicts()
                    if (c.record_id, c.field) == (record_id, field)
                ),
                None,
            )
            if conflict is None:
                raise ValueError(f"no conflict on {record_id} {field} (see: conflicts)")
            if not 1 <= pick <= len(conflict.candidates):
                raise ValueError(f"--pick takes 1 to {len(conflict.candidates)}")
            chosen: Any = conflict.candidates[pick - 1].value
        else:
            chosen = value
        self.records.resolve(record_id, field, chosen)
        say(f"resolved {record_id} {field} = {chosen!r}")

    async def photo(self, record_id: str, out: Path | None) -> None:
        """Save the photo of a record (downloaded from the relay, verified against its hash)."""
        record = self.records.get(record_id) or {}
        ref = record.get("photo")
        if not isinstance(ref, str):
            raise ValueError(f"{record_id} has no photo")
        data = await self.replica.attachments.get(ref)
        out = out or Path(f"{record_id}-photo")
        out.write_bytes(data)
        say(f"photo of {record_id}: {len(data)} bytes ({ref}) saved to {out}")

    def assign_demo(self) -> None:
        """Assign the example's three inspections, unless the collection has some."""
        if len(self.records) > 0:
            return
        due = (date.today() + timedelta(days=3)).isoformat()
        for record_id, (site, address, task) in DEMO.items():
            self.run(
                parser().parse_args(
                    ["assign", site, address, task, "--id", record_id, "--due", due]
                )
            )


FIELDS = ("site", "address", "task", "due", "status", "condition", "notes", "photo")


def in_order(record: dict[str, Any]) -> list[tuple[str, Any]]:
    """A record's fields, the usual ones first."""
    rank = {field: number for number, field in enumerate(FIELDS)}
    return sorted(record.items(), key=lambda kv: (rank.get(kv[0], len(FIELDS)), kv[0]))


def say(text: str) -> None:
    print(text, flush=True)


# -- command line -----------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="office.py",
        description="The office of the crdtsync field-inspection example: assigns "
        "inspections and follows the inspectors' results in the records collection "
        f"{COLLECTION!r}, synced through the relay.",
    )
    top.add_argument(
        "--store",
        default="relay-data/example/office.db",
        help="the office's replica (SQLite file; default: %(default)s)",
    )
    top.add_argument(
        "--relay", default="ws://127.0.0.1:8765", help="the relay (default: %(default)s)"
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    watch = commands.add_parser(
        "watch", help="print changes and conflicts as they arrive; type commands meanwhile"
    )
    watch.add_argument(
        "--demo", action="store_true", help="assign three example inspections if there are none"
    )
    assign = commands.add_parser("assign", help="assign a new inspection")
    assign.add_argument("site")
    assign.add_argument("address")
    assign.add_argument("task")
    assign.add_argument(
        "--due", default=(date.today() + timedelta(days=7)).isoformat(), help="default: in a week"
    )
    assign.add_argument("--id", help="the record id (default: a new unique one)")
    commands.add_parser("list", help="every inspection, one a line")
    show = commands.add_parser("show", help="one inspection, every field")
    show.add_argument("id")
    set_ = commands.add_parser("set", help="write one field of an inspection (a text value)")
    set_.add_argument("id")
    set_.add_argument("field")
    set_.add_argument("value")
    commands.add_parser("conflicts", help="fields that hold values written concurrently")
    resolve = commands.add_parser(
        "resolve", help="settle a conflict: pick a listed value, or write another"
    )
    resolve.add_argument("id")
    resolve.add_argument("field")
    choice = resolve.add_mutually_exclusive_group(required=True)
    choice.add_argument("--pick", type=int, metavar="N", help="the value numbered N by `conflicts`")
    choice.add_argument("--value", help="another value (text)")
    photo = commands.add_parser("photo", help="download and save an inspection's photo")
    photo.add_argument("id")
    photo.add_argument("file", nargs="?", type=Path, help="where to save it (default: ID-photo)")
    return top


async def run_one(office: Office, args: argparse.Namespace) -> bool:
    """Carry out a command; say what was wrong with it (and return False) if it fails."""
    try:
        if args.command == "photo":
            await office.photo(args.id, args.file)
        else:
            office.run(args)
    except (KeyError, ValueError, TypeError) as exc:  # a missing record, a bad value...
        say(f"error: {exc.args[0] if exc.args else exc}")
        return False
    return True


async def main(args: argparse.Namespace) -> int:
    Path(args.store).parent.mkdir(parents=True, exist_ok=True)
    try:
        replica = Replica(args.store)
    except StoreLockedError:
        say(f"{args.store} is in use: is `office.py watch` running? Type the command there.")
        return 1
    with replica:
        office = Office(replica, Path(f"{args.store}.cursor"))
        if args.command == "watch":
            office.start_watching()  # before connecting: what arrives is printed
        await replica.connect(args.relay)
        try:
            await replica.wait_synced(COLLECTION, timeout=SYNC_TIMEOUT)
        except TimeoutError:
            say(f"the relay at {args.relay} is not reachable: working on the local copy")
        try:
            if args.command == "watch":
                await watch(office, args)
                return 0
            if not await run_one(office, args):
                return 1
            try:  # upload what the command wrote
                await replica.wait_synced(COLLECTION, timeout=SYNC_TIMEOUT)
            except TimeoutError:
                say("saved here; it uploads the next time the office reaches the relay")
            return 0
        finally:
            await replica.disconnect()


async def watch(office: Office, args: argparse.Namespace) -> None:
    """Follow changes until SIGINT/SIGTERM; run the commands typed meanwhile."""
    if args.demo:
        office.assign_demo()
    say(f"watching {COLLECTION!r} on {args.relay}; commands: {', '.join(COMMANDS)} (type help)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    console = loop.create_task(read_commands(office))
    await stop.wait()
    console.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await console


COMMANDS = ("assign", "list", "show", "set", "conflicts", "resolve", "photo")


async def read_commands(office: Office) -> None:
    """Commands typed while watching, one a line, as on the command line."""
    mode = os.fstat(sys.stdin.fileno()).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or sys.stdin.isatty()):
        return  # /dev/null or a file: nothing will be typed
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    while line := await reader.readline():
        try:
            words = shlex.split(line.decode())
        except ValueError as exc:  # an unclosed quote
            say(f"error: {exc}")
            continue
        if not words:
            continue
        if words[0] not in COMMANDS:
            if words[0] not in ("help", "-h", "--help"):
                say(f"unknown command {words[0]!r}")
            say(f"commands: {', '.join(COMMANDS)}; COMMAND -h tells more")
            continue
        try:
            command = parser().parse_args(words)
        except SystemExit:  # argparse said what was wrong (or printed the help)
            continue
        await run_one(office, command)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parser().parse_args())))
