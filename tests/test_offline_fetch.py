"""Prefetch and refresh over HTTP: what a token may read, bounded responses in
pages of one version, pages lost or corrupted on the way (through a faulty
proxy) leave the document untouched, and a refresh that survives the relay
being down."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import msgpack
import pycrdt
import pytest

from crdtsync import AuthError, DocumentFetched, FetchError, Replica
from crdtsync.sync.fetch import Refresher, http_url
from relay.auth import KeyRing, authenticator, issue_token
from relay.offline import OfflineOptions
from relay.server import Relay

LIMIT = 4096


def text_of(replica: Replica, doc_id: str) -> str:
    return str(replica.open(doc_id).get("content", type=pycrdt.Text))


async def write(url: str, store: Path, docs: dict[str, str], token: str | None = None) -> None:
    with Replica(store) as writer:
        await writer.connect(url, token=token)
        for doc_id, text in docs.items():
            writer.open(doc_id).get("content", type=pycrdt.Text).insert(0, text)
        for doc_id in docs:
            await writer.wait_synced(doc_id, 30)
        await writer.disconnect()


BIG = "".join(f"{i:06d} a line of a big document\n" for i in range(2000))  # ~62 KB


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    options = OfflineOptions(max_fetch_bytes=LIMIT)
    async with Relay(f"sqlite:///{tmp_path}/relay.db", port=0, offline=options) as server:
        await write(server.url, tmp_path / "w.db", {"t/big": BIG, "t/a": "a", "t/b": "b"})
        yield server


class FaultyProxy:
    """A TCP proxy to the relay that damages the ``nth`` HTTP response: ``"drop"``
    closes the connection instead of answering, ``"flip"`` flips one byte of it."""

    def __init__(self, target_port: int, nth: int, fault: str) -> None:
        self.target_port, self.nth, self.fault = target_port, nth, fault
        self.count = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.count += 1
        mine = self.count
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def upstream() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()

        pump = asyncio.get_running_loop().create_task(upstream())
        response = await up_reader.read()  # the relay closes after one answer
        pump.cancel()
        if mine == self.nth and self.fault == "flip":
            damaged = bytearray(response)
            damaged[len(damaged) - 300] ^= 0x55
            response = bytes(damaged)
        if not (mine == self.nth and self.fault == "drop"):
            writer.write(response)
            await writer.drain()
        writer.close()
        up_writer.close()


async def test_prefetch_pages_a_document_larger_than_a_response(
    tmp_path: Path, relay: Relay
) -> None:
    fetched: list[str] = []
    with Replica(tmp_path / "app.db") as replica:
        replica.observe(
            lambda e: fetched.append(e.doc_id) if isinstance(e, DocumentFetched) else None
        )
        stored = await replica.prefetch(["t/*"], url=http_url(relay.url))
        assert stored == ["t/a", "t/b", "t/big"] == fetched
        assert text_of(replica, "t/big") == BIG
        assert replica.fetched_at("t/big") is not None
        # Again: only what changed comes back (the diffs are tiny), nothing is lost.
        assert await replica.prefetch(["t/b*"], url=relay.url) == ["t/b", "t/big"]
        assert text_of(replica, "t/big") == BIG


@pytest.mark.parametrize(("nth", "fault"), [(2, "drop"), (3, "flip"), (6, "flip")])
async def test_a_missing_or_corrupted_page_leaves_the_document_untouched(
    tmp_path: Path, relay: Relay, nth: int, fault: str
) -> None:
    with Replica(tmp_path / "app.db") as replica:
        async with FaultyProxy(relay.port, nth, fault) as url:
            with pytest.raises(FetchError):
                await replica.prefetch(["t/big"], url=url)
        assert "t/big" not in replica.documents()  # nothing stored of it
        assert await replica.prefetch(["t/big"], url=relay.url) == ["t/big"]
        assert text_of(replica, "t/big") == BIG


async def test_relay_answers_in_bounded_responses_of_one_version(relay: Relay) -> None:
    """The endpoint itself: every response within the limit; pages share a digest."""
    import httpx  # noqa: PLC0415

    cursor = None
    pages = []
    async with httpx.AsyncClient(base_url=http_url(relay.url)) as client:
        while True:
            body = msgpack.packb({"p": ["t/big"], "h": {}, "c": cursor})
            response = await client.post("/fetch", content=body)
            assert response.status_code == 200 and len(response.content) <= LIMIT
            answer = msgpack.unpackb(response.content)
            pages += answer["d"]
            cursor = answer["c"]
            if cursor is None:
                break
        assert len(pages) > 10 and len({p[4] for p in pages}) == 1
        assert b"".join(p[3] for p in pages) == pycrdt_update_of(BIG, pages)
        for bad in (b"not msgpack", msgpack.packb({"p": []}), msgpack.packb({"p": ["*"], "m": 1})):
            assert (await client.post("/fetch", content=bad)).status_code == 400
        assert (await client.get("/fetch")).status_code == 405


def pycrdt_update_of(text: str, pages: list[list[object]]) -> bytes:
    """The pages joined, checked to be a whole update holding ``text``."""
    data = b"".join(p[3] for p in pages)  # type: ignore[misc]
    doc = pycrdt.Doc()
    doc.apply_update(data)
    assert str(doc.get("content", type=pycrdt.Text)) == text
    return data


async def test_prefetch_gets_only_what_the_token_may_read(tmp_path: Path) -> None:
    keys = KeyRing()
    keys.add_secret("k", "s" * 32)
    admin = issue_token(keys, "admin", ["*:rw"], 600)
    inspector = issue_token(keys, "ana", ["site-12/*:r", "templates/*:r"], 600)
    async with Relay(
        f"sqlite:///{tmp_path}/relay.db", port=0, authenticate=authenticator(keys)
    ) as relay:
        docs = {"site-12/a": "a", "site-13/b": "b", "templates/form": "f"}
        await write(relay.url, tmp_path / "w.db", docs, token=admin)
        with Replica(tmp_path / "app.db") as replica:
            stored = await replica.prefetch(
                ["site-*", "templates/*"], url=relay.url, token=inspector
            )
            assert stored == ["site-12/a", "templates/form"]
            with pytest.raises(AuthError) as info:
                await replica.prefetch(["*"], url=relay.url, token="not a token")
            assert info.value.code == "token_invalid"
            with pytest.raises(AuthError):
                await replica.prefetch(["*"], url=relay.url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_refresh_every_survives_the_relay_being_down(tmp_path: Path) -> None:
    port = free_port()
    store = f"sqlite:///{tmp_path}/relay.db"
    async with Relay(store, port=port) as relay:
        await write(relay.url, tmp_path / "w.db", {"templates/a": "v1"})
    with Replica(tmp_path / "app.db") as replica:
        handle = replica.refresh_every(
            timedelta(milliseconds=50), ["templates/*"], url=f"ws://127.0.0.1:{port}"
        )
        assert isinstance(handle, Refresher)
        try:
            await handle.wait(lambda h: h.failures >= 3, timeout=30)  # relay down
            assert handle.runs == 0 and isinstance(handle.last_error, FetchError)
            assert "templates/a" not in replica.documents()
            async with Relay(store, port=port) as relay:
                await handle.wait(lambda h: h.runs >= 1, timeout=30)
                first = replica.fetched_at("templates/a")
                assert first is not None and text_of(replica, "templates/a") == "v1"
                await write(relay.url, tmp_path / "w.db", {"templates/a": "v2 "})
                await handle.wait(lambda h: "v2" in text_of(replica, "templates/a"), timeout=30)
                second = replica.fetched_at("templates/a")
                assert second is not None and second >= first
        finally:
            handle.cancel()
        await asyncio.gather(handle._task, return_exceptions=True)
        assert not handle.running


async def test_refresh_stops_when_the_replica_closes(tmp_path: Path, relay: Relay) -> None:
    replica = Replica(tmp_path / "app.db")
    handle = replica.refresh_every(timedelta(milliseconds=20), ["t/a"], url=relay.url)
    assert isinstance(handle, Refresher)
    await handle.wait(lambda h: h.runs >= 2, timeout=30)
    replica.close()
    await asyncio.wait_for(asyncio.gather(handle._task, return_exceptions=True), 30)
    assert not handle.running and handle.failures == 0
