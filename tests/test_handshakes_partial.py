"""Connections that send part of a request and stall (:mod:`relay.handshakes`,
:mod:`relay.front`): a partial request head, headers trickled byte by byte, or
on ``/fetch`` and ``/attachments/`` an unfinished body. They count towards the
handshake limits (in all and per address), are closed at the handshake
deadline however they trickle, and never lock out ``/health`` or an honest
replica; a routed request's head is within the pre-authentication budget and
its body is not read before its token is accepted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from crdtsync import Replica
from crdtsync.ids import DocId
from relay.auth import KeyRing, authenticator
from relay.handshakes import HANDSHAKE_TIMEOUT, TOO_MANY_HANDSHAKES
from relay.server import Relay
from relay.session import Limits
from tests.relay_helpers import raw_http

D = DocId("doc")

PARTIAL = {
    "request-line-unfinished": b"GET /nat",
    "headers-unfinished": b"GET / HTTP/1.1\r\nHost: relay\r\n",
    "fetch-headers-unfinished": b"POST /fetch HTTP/1.1\r\nHost: relay\r\n",
    "upload-body-unfinished": (
        b"POST /attachments/" + b"0" * 64 + b"?doc=d&offset=0&size=1000 HTTP/1.1\r\n"
        b"Host: relay\r\nContent-Length: 1000\r\n\r\nabc"
    ),
}


_answer = raw_http


async def _health(port: int) -> dict[str, object]:
    answer = await _answer(port, b"GET /health HTTP/1.1\r\nHost: relay\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    figures: dict[str, object] = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    return figures


@contextlib.asynccontextmanager
async def _stalled(port: int, data: bytes, count: int) -> AsyncIterator[list[asyncio.StreamReader]]:
    """``count`` connections that send ``data`` and then nothing."""
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(count):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(data)
            await writer.drain()
            held.append((reader, writer))
        yield [reader for reader, _ in held]
    finally:
        for _, writer in held:
            writer.close()


async def _closed_by_relay(reader: asyncio.StreamReader, timeout: float) -> None:
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(timeout):
            while await reader.read(4096):
                pass


@pytest.mark.parametrize("partial", list(PARTIAL), ids=list(PARTIAL))
@pytest.mark.parametrize(
    "limits",
    [
        Limits(auth_timeout=3, max_handshakes_per_address=8),
        Limits(auth_timeout=3, max_handshakes=8, max_handshakes_per_address=0),
    ],
    ids=["per-address", "in-all"],
)
async def test_stalled_requests_count_make_room_and_end_at_the_deadline(
    tmp_path: Path, replica: Replica, partial: str, limits: Limits
) -> None:
    async with Relay(f"sqlite:///{tmp_path}/relay.db", port=0, limits=limits) as relay:
        started = time.monotonic()
        async with _stalled(relay.port, PARTIAL[partial], 8) as readers:
            # The listener accepts in the order connections arrived: when the probe is
            # accepted the relay has all of them, and the probe is over the limit.
            figures = await _health(relay.port)  # refused without room made for it
            assert figures["handshakes"] == 8  # counted, the probe's own included
            replica.open(D)
            await replica.connect(relay.url)
            await replica.wait_synced(D, timeout=30)
            for reader in readers:  # closed to make room, or at the deadline
                await _closed_by_relay(reader, timeout=limits.auth_timeout + 5)
            assert time.monotonic() - started < limits.auth_timeout + 2
        figures = await _health(relay.port)
    refusals = figures["refusals"]
    assert isinstance(refusals, dict) and refusals[TOO_MANY_HANDSHAKES] >= 1  # room for the probe
    assert refusals[TOO_MANY_HANDSHAKES] + refusals.get(HANDSHAKE_TIMEOUT, 0) == 8
    assert figures["handshakes"] == 1  # the probe itself


async def test_a_trickle_does_not_extend_the_deadline(tmp_path: Path) -> None:
    limits = Limits(auth_timeout=1.0)
    async with Relay(f"sqlite:///{tmp_path}/relay.db", port=0, limits=limits) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        started = time.monotonic()
        writer.write(b"GET / HTTP/1.1\r\n")

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for byte in b"X-Slow: " + b"a" * 200:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.1)  # the attacker's pace, not a wait for the relay

        sender = asyncio.create_task(trickle())
        try:
            await _closed_by_relay(reader, timeout=10)
            elapsed = time.monotonic() - started
        finally:
            sender.cancel()
            writer.close()
        figures = await _health(relay.port)
    assert 0.8 < elapsed < 2.5  # the deadline from accept(), not from the last byte
    assert figures["refusals"] == {HANDSHAKE_TIMEOUT: 1}


async def test_a_routed_request_head_counts_towards_the_pre_authentication_budget(
    tmp_path: Path,
) -> None:
    limits = Limits(max_pre_auth_bytes=1024)
    async with Relay(f"sqlite:///{tmp_path}/relay.db", port=0, limits=limits) as relay:
        pad = b"X-Pad: " + b"a" * 4000 + b"\r\n"
        for path in (b"/fetch", b"/attachments/" + b"0" * 64):
            head = b"POST " + path + b" HTTP/1.1\r\nHost: relay\r\n" + pad
            answer = await _answer(relay.port, head + b"Content-Length: 0\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
            assert b"exceed 1024 bytes" in answer


async def test_a_body_is_not_read_before_its_token_is_accepted(tmp_path: Path) -> None:
    keys = KeyRing()
    keys.add_secret("k", "s" * 32)
    async with Relay(
        f"sqlite:///{tmp_path}/relay.db",
        port=0,
        authenticate=authenticator(keys),
        limits=Limits(auth_timeout=5),
    ) as relay:
        for path in (b"/fetch", b"/attachments/" + b"0" * 64 + b"?doc=d&offset=0&size=9"):
            # The head announces a body; none of it is sent: the answer comes at once.
            head = b"POST " + path + b" HTTP/1.1\r\nHost: relay\r\nContent-Length: 500000\r\n"
            for token in (b"", b"Authorization: Bearer not-a-token\r\n"):
                started = time.monotonic()
                answer = await _answer(relay.port, head + token + b"\r\n", timeout=4)
                assert answer.startswith(b"HTTP/1.1 401"), answer[:100]
                assert time.monotonic() - started < 2
