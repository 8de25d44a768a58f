"""The ``/yjs`` path of a real relay over real websockets, driven by pycrdt documents
(real Yjs clients from npm: ``test_yjs_interop.py``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pycrdt
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from crdtsync import Replica
from crdtsync.ids import DocId
from relay import Relay
from relay.presence import AwarenessEntry, decode_awareness, encode_awareness
from relay.yjs import (
    MESSAGE_AWARENESS,
    MESSAGE_SYNC,
    SYNC_STEP1,
    decode_message,
    encode_awareness_message,
    encode_sync_step1,
    encode_sync_step2,
    encode_update_message,
)

from .relay_helpers import eventually

D = DocId("doc")


def _awareness(client_id: int, clock: int, state: object) -> bytes:
    return encode_awareness([AwarenessEntry(client_id, clock, json.dumps(state))])


async def until_awareness(awareness: pycrdt.Awareness, predicate: Any, timeout: float = 10) -> None:
    """Wait (on the awareness' change events, not a sleep) until ``predicate()`` holds."""
    changed = asyncio.Event()
    subscription = awareness.observe(lambda topic, event: changed.set())
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                changed.clear()
                await changed.wait()
    finally:
        awareness.unobserve(subscription)


class YClient:
    """A minimal y-websocket client: a pycrdt document over one websocket."""

    def __init__(self, ws: ClientConnection, client_id: int) -> None:
        self.ws = ws
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
        self.awareness: list[bytes] = []

    @classmethod
    async def connect(cls, url: str, client_id: int) -> YClient:
        client = cls(await websockets.connect(url), client_id)
        await client.ws.send(encode_sync_step1(client.doc.get_state()))
        return client

    async def pump(self, until: Any) -> None:
        """Handle messages until ``until()`` is true."""
        while not until():
            kind, step, payload = decode_message(await asyncio.wait_for(self.ws.recv(), 10))
            if kind == MESSAGE_SYNC and step == SYNC_STEP1:
                await self.ws.send(encode_sync_step2(self.doc.get_update(payload)))
            elif kind == MESSAGE_SYNC:
                self.doc.apply_update(payload)
            elif kind == MESSAGE_AWARENESS:
                self.awareness.append(payload)

    def text(self) -> str:
        return str(self.doc.get("t", type=pycrdt.Text))

    async def edit(self, index: int, value: str) -> None:
        before = self.doc.get_state()
        self.doc.get("t", type=pycrdt.Text).insert(index, value)
        await self.ws.send(encode_update_message(self.doc.get_update(before)))


async def test_yjs_path_and_native_replica_share_a_stored_document(
    relay: Relay, tmp_path: Path
) -> None:
    replica = Replica(tmp_path / "replica.db")
    text = replica.open("notes/1").get("t", type=pycrdt.Text)
    text.insert(0, "python")
    await replica.connect(relay.url)
    try:
        await replica.wait_synced("notes/1", timeout=10)
        client = await YClient.connect(f"{relay.url}/yjs/notes%2F1", client_id=77)
        await client.pump(lambda: client.text() == "python")
        await client.edit(0, "yjs+")
        await eventually(replica.open("notes/1"), lambda: str(text) == "yjs+python")
        text.insert(len(str(text)), "!")
        await client.pump(lambda: client.text() == "yjs+python!")
        await client.ws.close()
    finally:
        await replica.disconnect()
        replica.close()
    # Stored: a fresh Yjs client gets everything from storage after a restart.
    await relay.stop()
    async with Relay(f"sqlite:///{tmp_path / 'relay.db'}", port=0) as restarted:
        late = await YClient.connect(f"{restarted.url}/yjs/notes%2F1", client_id=78)
        await late.pump(lambda: late.text() == "yjs+python!")
        await late.ws.close()


async def test_yjs_path_refuses_bad_requests_and_garbage(relay: Relay) -> None:
    for path, status in (("/yjs/", 400), ("/yjs/%ff", 400), ("/elsewhere", 404)):
        with pytest.raises(InvalidStatus) as info:
            await websockets.connect(relay.url + path)
        assert info.value.response.status_code == status
    good = await YClient.connect(f"{relay.url}/yjs/room", client_id=5)
    await good.edit(0, "kept")
    for garbage in (b"\x00\x02" + b"\xff" * 11, b"\x00\x02\x09ab", b"\x07", "text"):
        ws = await websockets.connect(f"{relay.url}/yjs/room")
        await ws.send(garbage)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code in (1002, 1003)
        assert closed.value.rcvd.reason
    late = await YClient.connect(f"{relay.url}/yjs/room", client_id=6)
    await late.pump(lambda: late.text() == "kept")
    await good.edit(4, "!")
    await late.pump(lambda: late.text() == "kept!")
    await good.ws.close()
    await late.ws.close()


async def test_presence_between_replicas_and_yjs_clients(relay: Relay) -> None:
    replica = Replica(":memory:")
    await replica.connect(relay.url)
    try:
        awareness = replica.awareness("room")
        awareness.set_local_state({"user": "python"})
        await replica.wait_synced("room", timeout=10)
        client = await YClient.connect(f"{relay.url}/yjs/room", client_id=99)
        await client.ws.send(encode_awareness_message(_awareness(99, 1, {"user": "node"})))

        def seen(name: str) -> bool:
            return any(
                json.loads(entry.state) == {"user": name}
                for payload in client.awareness
                for entry in decode_awareness(payload)
            )

        await client.pump(lambda: seen("python"))
        await until_awareness(awareness, lambda: awareness.states.get(99) == {"user": "node"})
        await client.ws.close()
        await until_awareness(awareness, lambda: 99 not in awareness.states)
    finally:
        await replica.disconnect()
        replica.close()
