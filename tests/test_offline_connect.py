"""connect() for offline apps: clear errors instead of endless retries, retries
that log once, sync_state while the relay is away, and retry_now()."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pycrdt
import pytest
import websockets
from websockets.asyncio.server import ServerConnection

from crdtsync import (
    RelayEndpointError,
    RelayUnreachableError,
    Replica,
    StatusChanged,
    SyncError,
    SyncStatus,
)
from crdtsync.sync.client import Connector
from relay.server import Relay

from .relay_helpers import wait_state


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "127.0.0.1:1", "https://x", "ws://"])
async def test_a_url_that_is_not_ws_raises_value_error(url: str) -> None:
    with Replica(":memory:") as replica:
        with pytest.raises(ValueError, match="ws://"):
            await replica.connect(url)
        assert replica.connector is None


async def test_a_yjs_path_raises_an_endpoint_error_naming_the_fix() -> None:
    async with Relay("memory://", port=0) as relay:
        with Replica(":memory:") as replica:
            with pytest.raises(RelayEndpointError) as info:
                await replica.connect(f"{relay.url}/yjs/doc")
            assert f"{relay.url}/" in str(info.value)  # the fix: the relay's root
            assert replica.connector is None


async def test_http_404_raises_once_without_a_retry_loop(caplog: pytest.LogCaptureFixture) -> None:
    async with Relay("memory://", port=0) as relay:
        with Replica(":memory:") as replica, caplog.at_level(logging.INFO):
            with pytest.raises(RelayEndpointError, match="404") as info:
                await replica.connect(f"{relay.url}/not-a-relay-path")
            assert isinstance(info.value, SyncError)
            assert not str(info.value).rstrip().endswith(":")
            assert replica.connector is None
            # What a UI reads says the same as the exception, until the next connect().
            failed = replica.sync_state.last_error
            assert isinstance(failed, RelayEndpointError) and str(failed) == str(info.value)
            await replica.connect(relay.url)
            assert replica.sync_state.last_error is None
            await replica.disconnect()
    attempts = [r for r in caplog.records if "404" in r.getMessage() and r.name.startswith("crdt")]
    assert len(attempts) == 1, [r.getMessage() for r in attempts]


async def test_an_endpoint_that_does_not_speak_the_native_protocol() -> None:
    """A websocket server that answers with something else (y-protocols bytes)."""

    async def not_native(ws: ServerConnection) -> None:
        await ws.send(b"\x00\x00\x01\x00")  # a y-protocols sync step 1
        await ws.wait_closed()

    async with websockets.serve(not_native, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        with Replica(":memory:") as replica, pytest.raises(RelayEndpointError, match="native"):
            await replica.connect(f"ws://127.0.0.1:{port}")


async def test_unreachable_relay_is_one_warning_then_one_info_and_retry_now(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Pointed at a closed port: connect() returns, sync_state shows the error and
    the attempts; the log says it once. Relay up + retry_now(): connected at once,
    without waiting out a long backoff."""
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="crdtsync.sync.client")
    with Replica(":memory:") as replica:
        replica.open("d").get("t", type=pycrdt.Text).insert(0, "offline edit")
        # A connector whose backoff is one hour after the third attempt.
        waits: Iterator[float] = iter([0.01, 0.01] + [3600.0] * 100)
        connector = Connector(replica, url, delays=lambda: waits)
        replica._link = connector
        connector.start()
        state = await wait_state(
            replica, lambda s: s.next_attempt_at is not None and s.attempts >= 3
        )
        assert state.status is SyncStatus.OFFLINE
        assert isinstance(state.last_error, RelayUnreachableError)
        assert str(state.last_error).strip() and not str(state.last_error).endswith(":")
        assert (state.pending_documents, state.pending_updates) == (1, 1)
        loud = [r for r in caplog.records if r.levelno >= logging.INFO and "crdtsync" in r.name]
        assert len(loud) == 1, [r.message for r in loud]  # not one line per attempt
        assert loud[0].levelno == logging.WARNING and "unreachable" in loud[0].message

        statuses: list[StatusChanged] = []
        replica.observe(lambda e: statuses.append(e) if isinstance(e, StatusChanged) else None)
        async with Relay("memory://", port=port):
            replica.retry_now()  # the backoff would wait an hour
            await connector.wait_status(SyncStatus.SYNCED, timeout=20)
            state = replica.sync_state
            assert state.last_error is None and state.attempts == 0
            assert state.pending_updates == 0 and state.last_synced_at is not None
            synced = statuses[-1]
            assert synced.status is SyncStatus.SYNCED and synced.state is not None
            assert synced.state.last_synced_at == state.last_synced_at  # it carries the state
            infos = [r for r in caplog.records if "reachable again" in r.message]
            assert len(infos) == 1 and infos[0].levelno == logging.INFO
            await replica.disconnect()
