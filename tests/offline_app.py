"""A small offline app, run as a separate process by tests/test_offline_app.py.

    python tests/offline_app.py COMMAND STORE [ARGS...]

Each command prints one JSON line with what it saw. Documents hold a text
``content``. The app never sleeps to wait: it awaits the replica's events.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import pycrdt

from crdtsync import Replica, SyncStateChanged


def text_of(doc: pycrdt.Doc[Any]) -> str:
    return str(doc.get("content", type=pycrdt.Text))


def say(**fields: Any) -> None:
    print(json.dumps(fields, default=str), flush=True)


async def openable(store: str, doc_id: str, url: str) -> None:
    """Open the store and a document, then connect to an unreachable relay: opening
    touches no network; connecting returns with the replica offline."""
    start = time.perf_counter()
    with Replica(store) as replica:
        text = text_of(replica.open(doc_id, offline_only=True))
        seconds = time.perf_counter() - start
        loaded = [m for m in ("websockets", "http.client", "crdtsync.sync") if m in sys.modules]
        await replica.connect(url)
        s = replica.sync_state
        await replica.disconnect()
        say(
            seconds=seconds,
            text=text,
            network_modules=loaded,
            status=s.status.value,
            error=type(s.last_error).__name__,
        )


def edit(store: str, *pairs: str) -> None:
    """Append text to documents, offline: ``doc text doc text ...``."""
    with Replica(store) as replica:
        for doc_id, text in zip(pairs[::2], pairs[1::2], strict=True):
            content = replica.open(doc_id).get("content", type=pycrdt.Text)
            content += text
        state = replica.sync_state
        say(pending_documents=state.pending_documents, pending_updates=state.pending_updates)


def read(store: str, *doc_ids: str) -> None:
    """Read documents offline (offline_only: never created), with fetched_at."""
    with Replica(store) as replica:
        say(
            texts={d: text_of(replica.open(d, offline_only=True)) for d in doc_ids},
            fetched_at={d: replica.fetched_at(d) for d in doc_ids},
        )


def state(store: str) -> None:
    with Replica(store) as replica:
        s = replica.sync_state
        say(
            pending_documents=s.pending_documents,
            pending_updates=s.pending_updates,
            pending_attachments=s.pending_attachments,
            last_synced_at=s.last_synced_at,
            opened=replica.open_documents(),
        )


async def prefetch(store: str, url: str, *patterns: str) -> None:
    with Replica(store) as replica:
        stored = await replica.prefetch(list(patterns), url=url)
        say(stored=stored)


async def sync(store: str, url: str) -> None:
    """Connect without opening anything; wait until nothing is pending."""
    with Replica(store) as replica:
        done = asyncio.Event()

        def on_event(event: object) -> None:
            state = event.state if isinstance(event, SyncStateChanged) else None
            if state is not None and not state.pending and state.last_synced_at is not None:
                done.set()

        replica.observe(on_event)
        await replica.connect(url)
        if not replica.sync_state.pending and replica.sync_state.last_synced_at is not None:
            done.set()
        async with asyncio.timeout(60):
            await done.wait()
        s = replica.sync_state
        await replica.disconnect()
        say(pending=s.pending, last_synced_at=s.last_synced_at)


def attach(store: str, doc_id: str, size: str) -> None:
    with Replica(store) as replica:
        data = bytes(range(256)) * (int(size) // 256) + b"x" * (int(size) % 256)
        ref = replica.attachments.put(data, content_type="image/jpeg", doc_id=doc_id)
        say(ref=ref, pending_attachments=replica.sync_state.pending_attachments)


async def upload_and_hang(store: str, url: str, after: str) -> None:
    """Connect and start uploading; after ``after`` chunks are posted, stop making
    progress (the test kills this process with SIGKILL then)."""
    from crdtsync.sync import fetch  # noqa: PLC0415

    posted = 0
    real = fetch.RelayHttp.request

    async def counting(self: fetch.RelayHttp, method: str, path: str, **kw: Any) -> Any:
        nonlocal posted
        if method == "POST" and path.startswith("/attachments/"):
            if posted >= int(after):
                say(posted=posted)
                await asyncio.Future()  # hang: mid-upload
            posted += 1
        return await real(self, method, path, **kw)

    fetch.RelayHttp.request = counting  # type: ignore[method-assign]
    with Replica(store) as replica:
        await replica.connect(url)
        await asyncio.Future()


async def upload(store: str, url: str) -> None:
    """Connect until every attachment is uploaded; report the bytes posted."""
    from crdtsync.sync import fetch  # noqa: PLC0415

    sent = 0
    real = fetch.RelayHttp.request

    async def counting(self: fetch.RelayHttp, method: str, path: str, **kw: Any) -> Any:
        nonlocal sent
        if method == "POST" and path.startswith("/attachments/"):
            sent += len(kw.get("body") or b"")
        return await real(self, method, path, **kw)

    fetch.RelayHttp.request = counting  # type: ignore[method-assign]
    with Replica(store) as replica:
        done = asyncio.Event()
        replica.observe(
            lambda e: (
                done.set()
                if isinstance(e, SyncStateChanged) and e.state.pending_attachments == 0
                else None
            )
        )
        await replica.connect(url)
        if replica.sync_state.pending_attachments == 0:
            done.set()
        async with asyncio.timeout(60):
            await done.wait()
        await replica.disconnect()
        say(sent=sent)


COMMANDS = {
    "openable": openable,
    "edit": edit,
    "read": read,
    "state": state,
    "prefetch": prefetch,
    "sync": sync,
    "attach": attach,
    "upload-and-hang": upload_and_hang,
    "upload": upload,
}

if __name__ == "__main__":
    command = COMMANDS[sys.argv[1]]
    result = command(*sys.argv[2:])
    if asyncio.iscoroutine(result):
        asyncio.run(result)
