"""relay.admin (``crdtsync-relay admin``) through the real command, on SQLite and on
Redis: list, info, export, import, compact and verify, on a stopped relay's store
and while relays serve it."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pycrdt
from redis.asyncio import Redis

from crdtsync import Replica
from crdtsync.ids import DocId
from relay.server import Relay
from relay.storage import open_storage
from relay.storage.redis import RedisStorage

from .relay_helpers import ROOT, RelayProcess, eventually

D = DocId("site/42")
OTHER = DocId("copy")


async def admin(store: str, *argv: str, stdin: bytes = b"") -> tuple[int, bytes, str]:
    """Run ``python -m relay admin --store STORE ARGV``: status, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "admin",
        "--store",
        store,
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 120)
    assert proc.returncode is not None
    return proc.returncode, out, err.decode()


def content(update: bytes) -> dict[str, Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(update)
    return doc.get("m", type=pycrdt.Map).to_py() or {}


async def fill(url: str, tmp_path: Path, edits: int = 30) -> None:
    """A replica writes ``edits`` changes to D through a relay on ``url``."""
    async with Relay(url, port=0) as relay:
        replica = Replica(tmp_path / "writer.db")
        try:
            form = replica.open(D).get("m", type=pycrdt.Map)
            await replica.connect(relay.url)
            await replica.wait_synced(D, timeout=30)
            for n in range(edits):
                form[f"k{n}"] = n
            await replica.wait_synced(D, timeout=30)
        finally:
            await replica.disconnect()
            replica.close()


async def check_every_command(store: str, tmp_path: Path) -> None:
    status, out, _ = await admin(store, "list", "--json")
    assert status == 0
    [row] = json.loads(out)
    assert row["doc"] == D and row["log_entries"] >= 1
    status, out, _ = await admin(store, "info", D)
    info = json.loads(out)
    assert status == 0 and info["exists"] and info["refused_updates"] == 0
    status, exported, _ = await admin(store, "export", D)
    assert status == 0 and content(exported) == {f"k{n}": n for n in range(30)}
    status, _, err = await admin(store, "import", OTHER, stdin=exported)
    assert status == 0 and "imported" in err
    status, _, err = await admin(store, "compact", D)
    assert status == 0 and "compacted" in err
    status, out, _ = await admin(store, "verify")
    assert status == 0 and b"2 document(s)" in out and b"0 problem(s)" in out
    status, again, _ = await admin(store, "export", OTHER)
    assert content(again) == content(exported)
    status, nothing, err = await admin(store, "export", "site/4")  # a typo: not a backup
    assert (status, nothing) == (1, b"") and "no document 'site/4'" in err
    status, out, _ = await admin(store, "info", D)
    assert json.loads(out)["log_entries"] == 0 and json.loads(out)["snapshot_bytes"] > 0
    assert json.loads(out)["last_write"] == info["last_write"]  # kept through compaction
    assert info["last_write"].endswith("+00:00")


async def test_sqlite_store_of_a_stopped_relay(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/relay.db"
    await fill(store, tmp_path)
    await check_every_command(store, tmp_path)
    status, _, err = await admin(store, "import", D, stdin=b"not an update")
    assert status == 2 and "not a Yjs v1 update" in err
    status, _, err = await admin(f"sqlite:///{tmp_path}/missing.db", "list")
    assert status == 1 and "no relay store" in err
    assert not (tmp_path / "missing.db").exists()


async def test_sqlite_last_write_of_a_store_from_before_write_times(tmp_path: Path) -> None:
    """A store written before relays recorded write times: info says null, and the
    first relay to open it adds the columns (the file stays usable both ways)."""
    store = f"sqlite:///{tmp_path}/relay.db"
    await fill(store, tmp_path, edits=2)
    conn = sqlite3.connect(tmp_path / "relay.db", isolation_level=None)
    try:
        conn.execute("ALTER TABLE log DROP COLUMN at")
        conn.execute("ALTER TABLE docs DROP COLUMN written_at")
    finally:
        conn.close()
    status, out, err = await admin(store, "info", D)
    assert status == 0, err
    assert json.loads(out)["last_write"] is None and json.loads(out)["log_entries"] >= 1
    await fill(store, tmp_path, edits=1)
    status, out, _ = await admin(store, "info", D)
    assert json.loads(out)["last_write"].endswith("+00:00")


async def test_sqlite_store_while_its_relay_serves(tmp_path: Path) -> None:
    """The relay holds the file: every command says so (status 3) at once, and the
    relay serves on, undisturbed."""
    store = f"sqlite:///{tmp_path}/relay.db"
    await fill(store, tmp_path)
    relay = RelayProcess(store, tmp_path / "relay.log")
    try:
        await relay.start()
        for argv in (["export", D], ["compact", D]):
            status, out, err = await admin(store, *argv)
            assert status == 3, err
            assert "running relay" in err and "GET /docs/" in err and out == b""
        replica = Replica(tmp_path / "reader.db")
        try:
            await replica.connect(relay.url)
            await replica.wait_synced(D, timeout=30)
            assert len(replica.open(D).get("m", type=pycrdt.Map)) == 30
        finally:
            await replica.disconnect()
            replica.close()
        assert await relay.terminate() == 0
    finally:
        await relay.ensure_stopped()
    status, _, _ = await admin(store, "verify")  # stopped again: it works
    assert status == 0


async def test_a_relay_starts_while_admin_reads(tmp_path: Path) -> None:
    """A read-only command never locks a relay out: started during a verify, the relay
    waits for the read in progress and starts."""
    store = f"sqlite:///{tmp_path}/relay.db"
    await fill(store, tmp_path, edits=5)
    verify = asyncio.ensure_future(admin(store, "verify"))
    relay = RelayProcess(store, tmp_path / "relay.log")
    try:
        await relay.start()
        status, _, err = await verify
        assert status in (0, 3), err  # done before the relay took the file, or told why not
        assert await relay.terminate() == 0
    finally:
        await relay.ensure_stopped()


async def test_redis_store_while_relays_serve(redis_url: str, tmp_path: Path) -> None:
    """On Redis everything works live: a reader connected to a serving relay receives
    what admin imports, and a compaction under its writes loses nothing."""
    await fill(redis_url, tmp_path)
    relay = RelayProcess(redis_url, tmp_path / "relay.log")
    reader = Replica(tmp_path / "reader.db")
    try:
        await relay.start()
        doc = reader.open(D)
        await reader.connect(relay.url)
        await reader.wait_synced(D, timeout=30)
        await check_every_command(redis_url, tmp_path)
        extra = pycrdt.Doc()
        extra.get("m", type=pycrdt.Map)["imported"] = "live"
        status, _, _ = await admin(redis_url, "import", D, stdin=extra.get_update())
        assert status == 0
        form = doc.get("m", type=pycrdt.Map)
        await eventually(doc, lambda: form.get("imported") == "live")
        # Compact while the reader writes: the stored state replays to the room's.
        writes = [form.__setitem__(f"w{n}", n) for n in range(20)]
        status, _, err = await admin(redis_url, "compact", D)
        assert status == 0, err
        await reader.wait_synced(D, timeout=30)
        assert len(writes) == 20
        status, out, _ = await admin(redis_url, "verify")
        assert status == 0 and b"0 problem(s)" in out
        status, exported, _ = await admin(redis_url, "export", D)
        assert content(exported) == form.to_py()
        status, out, _ = await admin(redis_url, "info", D)
        assert json.loads(out)["last_write"].endswith("+00:00")
        assert await relay.terminate() == 0
    finally:
        await reader.disconnect()
        reader.close()
        await relay.ensure_stopped()


async def test_verify_reports_a_damaged_redis_entry(redis_url: str, tmp_path: Path) -> None:
    await fill(redis_url, tmp_path, edits=3)
    storage = open_storage(redis_url)
    assert isinstance(storage, RedisStorage)
    log, _, _ = storage.keys.of(D)
    async with Redis.from_url(redis_url.partition("?")[0]) as client:
        [(entry_id, _)] = await client.xrange(log, count=1)
        await client.xadd(log, {"u": b"xx", "c": "0", "o": "x"}, id="9999999-0")
        assert entry_id
    status, out, _ = await admin(redis_url, "verify")
    assert status == 1 and b"PROBLEM" in out and b"checksum" in out
