"""The HTTP side before an upgrade (:mod:`relay.handshakes`, :mod:`relay.listener`,
:mod:`relay.http`): bad requests answered with their reason, header floods,
silent connections, probes at the per-address limit, and floods against a relay
process whose open-file limit is low."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from crdtsync import Replica
from crdtsync.ids import DocId, ReplicaId
from crdtsync.sync.protocol import ErrorFrame, Hello, decode_frame, encode_frame
from relay.handshakes import HANDSHAKE_TIMEOUT, TOO_MANY_HANDSHAKES
from relay.server import Relay
from relay.session import Limits
from tests.relay_helpers import raw_http

from .relay_helpers import RelayProcess

D = DocId("doc")


_http = raw_http


async def _health(port: int, timeout: float = 30) -> dict[str, object]:
    answer = await _http(port, b"GET /health HTTP/1.1\r\nHost: relay\r\n\r\n", timeout)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    figures: dict[str, object] = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    return figures


@contextlib.contextmanager
def _silent(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` TCP connections that never send a byte."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(socket.create_connection(("127.0.0.1", port)))
        yield socks
    finally:
        for sock in socks:
            sock.close()


# -- requests ----------------------------------------------------------------------------


async def test_a_malformed_request_gets_400_with_its_reason_logged(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="relay.handshakes"):
        answer = await _http(relay.port, b"GARBAGE\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 Bad Request")
    assert b"malformed HTTP request: invalid HTTP request line: GARBAGE" in answer
    assert any("400" in r.getMessage() and "GARBAGE" in r.getMessage() for r in caplog.records)


async def test_other_methods_are_refused_with_a_reason(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="relay.http"):
        post = await _http(relay.port, b"POST / HTTP/1.1\r\nHost: x\r\n\r\n")
        health = await _http(relay.port, b"DELETE /health HTTP/1.1\r\nHost: x\r\n\r\n")
        unknown = await _http(relay.port, b"FROB / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert post.startswith(b"HTTP/1.1 405") and b"Allow: GET" in post and b"only GET" in post
    assert health.startswith(b"HTTP/1.1 405")  # no longer answered as a GET
    assert unknown.startswith(b"HTTP/1.1 400") and b"unknown HTTP method 'FROB'" in unknown
    assert sum("POST" in r.getMessage() or "FROB" in r.getMessage() for r in caplog.records) == 2


async def test_headers_beyond_the_pre_authentication_budget_get_431(relay: Relay) -> None:
    headers = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(100))  # 101 KB
    answer = await _http(relay.port, b"GET /health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431")
    assert b"exceed 65536 bytes" in answer
    assert (await _health(relay.port))["status"] == "ok"


async def test_the_http_request_counts_towards_the_bytes_before_hello(relay: Relay) -> None:
    padding = {"X-Pad": "a" * 7000}  # 8 headers of 7 KB: 56 KB of request
    headers = [(f"X-Pad-{i}", padding["X-Pad"]) for i in range(8)]
    async with websockets.connect(relay.url, additional_headers=headers) as ws:
        await ws.send(encode_frame(Hello(ReplicaId("r"), token="t" * 10_000)))  # 10 KB more
        frames = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frames.append(decode_frame(await ws.recv()))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    [error] = frames
    assert isinstance(error, ErrorFrame) and error.fatal
    assert "HTTP request included" in error.message


# -- connections in the handshake -------------------------------------------------------


async def test_silent_connections_are_closed_at_the_deadline_and_counted(tmp_path: Path) -> None:
    limits = Limits(auth_timeout=0.5)
    async with Relay(f"sqlite:///{tmp_path}/relay.db", port=0, limits=limits) as relay:
        with _silent(relay.port, 5) as socks:
            assert (await _health(relay.port))["handshakes"] == 6  # and the probe's own
            for sock in socks:  # each one is closed by the relay: reading gets EOF
                await asyncio.wait_for(asyncio.to_thread(sock.recv, 1), timeout=10)
        figures = await _health(relay.port)
    assert figures["handshakes"] == 1  # the probe itself
    assert figures["refusals"] == {HANDSHAKE_TIMEOUT: 5}


async def test_a_flood_from_one_address_makes_room_for_probes_and_honest_clients(
    tmp_path: Path, replica: Replica
) -> None:
    limits = Limits(max_handshakes_per_address=10)
    async with Relay(f"sqlite:///{tmp_path}/relay.db", port=0, limits=limits) as relay:
        with _silent(relay.port, 60):
            figures = await _health(relay.port)
            assert figures["handshakes"] == 10  # counted with the probe's own connection
            replica.open(D)
            await replica.connect(relay.url)
            await replica.wait_synced(D, timeout=30)
        refusals = (await _health(relay.port))["refusals"]
    assert isinstance(refusals, dict) and refusals[TOO_MANY_HANDSHAKES] >= 50


async def test_health_answers_at_the_per_address_connection_limit(tmp_path: Path) -> None:
    limits = Limits(max_connections_per_address=2)
    async with (
        Relay(f"sqlite:///{tmp_path}/relay.db", port=0, limits=limits) as relay,
        websockets.connect(relay.url),  # two connections from this address: the limit
        websockets.connect(relay.url),
    ):
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(relay.url):
                pass
        assert refused.value.response.status_code == 429
        figures = await _health(relay.port)
        assert figures["connections"] == 2


# -- floods against a relay process with a low open-file limit -----------------------------


async def _flood_and_check(relay: RelayProcess, replica: Replica, silent: int) -> str:
    """``silent`` connections that never speak; then /health and an honest replica
    must get through. Returns the relay's log."""
    with _silent(relay.port, silent):
        assert (await _health(relay.port, timeout=60))["status"] == "ok"
        replica.open(D)
        await replica.connect(relay.url)
        await replica.wait_synced(D, timeout=60)
    return relay.log.read_text()


@pytest.mark.parametrize(
    ("hard", "expected"),
    [
        (4096, "raised the open-file limit from 1024 to 4096"),
        (1024, "at most 256 connections in the HTTP handshake"),  # a quarter of 1024
    ],
    ids=["raised", "cannot-be-raised"],
)
async def test_1100_silent_connections_against_a_soft_limit_of_1024(
    tmp_path: Path, replica: Replica, hard: int, expected: str
) -> None:
    relay = RelayProcess(
        f"sqlite:///{tmp_path}/relay.db", tmp_path / "relay.log", open_files=(1024, hard)
    )
    try:
        await relay.start()
        log = await _flood_and_check(relay, replica, 1100)
    finally:
        await relay.ensure_stopped()
    assert expected in log
    assert "Traceback" not in log and "Too many open files" not in log


async def test_out_of_descriptors_pauses_accepting_and_logs_a_count_not_tracebacks(
    tmp_path: Path, replica: Replica
) -> None:
    """Without the handshake limits a flood does exhaust the descriptors: accepting
    pauses, one line per interval says how often, and the relay recovers when the
    silent connections time out."""
    relay = RelayProcess(
        f"sqlite:///{tmp_path}/relay.db",
        tmp_path / "relay.log",
        open_files=(200, 200),
        args=["--max-handshakes", "0", "--max-handshakes-per-address", "0", "--auth-timeout", "2"],
    )
    try:
        await relay.start()
        log = await _flood_and_check(relay, replica, 300)
    finally:
        await relay.ensure_stopped()
    assert "accept() failed for lack of resources" in log
    assert "Too many open files" in log
    assert "Traceback" not in log
    assert log.count("accept() failed") < 20  # once per interval, not once per attempt
