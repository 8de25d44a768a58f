"""Attachments: stored by SHA-256 before put() returns, uploaded when online
(resumed after a kill -9 of the app mid-upload), verified by hash on both sides,
refused without write access, 0-byte and over-limit files."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pycrdt
import pytest

from crdtsync import (
    AttachmentTooLargeError,
    AuthError,
    FetchError,
    Replica,
    SyncStatus,
)
from crdtsync.sync import uploads
from crdtsync.sync.fetch import http_url
from relay.attachments import BlobStore
from relay.auth import KeyRing, authenticator, issue_token
from relay.offline import OfflineOptions
from relay.server import Relay

from .relay_helpers import ROOT, RelayProcess, wait_state
from .test_offline_app import app

APP = ROOT / "tests" / "offline_app.py"


async def uploaded(replica: Replica, predicate: Any = None) -> None:
    """Wait until ``predicate(sync_state)`` (default: no attachment left unsent)."""
    await wait_state(replica, predicate or (lambda s: s.pending_attachments == 0))


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    async with Relay(f"sqlite:///{tmp_path}/relay.db", port=0) as server:
        yield server


def test_put_stores_now_by_sha256_and_survives_a_restart(tmp_path: Path) -> None:
    photo = b"\xff\xd8\xff" + bytes(5000)
    with Replica(tmp_path / "app.db") as replica:
        ref = replica.attachments.put(photo, content_type="image/jpeg", doc_id="i-42")
        assert ref == "sha256:" + hashlib.sha256(photo).hexdigest()
        assert replica.attachments.put(photo, content_type="image/jpeg", doc_id="i-42") == ref
        empty = replica.attachments.put(b"", content_type="text/plain", doc_id="i-42")
        assert replica.sync_state.pending_attachments == 2
        replica.open("i-42").get("record", type=pycrdt.Map)["photo"] = ref
    assert (tmp_path / "app.db.attachments" / ref[7:]).read_bytes() == photo
    with Replica(tmp_path / "app.db", max_attachment_bytes=1000) as replica:
        assert asyncio.run(replica.attachments.get(ref)) == photo
        assert asyncio.run(replica.attachments.get(empty)) == b""
        assert replica.sync_state.pending_attachments == 2
        assert [u.pending_attachments for u in replica.usage()] == [2]
        with pytest.raises(AttachmentTooLargeError, match="limit is 1000"):
            replica.attachments.put(bytes(1001), doc_id="i-42")
        with pytest.raises(ValueError):
            asyncio.run(replica.attachments.get("sha256:nothex"))
        with pytest.raises(KeyError, match="offline"):
            asyncio.run(replica.attachments.get("sha256:" + "0" * 64))


async def test_uploaded_when_online_and_fetched_on_demand_by_another_replica(
    tmp_path: Path, relay: Relay
) -> None:
    photo = bytes(range(256)) * 3000  # 768 KB: several upload requests
    with Replica(tmp_path / "app.db") as replica:
        ref = replica.attachments.put(photo, content_type="image/jpeg", doc_id="i-42")
        empty = replica.attachments.put(b"", doc_id="i-42")
        replica.open("i-42").get("record", type=pycrdt.Map)["photo"] = ref
        await replica.connect(relay.url)
        await uploaded(replica)
        await replica.wait_synced("i-42", 20)
        await replica.disconnect()
    files = tmp_path / "relay.db.attachments"
    assert (files / ref[7:]).read_bytes() == photo and (files / empty[7:]).read_bytes() == b""
    with Replica(tmp_path / "other.db") as other:
        await other.connect(relay.url)
        other.open("i-42")
        await other.wait_synced("i-42", 20)
        got = other.open("i-42").get("record", type=pycrdt.Map)["photo"]
        assert await other.attachments.get(got) == photo  # downloaded, verified, kept
        assert await other.attachments.get(empty) == b""
        await other.disconnect()
        assert await other.attachments.get(got) == photo  # offline now: the local copy


async def test_upload_resumes_after_kill_9_of_the_app_mid_upload(tmp_path: Path) -> None:
    relay = RelayProcess(f"sqlite:///{tmp_path}/relay.db", tmp_path / "relay.log")
    await relay.start()
    store = str(tmp_path / "app.db")
    try:
        size = 3 << 20  # 12 requests of 256 KiB
        answer = await app("attach", store, "i-7", str(size))
        ref = answer["ref"]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(APP),
            "upload-and-hang",
            store,
            relay.url,
            "4",
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert json.loads(line)["posted"] == 4
        proc.send_signal(signal.SIGKILL)  # mid-upload
        await proc.wait()
        async with httpx.AsyncClient(base_url=http_url(relay.url)) as client:
            status = await client.get(f"/attachments/{ref[7:]}", params={"doc": "i-7", "status": 1})
            received = status.json()["received"]
        assert 0 < received < size
        answer = await app("state", store)
        assert answer["pending_attachments"] == 1  # still unsent after the restart
        answer = await app("upload", store, relay.url)
        assert answer["sent"] == size - received  # resumed, not restarted
        with Replica(tmp_path / "check.db") as check:
            await check.connect(relay.url)
            data = await check.attachments.get(ref)
            await check.disconnect()
        assert hashlib.sha256(data).hexdigest() == ref[7:] and len(data) == size
    finally:
        await relay.ensure_stopped()


async def test_the_relay_refuses_corrupted_bytes_by_hash(relay: Relay, tmp_path: Path) -> None:
    good = b"the real photo"
    digest = hashlib.sha256(good).hexdigest()
    async with httpx.AsyncClient(base_url=http_url(relay.url)) as client:
        path = f"/attachments/{digest}"
        answer = await client.post(
            path, content=b"the fake photo", params={"doc": "d", "offset": 0, "size": 14}
        )
        assert answer.status_code == 422 and "hash_mismatch" in answer.text
        status = await client.get(path, params={"doc": "d", "status": 1})
        assert status.json() == {"received": 0, "complete": False}
        assert (await client.get(path, params={"doc": "d"})).status_code == 404
        answer = await client.post(
            path, content=good[5:], params={"doc": "d", "offset": 5, "size": 14}
        )
        assert answer.status_code == 409 and answer.json()["received"] == 0
        answer = await client.post(path, content=good, params={"doc": "d", "offset": 0, "size": 14})
        assert answer.json() == {"received": 14, "complete": True}
        assert (await client.get(path, params={"doc": "d"})).content == good
        assert (await client.get(path, params={"doc": "other"})).status_code == 404
        assert (await client.get("/attachments/xyz")).status_code == 404


async def test_token_without_write_access_is_refused(tmp_path: Path) -> None:
    keys = KeyRing()
    keys.add_secret("k", "s" * 32)
    reader = issue_token(keys, "ana", ["site/*:r"], 600)
    async with Relay(
        f"sqlite:///{tmp_path}/relay.db", port=0, authenticate=authenticator(keys)
    ) as relay:
        with Replica(tmp_path / "app.db") as replica:
            replica.attachments.put(b"photo", doc_id="site/1")
            await replica.connect(relay.url, token=reader)
            state_error = lambda s: isinstance(s.last_error, AuthError)  # noqa: E731
            await uploaded(replica, state_error)
            assert replica.sync_state.pending_attachments == 1  # kept, unsent
            await replica.disconnect()
        digest = hashlib.sha256(b"photo").hexdigest()
        async with httpx.AsyncClient(base_url=http_url(relay.url)) as client:
            answer = await client.post(
                f"/attachments/{digest}",
                content=b"photo",
                params={"doc": "site/1", "offset": 0, "size": 5},
                headers={"Authorization": f"Bearer {reader}"},
            )
            assert answer.status_code == 403 and "permission_denied" in answer.text
            answer = await client.get(f"/attachments/{digest}", params={"doc": "site/1"})
            assert answer.status_code == 401  # no token at all


async def test_over_the_relays_limit_is_refused_clearly(tmp_path: Path) -> None:
    options = OfflineOptions(max_attachment_bytes=1000)
    async with Relay(f"sqlite:///{tmp_path}/relay.db", port=0, offline=options) as relay:
        with Replica(tmp_path / "app.db") as replica:
            replica.attachments.put(bytes(2000), doc_id="d")
            small = replica.attachments.put(bytes(10), doc_id="d")
            await replica.connect(relay.url)
            too_large = lambda s: isinstance(s.last_error, AttachmentTooLargeError)  # noqa: E731
            await uploaded(replica, lambda s: too_large(s) and s.pending_attachments == 1)
            assert "1000" in str(replica.sync_state.last_error)
            assert replica.attachments.info(small).uploaded  # type: ignore[union-attr]
            await replica.disconnect()
        async with httpx.AsyncClient(base_url=http_url(relay.url)) as client:
            answer = await client.post(
                f"/attachments/{'0' * 64}",
                content=b"",
                params={"doc": "d", "offset": 0, "size": 5000},
            )
            assert answer.status_code == 413 and "attachment_too_large" in answer.text


async def test_a_relay_without_an_attachment_directory_shows_in_sync_state(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay on Redis without --attachments answers 503: sync_state says why (not
    only the log), last_synced_at waits for the photo, and both clear once the
    relay takes it, at once on retry_now() (the uploader's backoff is 60 s here)."""
    monkeypatch.setattr(uploads, "RETRY_DELAYS", (60.0, 60.0))
    async with Relay(redis_url, port=0) as relay:
        with Replica(tmp_path / "app.db") as replica:
            replica.records("inspections").put("i-1", {"n": 1})
            await replica.connect(relay.url)
            await replica.wait_synced("inspections", 20)
            synced = replica.sync_state.last_synced_at
            assert synced is not None
            ref = replica.attachments.put(b"photo", content_type="image/jpeg", doc_id="i-1")
            state = await wait_state(replica, lambda s: s.last_error is not None)
            assert isinstance(state.last_error, FetchError) and state.last_error.status == 503
            assert "--attachments" in str(state.last_error)
            assert state.status is SyncStatus.SYNCED and state.pending_attachments == 1
            assert state.last_synced_at == synced  # the photo is not on the relay
            relay.offline.attachments.blobs = BlobStore(tmp_path / "blobs")  # the fix
            replica.retry_now()  # the "retry" button
            state = await wait_state(
                replica, lambda s: s.pending_attachments == 0 and s.last_error is None
            )
            assert state.last_synced_at is not None and state.last_synced_at > synced
            assert (tmp_path / "blobs" / ref[7:]).read_bytes() == b"photo"
            await replica.disconnect()


class Logged(logging.Handler):
    """Sets ``seen`` when a record containing ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


async def test_a_failed_upload_goes_up_when_the_relay_is_back_not_after_the_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The uploader's backoff after a failure (here 60 s) ends when the connection
    is back, not a minute later."""
    monkeypatch.setattr(uploads, "RETRY_DELAYS", (60.0, 60.0))
    store = f"sqlite:///{tmp_path}/relay.db"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    failed = Logged("attachment upload to")
    logging.getLogger("crdtsync.sync.uploads").addHandler(failed)
    try:
        with Replica(tmp_path / "app.db") as replica:
            async with Relay(store, port=port) as relay:
                await replica.connect(relay.url)
                await replica.wait_synced("i-1", 20)
            ref = replica.attachments.put(b"photo", content_type="image/jpeg", doc_id="i-1")
            await asyncio.wait_for(failed.seen.wait(), 20)  # the relay is down: failed
            async with Relay(store, port=port):
                await uploaded(replica, lambda s: s.pending_attachments == 0)
                assert replica.attachments.info(ref).uploaded  # type: ignore[union-attr]
                await replica.disconnect()
    finally:
        logging.getLogger("crdtsync.sync.uploads").removeHandler(failed)
