"""Stock Yjs clients from npm (``yjs`` + ``y-websocket``'s ``WebsocketProvider`` over
``ws``, run by Node) in the same rooms as Python replicas, through the relay's
``/yjs`` path.

The Node side is ``tests/js/yclient.mjs``, one process per Yjs client, driven by
JSON lines (see its header); its packages are pinned in ``tests/js/package-lock.json``
and installed by ``make node-deps`` (``npm ci --prefix tests/js``), which
``make test`` runs whenever ``node`` and ``npm`` exist. Without them these tests
skip and say why, except in CI (``CI=true``), where they fail.

Nothing here sleeps to wait: Python awaits the driver's replies (the driver waits
on Yjs events) or pycrdt's change events.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pycrdt
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from crdtsync import Replica
from crdtsync.events import SyncStatus
from crdtsync.ids import DocId
from relay import Relay
from relay.room import replay
from relay.storage import SQLiteStorage

from .relay_helpers import eventually

JS = Path(__file__).resolve().parent / "js"
DRIVER = JS / "yclient.mjs"
NODE_PACKAGES = ("yjs", "y-websocket", "ws")
D = DocId("site-12/form-3")  # a "/" in the id: y-websocket puts it in the path as is
TEXT = "notes"
MAP = "form"

pytestmark = pytest.mark.timeout(120)


# -- Node, or why not ----------------------------------------------------------------------------


def node_missing() -> str | None:
    """Why the Yjs clients cannot run here, or None if they can."""
    if shutil.which("node") is None:
        return "`node` is not installed (install Node.js 18+ and npm, then `make node-deps`)"
    missing = [p for p in NODE_PACKAGES if not (JS / "node_modules" / p / "package.json").exists()]
    if missing:
        return (
            f"tests/js/node_modules lacks {', '.join(missing)}: "
            "run `make node-deps` (npm ci --prefix tests/js)"
        )
    return None


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` executable. Skips without it, but fails in CI, which must run these."""
    reason = node_missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the Yjs interop tests cannot run: {reason}", pytrace=False)
        pytest.skip(f"Yjs interop tests skipped: {reason}")
    path = shutil.which("node")
    assert path is not None
    return path


class NodeError(Exception):
    """The driver answered a command with an error, or went away."""


class YjsClient:
    """One Node process running ``yclient.mjs``: a Y.Doc and a WebsocketProvider."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log
        self.client_id = 0
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, node: str, log: Path) -> YjsClient:
        with log.open("ab") as stderr:
            proc = await asyncio.create_subprocess_exec(
                node,
                str(DRIVER),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                cwd=JS,
                limit=1 << 24,
            )
        client = cls(proc, log)
        client.client_id = (await client.call("get"))["clientID"]
        return client

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            reply = json.loads(line)
            future = self._waiting.pop(reply["id"], None)
            if future is not None and not future.done():
                future.set_result(reply)
        gone = NodeError(f"the Node client exited; its log:\n{self.log_tail()}")
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(gone)
        self._waiting.clear()

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    async def call(self, cmd: str, *, timeout: float = 10, **args: Any) -> dict[str, Any]:
        """Send one command; return its reply. ``timeout``: how long the driver
        waits for what a ``wait_*`` command asks (Python allows a few seconds more)."""
        assert self.proc.stdin is not None
        if self._reader.done():
            raise NodeError(f"the Node client has exited; its log:\n{self.log_tail()}")
        command_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[command_id] = future
        message = {"id": command_id, "cmd": cmd, "timeout": timeout, **args}
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        await self.proc.stdin.drain()
        try:
            async with asyncio.timeout(timeout + 5):
                reply = await future
        except TimeoutError:
            raise NodeError(f"no reply to {message}; log:\n{self.log_tail()}") from None
        finally:
            self._waiting.pop(command_id, None)
        if not reply["ok"]:
            raise NodeError(f"{cmd} failed: {reply['error']}")
        return reply

    async def connect(self, relay: Relay, state: object = None) -> dict[str, Any]:
        """Connect to ``relay``'s ``/yjs`` path (optionally with an awareness
        state) and return the reply of ``wait_synced``."""
        args: dict[str, Any] = {"url": f"{relay.url}/yjs", "room": D}
        if state is not None:
            args["state"] = state
        await self.call("connect", **args)
        return await self.call("wait_synced", texts=[TEXT], maps=[MAP])

    async def content(self) -> dict[str, Any]:
        return dict((await self.call("get", texts=[TEXT], maps=[MAP]))["content"])

    async def wait_content(self, expected: dict[str, Any]) -> dict[str, Any]:
        return dict((await self.call("wait_content", **expected))["content"])

    async def exit(self) -> None:
        """Graceful: the provider says goodbye (awareness removal), then the process exits."""
        await self.call("exit")
        await self.stop()

    async def kill(self) -> None:
        """SIGKILL: the connection just drops, nothing said."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.stop()

    async def stop(self) -> None:
        """Wait for the process (killing it after 10 s) and release its pipes."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        await self._reader


Spawn = Callable[[str], Awaitable[YjsClient]]


@pytest.fixture
async def spawn(node: str, tmp_path: Path) -> AsyncIterator[Spawn]:
    """Start Yjs clients by name (logs in ``tmp_path/node-NAME.log``); all are
    killed at teardown."""
    clients: list[YjsClient] = []

    async def start(name: str) -> YjsClient:
        client = await YjsClient.start(node, tmp_path / f"node-{name}.log")
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.kill()


# -- content on each side ------------------------------------------------------------------------


def notes(replica: Replica) -> pycrdt.Text:
    return replica.open(D).get(TEXT, type=pycrdt.Text)


def form(replica: Replica) -> pycrdt.Map:
    return replica.open(D).get(MAP, type=pycrdt.Map)


def doc_content(doc: pycrdt.Doc[Any]) -> dict[str, Any]:
    """The same shape as the driver's: ``{"texts": {...}, "maps": {...}}``."""
    return {
        "texts": {TEXT: str(doc.get(TEXT, type=pycrdt.Text))},
        "maps": {MAP: doc.get(MAP, type=pycrdt.Map).to_py()},
    }


def python_content(replica: Replica) -> dict[str, Any]:
    return doc_content(replica.open(D))


async def stored_content(db: Path) -> dict[str, Any]:
    """The room rebuilt from the relay's storage exactly as a room loads it
    (open it only after the relay stopped: stopping stores what was received)."""
    storage = SQLiteStorage(db)
    await storage.open()
    try:
        replayed = replay(await storage.load(D))
        doc, held = replayed.doc, replayed.held
    finally:
        await storage.close()
    assert held == []
    return doc_content(doc)


async def converge(replica: Replica, clients: list[YjsClient], marker: int) -> dict[str, Any]:
    """Wait until every side holds the same content, and return it.

    Each Yjs client ends its edits with ``form["node-<client>"] = marker``; updates
    travel in order, so a Python replica that has every marker has every Node edit,
    and (having made none since) holds the final content. Each Yjs client then
    waits until its content equals it."""
    doc = replica.open(D)
    keys = [f"node-{client.client_id}" for client in clients]
    await eventually(doc, lambda: all(form(replica).get(k) == marker for k in keys))
    expected = python_content(replica)
    for client in clients:
        assert await client.wait_content(expected) == expected
    assert python_content(replica) == expected
    return expected


async def mark(client: YjsClient, marker: int) -> None:
    await client.call("set", map=MAP, key=f"node-{client.client_id}", value=marker)


# -- text and map edits --------------------------------------------------------------------------


async def test_node_and_python_edit_text_and_map_concurrently_and_converge(
    relay: Relay, replica: Replica, spawn: Spawn, tmp_path: Path
) -> None:
    # Round 1: the Python replica edits before it ever connects; Node edits live.
    notes(replica).insert(0, "[python offline]")
    form(replica)["inspector"] = "ana"
    form(replica)["status"] = "python"  # conflicts with Node's value
    yjs = await spawn("a")
    assert (await yjs.connect(relay))["content"] == {"texts": {TEXT: ""}, "maps": {MAP: {}}}
    await yjs.call("insert", text=TEXT, index=0, value="[node live]")
    await yjs.call("set", map=MAP, key="site", value={"id": 12, "tags": ["roof", "wall"]})
    await yjs.call("set", map=MAP, key="status", value="node")
    await mark(yjs, 1)
    await replica.connect(relay.url)
    await replica.wait_synced(D, timeout=20)
    content = await converge(replica, [yjs], 1)
    assert sorted(content["texts"][TEXT].replace("][", "]|[").split("|")) == [
        "[node live]",
        "[python offline]",
    ]
    assert content["maps"][MAP] == {
        "inspector": "ana",
        "site": {"id": 12, "tags": ["roof", "wall"]},
        "status": content["maps"][MAP]["status"],
        f"node-{yjs.client_id}": 1,
    }
    assert content["maps"][MAP]["status"] in ("node", "python")

    # Round 2: both online, edits issued without waiting for each other.
    text = notes(replica)
    length = len(str(text))
    edits = [
        asyncio.create_task(yjs.call(cmd, **args))
        for cmd, args in (
            ("insert", {"text": TEXT, "index": 0, "value": "<n2>"}),
            # One character of the round-1 text, whether or not Python's "<p2>" is
            # already in front of it ("<n2>" always is).
            ("delete", {"text": TEXT, "index": 14, "length": 1}),
            ("remove", {"map": MAP, "key": "inspector"}),
            ("set", {"map": MAP, "key": "count", "value": 2}),
        )
    ]
    text.insert(0, "<p2>")
    text.insert(len(str(text)), "<p2-end>")
    form(replica)["inspector"] = "bo"  # concurrent with Node's removal
    await asyncio.gather(*edits)
    await mark(yjs, 2)
    content = await converge(replica, [yjs], 2)
    for fragment in ("<n2>", "<p2>", "<p2-end>"):
        assert fragment in content["texts"][TEXT]
    assert len(content["texts"][TEXT]) == length + 4 + 4 + 8 - 1
    assert content["maps"][MAP]["count"] == 2

    # Round 3: the Python replica goes offline; both edit; it comes back.
    await replica.disconnect()
    del text[0:4]  # its own "<p2>", or Node's "<n2>"
    text.insert(len(str(text)), "<p3 offline>")
    form(replica)["offline"] = True
    await yjs.call("insert", text=TEXT, index=0, value="<n3>")
    await yjs.call("set", map=MAP, key="count", value=3)
    await mark(yjs, 3)
    await replica.connect(relay.url)
    await replica.wait_synced(D, timeout=20)
    content = await converge(replica, [yjs], 3)
    assert "<p3 offline>" in content["texts"][TEXT] and "<n3>" in content["texts"][TEXT]
    assert content["maps"][MAP]["offline"] is True and content["maps"][MAP]["count"] == 3

    # Round 4: both offline at once, then both reconnect.
    await yjs.call("disconnect")
    await replica.disconnect()
    await yjs.call("insert", text=TEXT, index=0, value="<n4 offline>")
    await yjs.call("set", map=MAP, key="both", value="node")
    await mark(yjs, 4)
    text.insert(0, "<p4 offline>")
    form(replica)["both"] = "python"
    await replica.connect(relay.url)
    await yjs.call("connect", url=f"{relay.url}/yjs", room=D)
    await yjs.call("wait_synced")
    await replica.wait_synced(D, timeout=20)
    content = await converge(replica, [yjs], 4)
    assert "<n4 offline>" in content["texts"][TEXT] and "<p4 offline>" in content["texts"][TEXT]
    assert content["maps"][MAP]["both"] in ("node", "python")

    # The relay stored all of it: storage replays to the same content.
    await yjs.exit()
    await replica.disconnect()
    await relay.stop()
    assert await stored_content(tmp_path / "relay.db") == content


async def test_a_late_yjs_client_receives_the_full_state(
    relay: Relay, replica: Replica, spawn: Spawn, tmp_path: Path
) -> None:
    notes(replica).insert(0, "from python")
    form(replica)["by"] = "python"
    await replica.connect(relay.url)
    await replica.wait_synced(D, timeout=20)
    first = await spawn("first")
    await first.connect(relay)
    await first.call("insert", text=TEXT, index=0, value="from node, ")
    await first.call("set", map=MAP, key="items", value=[1, "two", {"three": 3}])
    await mark(first, 1)
    expected = await converge(replica, [first], 1)

    # Joining the live room: synced means it has everything.
    live = await spawn("live")
    assert (await live.connect(relay))["content"] == expected
    await live.exit()

    # After a relay restart, from storage alone.
    await first.exit()
    await replica.disconnect()
    await relay.stop()
    assert await stored_content(tmp_path / "relay.db") == expected
    async with Relay(f"sqlite:///{tmp_path / 'relay.db'}", port=0) as restarted:
        late = await spawn("late")
        assert (await late.connect(restarted))["content"] == expected
        assert (await late.content()) == expected
        await late.exit()


# -- awareness -------------------------------------------------------------------------------------


async def until_state(
    awareness: pycrdt.Awareness, client_id: int, state: object, timeout: float = 10
) -> None:
    """Wait (on the awareness' change events, not a sleep) until ``client_id``'s
    state is ``state`` (None: until it has none)."""
    changed = asyncio.Event()
    subscription = awareness.observe(lambda topic, event: changed.set())
    try:
        async with asyncio.timeout(timeout):
            while awareness.states.get(client_id) != state:
                changed.clear()
                await changed.wait()
    except TimeoutError:
        raise AssertionError(
            f"waited for {client_id}: {state}; awareness states stayed {awareness.states}"
        ) from None
    finally:
        awareness.unobserve(subscription)


async def test_awareness_crosses_between_node_and_python_and_leaves_with_the_client(
    relay: Relay, replica: Replica, spawn: Spawn
) -> None:
    awareness = replica.awareness(D)
    python = awareness.client_id
    awareness.set_local_state({"user": "python", "cursor": 0})
    await replica.connect(relay.url)
    await replica.wait_synced(D, timeout=20)

    a = await spawn("a")
    await a.connect(relay, state={"user": "node-a"})
    await a.call("wait_awareness", client=python, state={"user": "python", "cursor": 0})
    await until_state(awareness, a.client_id, {"user": "node-a"})

    # Changes travel both ways.
    await a.call("awareness", state={"user": "node-a", "cursor": 5})
    await until_state(awareness, a.client_id, {"user": "node-a", "cursor": 5})
    awareness.set_local_state({"user": "python", "cursor": 3})
    await a.call("wait_awareness", client=python, state={"user": "python", "cursor": 3})

    # A client that disconnects disappears: with a goodbye (provider.disconnect())...
    await a.call("disconnect")
    await until_state(awareness, a.client_id, None)
    # ...and without one (the process is killed: the relay notices the closed connection).
    b = await spawn("b")
    await b.connect(relay, state={"user": "node-b"})
    await until_state(awareness, b.client_id, {"user": "node-b"})
    await b.kill()
    await until_state(awareness, b.client_id, None)

    # The first client comes back; then the Python replica leaves. y-protocols keeps
    # the clocks of departed peers, so a returning provider re-sends its state with
    # the clock of its goodbye (ignored by peers), and ignores peers' unchanged
    # states, until the next 15 s renewal: so it is with @y/websocket-server too.
    # New states (new clocks) are seen at once, which is what an app sends.
    await a.call("connect", url=f"{relay.url}/yjs", room=D)
    await a.call("wait_synced")
    await a.call("awareness", state={"user": "node-a", "cursor": 6})
    await until_state(awareness, a.client_id, {"user": "node-a", "cursor": 6})
    awareness.set_local_state({"user": "python", "cursor": 4})
    await a.call("wait_awareness", client=python, state={"user": "python", "cursor": 4})
    await replica.disconnect()
    reply = await a.call("wait_awareness", client=python, present=False)
    assert str(b.client_id) not in reply["awareness"]
    await a.exit()


# -- garbage on the /yjs path ----------------------------------------------------------------------


def varuint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def sync_message(step: int, payload: bytes) -> bytes:
    return b"\x00" + varuint(step) + varuint(len(payload)) + payload


def _update() -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=12345)
    doc.get(TEXT, type=pycrdt.Text).insert(0, "a valid update, cut in half")
    return doc.get_update()


_UPDATE = _update()

GARBAGE: dict[str, bytes | str] = {
    "bad varint (message type)": b"\xff" * 12,
    "bad varint (payload length)": b"\x00\x02" + b"\xff" * 11,
    "empty message": b"",
    "truncated (type only)": b"\x00",
    "truncated (payload shorter than its length)": b"\x00\x02\x09ab",
    "truncated update": sync_message(2, _UPDATE[: len(_UPDATE) // 2]),
    "unknown message type": b"\x07",
    "unknown message type with payload": b"\x63\x02\x01x",
    "unknown sync step": b"\x00\x07\x00",
    "length far beyond the message": b"\x00\x02" + varuint(2**40) + b"x",
    "state vector that is not one": sync_message(0, b"\x05\xff"),
    "auth message from a client": b"\x02\x00",
    "query awareness with trailing bytes": b"\x03\x00",
    "trailing bytes": sync_message(2, b"\x00\x00") + b"!",
    "update pycrdt refuses": sync_message(2, b"\x05\x99not an update"),
    "awareness that is not JSON": b"\x01" + varuint(9) + b"\x01\x07\x00\x05{oops",
    "text frame": "hello",
    "text frame holding a sync step 1": "\x00\x00\x01\x00",
}


def health(relay: Relay) -> Any:
    """``GET /health`` (blocking: run it in a thread, the relay is in this loop)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{relay.port}/health", timeout=10) as answer:
        return json.load(answer)


async def send_garbage(relay: Relay, data: bytes | str) -> tuple[int, str]:
    """Connect to the room's /yjs path, send ``data``, return the close code and
    reason the relay answers with (whatever else it sends is skipped)."""
    async with websockets.connect(f"{relay.url}/yjs/{D}") as ws:
        await ws.send(data)
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
    received = closed.value.rcvd
    assert received is not None, "the relay dropped the connection without a close frame"
    return received.code, received.reason


async def test_garbage_on_the_yjs_path_closes_that_connection_only(
    relay: Relay, replica: Replica, spawn: Spawn
) -> None:
    notes(replica).insert(0, "kept")
    form(replica)["state"] = "before"
    await replica.connect(relay.url)
    await replica.wait_synced(D, timeout=20)  # acknowledged: stored
    yjs = await spawn("bystander")
    expected = python_content(replica)
    assert (await yjs.connect(relay))["content"] == expected
    stored_before = await relay.storage.load(D)

    closes = {}
    for name, data in GARBAGE.items():
        code, reason = await send_garbage(relay, data)
        closes[name] = (code, reason)
        # 1002 protocol error, 1003 unsupported data (text), 1007 invalid payload,
        # 1008 policy violation
        assert code in (1002, 1003, 1007, 1008) and reason, (name, code, reason)

    # The relay is up, the bystanders kept their connections, the room and its
    # storage are unchanged.
    assert (await asyncio.to_thread(health, relay))["status"] == "ok"
    assert replica.status is SyncStatus.SYNCED
    state = await yjs.call("get", texts=[TEXT], maps=[MAP])
    assert state["connected"] and state["connects"] == 1 and state["closes"] == [], state
    assert state["content"] == expected
    assert python_content(replica) == expected
    assert relay.hub.writes_waiting == 0
    assert await relay.storage.load(D) == stored_before

    # ...and keeps working for everyone, including newcomers.
    await yjs.call("set", map=MAP, key="state", value="after")
    await mark(yjs, 1)
    expected = await converge(replica, [yjs], 1)
    assert expected["maps"][MAP]["state"] == "after"
    notes(replica).insert(4, "!")
    expected = python_content(replica)
    await yjs.wait_content(expected)
    newcomer = await spawn("newcomer")
    assert (await newcomer.connect(relay))["content"] == expected
    await newcomer.exit()
    await yjs.exit()
