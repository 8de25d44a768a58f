"""An offline app's three levels, end to end: a test app process
(tests/offline_app.py) and the relay process on loopback; the network is cut by
stopping the relay or by pointing at a closed port.

- openable: with the relay unreachable, the store and a document open at once,
  with no network code loaded (so no connection attempt can block ``open``);
- viewable: prefetched while online, read after a restart with the relay down,
  ``fetched_at`` set; a document larger than the response limit comes in pages;
- submittable: changes made offline show as pending, survive a restart, and are
  uploaded by ``connect()`` without the app opening them; a second replica sees
  them and ``last_synced_at`` is set.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from crdtsync import Replica

from .relay_helpers import ROOT, RelayProcess

APP = ROOT / "tests" / "offline_app.py"


def run_app(*args: str, timeout: float = 120) -> dict[str, Any]:
    """Run one app command in a new process; its JSON answer."""
    result = subprocess.run(
        [sys.executable, str(APP), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


async def app(*args: str) -> dict[str, Any]:
    return await asyncio.to_thread(run_app, *args)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"ws://127.0.0.1:{port}"


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[RelayProcess]:
    process = RelayProcess(
        f"sqlite:///{tmp_path}/relay.db", tmp_path / "relay.log", args=("--max-fetch-bytes", "4096")
    )
    await process.start()
    try:
        yield process
    finally:
        await process.ensure_stopped()


async def write_documents(url: str, store: Path, docs: dict[str, str]) -> None:
    """Another device writes ``docs`` and gets them to the relay."""
    with Replica(store) as writer:
        await writer.connect(url)
        for doc_id, text in docs.items():
            writer.open(doc_id).get("content", type=pycrdt.Text).insert(0, text)
        for doc_id in docs:
            await writer.wait_synced(doc_id, 30)
        await writer.disconnect()


def text_of(replica: Replica, doc_id: str) -> str:
    return str(replica.open(doc_id).get("content", type=pycrdt.Text))


def test_openable_with_the_relay_unreachable(tmp_path: Path) -> None:
    store = str(tmp_path / "app.db")
    run_app("edit", store, "form-1", "written offline")
    answer = run_app("openable", store, "form-1", closed_port_url())
    assert answer["text"] == "written offline"
    assert answer["network_modules"] == [], "open must not touch the network"
    assert answer["seconds"] < 1.0
    assert (answer["status"], answer["error"]) == ("offline", "RelayUnreachableError")


async def test_viewable_after_a_restart_with_the_relay_down(
    tmp_path: Path, relay: RelayProcess
) -> None:
    big = "".join(f"line {i:05d} of a long inspection report\n" for i in range(1500))  # ~57 KB
    docs = {"site-12/a": "form a", "site-12/b": "form b", "site-12/big": big, "other/x": "no"}
    await write_documents(relay.url, tmp_path / "writer.db", docs)
    store = str(tmp_path / "app.db")

    answer = await app("prefetch", store, relay.url, "site-12/*")
    assert answer["stored"] == ["site-12/a", "site-12/b", "site-12/big"]
    assert len(big) > 4096 * 10  # paged: the relay sends at most 4 KiB per response
    await relay.terminate()

    answer = await app("read", store, "site-12/a", "site-12/b", "site-12/big")
    assert answer["texts"] == {d: docs[d] for d in ("site-12/a", "site-12/b", "site-12/big")}
    assert all(answer["fetched_at"].values())
    answer = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(APP), "read", store, "other/x"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert answer.returncode != 0 and "DocumentNotCachedError" in answer.stderr


async def test_submittable_across_a_restart_uploaded_without_opening(tmp_path: Path) -> None:
    store = str(tmp_path / "app.db")
    answer = await app("edit", store, "i/1", "one", "i/2", "two", "i/3", "three")
    assert (answer["pending_documents"], answer["pending_updates"]) == (3, 3)
    answer = await app("state", store)  # a restart: still pending, nothing opened
    assert (answer["pending_documents"], answer["pending_updates"]) == (3, 3)
    assert answer["opened"] == [] and answer["last_synced_at"] is None

    relay = RelayProcess(f"sqlite:///{tmp_path}/relay.db", tmp_path / "relay.log")
    await relay.start()
    try:
        answer = await app("sync", store, relay.url)  # connect() only: no open()
        assert answer["pending"] is False and answer["last_synced_at"]
        with Replica(tmp_path / "second.db") as second:
            await second.connect(relay.url)
            for doc_id, text in {"i/1": "one", "i/2": "two", "i/3": "three"}.items():
                second.open(doc_id)
                await second.wait_synced(doc_id, 30)
                assert text_of(second, doc_id) == text
            await second.disconnect()
    finally:
        await relay.ensure_stopped()
    answer = await app("state", store)
    assert answer["pending_updates"] == 0 and answer["last_synced_at"]
