"""Security over the real path: signed tokens (relay.auth) checked by a relay on
127.0.0.1 with a SQLite file, real replicas, y-websocket clients and HTTP
requests; per-document permissions, expiry with refresh, rotation,
authorship, and the limits that need sockets (deadline, connections per
address, decompression, TLS, Origin)."""

from __future__ import annotations

import asyncio
import datetime
import http.client
import ipaddress
import json
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pycrdt
import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.exceptions import ConnectionClosed, InvalidStatus

from crdtsync import AuthError, Replica
from crdtsync.events import DocumentRestricted, ReplicaEvent, SyncStatus
from crdtsync.ids import DocId, ReplicaId
from crdtsync.sync.protocol import (
    ErrorCode,
    ErrorFrame,
    Hello,
    Subscribe,
    Sync,
    Update,
    Welcome,
    decode_frame,
    encode_frame,
)
from relay import Relay
from relay.auth import KeyRing, authenticator, issue_token
from relay.session import Limits
from relay.yjs import decode_message, encode_sync_step1

from .relay_helpers import eventually
from .test_yjs_relay import YClient

SECRET = "relay-secret-" + "x" * 32
SITE = DocId("site-12/form-3")


def keyring(**secrets: str) -> KeyRing:
    keys = KeyRing()
    for kid, secret in (secrets or {"k1": SECRET}).items():
        keys.add_secret(kid, secret)
    return keys


def make_token(
    docs: tuple[str, ...] = ("site-12/*:rw",),
    sub: str = "ana",
    ttl: float = 600,
    keys: KeyRing | None = None,
    now: float | None = None,
) -> str:
    return issue_token(keys or keyring(), sub, list(docs), ttl, now=now)


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    async with Relay(
        f"sqlite:///{tmp_path}/relay.db", port=0, authenticate=authenticator(keyring())
    ) as server:
        yield server


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[list[Replica]]:
    made = [Replica(tmp_path / f"replica-{i}.db") for i in range(3)]
    yield made
    for replica in made:
        await replica.disconnect()
        replica.close()


def text(replica: Replica, doc_id: str = SITE) -> pycrdt.Text:
    return replica.open(doc_id).get("t", type=pycrdt.Text)


def room_text(relay: Relay, doc_id: str = SITE) -> str:
    return str(relay.hub.rooms[DocId(doc_id)].doc.get("t", type=pycrdt.Text))


# -- tokens at connect ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("none", ErrorCode.TOKEN_REQUIRED),
        ("forged", ErrorCode.TOKEN_INVALID),
        ("expired", ErrorCode.TOKEN_EXPIRED),
        ("future", ErrorCode.TOKEN_NOT_YET_VALID),
        ("unknown-key", ErrorCode.UNKNOWN_KEY),
    ],
)
async def test_a_refused_token_makes_connect_raise_auth_error(
    relay: Relay, replicas: list[Replica], kind: str, code: str
) -> None:
    token = {
        "none": None,
        "forged": make_token(keys=keyring(k1="another-secret-" + "y" * 32)),
        "expired": make_token(ttl=10, now=time.time() - 100),
        "future": make_token(now=time.time() + 100),
        "unknown-key": make_token(keys=keyring(k9=SECRET)),
    }[kind]
    replica = replicas[0]
    text(replica).insert(0, "offline work")
    with pytest.raises(AuthError) as info:
        await replica.connect(relay.url, token=token)
    assert info.value.code == code
    assert replica.connector is None and replica.status is SyncStatus.OFFLINE
    assert replica.pending(SITE) == 1  # nothing lost


# -- per-document permissions, native protocol ----------------------------------------------------


async def test_read_only_and_denied_documents_native(relay: Relay, replicas: list[Replica]) -> None:
    writer, reader, _ = replicas
    text(writer).insert(0, "from the writer")
    await writer.connect(relay.url, token=make_token())
    await writer.wait_synced(SITE, timeout=10)

    events: list[DocumentRestricted] = []

    def watch(event: ReplicaEvent) -> None:
        if isinstance(event, DocumentRestricted):
            events.append(event)

    reader.observe(watch)
    await reader.connect(relay.url, token=make_token(("site-12/*:r",), sub="bob"))
    await reader.wait_synced(SITE, timeout=10)
    assert str(text(reader)) == "from the writer"

    # A change on a read-only document stays stored and pending, never applied.
    text(reader).insert(0, "NOT ALLOWED ")
    with pytest.raises(AuthError) as info:
        await reader.wait_synced(SITE, timeout=10)
    assert info.value.code == ErrorCode.READ_ONLY
    assert [(e.doc_id, e.read_only) for e in events] == [(SITE, True)]
    assert reader.pending(SITE) == 1
    assert room_text(relay) == "from the writer"
    # ...while it still receives the writer's updates.
    text(writer).insert(len(str(text(writer))), "!")
    await eventually(reader.open(SITE), lambda: str(text(reader)).endswith("writer!"))

    # A document outside the token's patterns: permission_denied for it alone.
    reader.open("private/notes")
    with pytest.raises(AuthError) as info:
        await reader.wait_synced("private/notes", timeout=10)
    assert info.value.code == ErrorCode.PERMISSION_DENIED
    assert DocId("private/notes") not in relay.hub.rooms
    # Restricted documents do not hold the overall status back: all else is synced.
    assert reader.status is SyncStatus.SYNCED
    assert len(relay.connections) == 2


# -- per-document permissions, y-websocket and HTTP -----------------------------------------------


async def test_yjs_path_checks_the_token_before_the_upgrade(relay: Relay) -> None:
    url = f"{relay.url}/yjs/site-12%2Fform-3"
    for suffix, headers, status in (
        ("", {}, 401),
        ("?token=garbage", {}, 401),
        (f"?token={make_token(('other/*:rw',))}", {}, 403),
        ("", {"Authorization": f"Bearer {make_token(ttl=10, now=time.time() - 100)}"}, 401),
    ):
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(url + suffix, additional_headers=headers)
        assert refused.value.response.status_code == status
    writer = await YClient.connect(f"{url}?token={make_token()}", client_id=11)
    await writer.edit(0, "yjs writes")
    reader = YClient(
        await websockets.connect(
            url, additional_headers={"Authorization": f"Bearer {make_token(('site-12/*:r',))}"}
        ),
        client_id=12,
    )
    await reader.ws.send(b"\x00\x00\x01\x00")  # sync step 1, empty state vector
    await reader.pump(lambda: reader.text() == "yjs writes")
    await reader.edit(0, "dropped ")  # read-only: y-websocket treatment, dropped
    # A barrier: the relay answers this step 1 after it handled the edit before it.
    await reader.ws.send(encode_sync_step1(b"\x00"))
    while decode_message(await asyncio.wait_for(reader.ws.recv(), 10))[:2] != (0, 1):
        pass
    assert room_text(relay) == "yjs writes"
    assert reader.ws.close_code is None
    await writer.edit(0, "more ")
    await reader.pump(lambda: "more " in reader.text())
    assert room_text(relay) == "more yjs writes"
    await writer.ws.close()
    await reader.ws.close()


def _get(relay: Relay, path: str, token: str | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


async def test_http_endpoints_need_a_token(relay: Relay, replicas: list[Replica]) -> None:
    writer = replicas[0]
    text(writer).insert(0, "stored text")
    await writer.connect(relay.url, token=make_token())
    await writer.wait_synced(SITE, timeout=10)
    path = "/docs/site-12%2Fform-3"
    assert (await asyncio.to_thread(_get, relay, path))[0] == 401
    assert (await asyncio.to_thread(_get, relay, path, "garbage"))[0] == 401
    status, _ = await asyncio.to_thread(_get, relay, path, make_token(("other/*:r",)))
    assert status == 403
    status, body = await asyncio.to_thread(_get, relay, path, make_token(("site-12/*:r",)))
    assert status == 200
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(body)
    assert str(doc.get("t", type=pycrdt.Text)) == "stored text"
    status, body = await asyncio.to_thread(_get, relay, "/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, body = await asyncio.to_thread(_get, relay, "/health", make_token())
    health = json.loads(body)
    assert health["connections"] == 1
    # Refusals are counted by code.
    assert health["refusals"] == {
        ErrorCode.TOKEN_REQUIRED: 1,
        ErrorCode.TOKEN_INVALID: 1,
        ErrorCode.PERMISSION_DENIED: 1,
    }


# -- expiry, refresh, rotation --------------------------------------------------------------------


async def test_a_token_callable_is_refreshed_before_expiry_without_losing_anything(
    relay: Relay, replicas: list[Replica]
) -> None:
    issued: list[float] = []
    enough = asyncio.Event()

    async def fresh() -> str:
        issued.append(time.time())
        if issued[-1] > issued[0] + 3:  # the first token (3 s) has expired by now
            enough.set()
        return make_token(ttl=3)

    disconnects: list[object] = []
    relay.on_disconnect = disconnects.append
    writer, reader, _ = replicas
    await writer.connect(relay.url, token=fresh)
    await reader.connect(relay.url, token=make_token())
    await writer.wait_synced(SITE, timeout=10)
    await asyncio.wait_for(enough.wait(), timeout=30)
    assert time.time() > issued[0] + 3
    text(writer).insert(0, "after the first token expired")
    await writer.wait_synced(SITE, timeout=10)
    await eventually(reader.open(SITE), lambda: str(text(reader)).startswith("after"))
    assert disconnects == []  # the connection was extended, never dropped


async def test_a_plain_token_that_expires_ends_the_session(
    relay: Relay, replicas: list[Replica]
) -> None:
    replica = replicas[0]
    await replica.connect(relay.url, token=make_token(ttl=2))
    await replica.wait_synced(SITE, timeout=10)
    connector = replica.connector
    assert connector is not None
    with pytest.raises(AuthError) as info:
        await connector.wait_status(SyncStatus.CONNECTING, timeout=15)
    assert info.value.code == ErrorCode.TOKEN_EXPIRED
    assert not connector.running


async def test_rotation_to_a_new_key_id(tmp_path: Path, replicas: list[Replica]) -> None:
    old = issue_token(keyring(old=SECRET), "ana", ["*:rw"], 600)
    both = keyring(old=SECRET, new="a-new-secret-" + "z" * 32)
    both.signing_kid = "new"
    new = issue_token(both, "ana", ["*:rw"], 600)
    store = f"sqlite:///{tmp_path}/relay.db"
    async with Relay(store, port=0, authenticate=authenticator(both)) as relay:
        await replicas[0].connect(relay.url, token=old)
        await replicas[0].wait_synced(SITE, timeout=10)
        await replicas[0].disconnect()
    only_new = keyring(new="a-new-secret-" + "z" * 32)
    async with Relay(store, port=0, authenticate=authenticator(only_new)) as relay:
        with pytest.raises(AuthError) as info:
            await replicas[0].connect(relay.url, token=old)
        assert info.value.code == ErrorCode.UNKNOWN_KEY
        await replicas[0].connect(relay.url, token=new)
        await replicas[0].wait_synced(SITE, timeout=10)


# -- authorship -----------------------------------------------------------------------------------


async def _native(url: str, token: str) -> Any:
    ws = await websockets.connect(url)
    await ws.send(encode_frame(Hello(ReplicaId("eve-replica"), token)))
    assert isinstance(decode_frame(await ws.recv()), Welcome)
    return ws


async def _next(ws: Any, kind: type[Any]) -> Any:
    while True:
        frame = decode_frame(await asyncio.wait_for(ws.recv(), 10))
        if isinstance(frame, kind):
            return frame


async def test_an_update_under_another_subjects_client_id_is_rejected(
    relay: Relay, replicas: list[Replica]
) -> None:
    ana, watcher, _ = replicas
    text(ana).insert(0, "ana's text")
    await ana.connect(relay.url, token=make_token(sub="ana"))
    await watcher.connect(relay.url, token=make_token(sub="watcher"))
    await ana.wait_synced(SITE, timeout=10)
    victim = ana.client_id(SITE)

    # Eve forges content under ana's client id, beyond ana's clock: were it
    # accepted, ana's real next edits (same clocks) would be ignored everywhere.
    eve = await _native(relay.url, make_token(sub="eve"))
    await eve.send(encode_frame(Subscribe(SITE, b"\x00")))
    sync = await _next(eve, Sync)
    forged: pycrdt.Doc[Any] = pycrdt.Doc(client_id=victim)
    forged.apply_update(sync.update)
    before = forged.get_state()
    forged.get("t", type=pycrdt.Text).insert(0, "EVE ")
    await eve.send(encode_frame(Update(SITE, forged.get_update(before), 1)))
    error = await _next(eve, ErrorFrame)
    assert (error.code, error.seq) == (ErrorCode.AUTHORSHIP, 1)
    assert room_text(relay) == "ana's text"

    # Ana's real later edits still apply and reach everyone.
    text(ana).insert(0, "still ")
    await ana.wait_synced(SITE, timeout=10)
    await eventually(watcher.open(SITE), lambda: str(text(watcher)) == "still ana's text")
    await eve.close()


# -- limits that need sockets ---------------------------------------------------------------------


async def test_a_client_that_never_says_hello_is_closed_at_the_deadline(tmp_path: Path) -> None:
    limits = Limits(auth_timeout=0.5)
    keys = authenticator(keyring())
    async with Relay("memory://", port=0, limits=limits, authenticate=keys) as relay:
        slow = await websockets.connect(relay.url)
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(slow.recv(), 10)  # only the ERROR, then the close
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert ErrorCode.AUTH_TIMEOUT in closed.value.rcvd.reason
        assert time.monotonic() - started < 5
        ok = await _native(relay.url, make_token())  # others are served
        await ok.close()


async def test_connections_per_address_are_limited() -> None:
    limits = Limits(max_connections_per_address=2)
    async with Relay("memory://", port=0, limits=limits) as relay:
        first = await websockets.connect(relay.url)
        second = await websockets.connect(relay.url)
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(relay.url)
        assert refused.value.response.status_code == 429
        gone = asyncio.Event()
        relay.on_disconnect = lambda session: gone.set()
        await first.close()
        await asyncio.wait_for(gone.wait(), 10)
        third = await websockets.connect(relay.url)
        await second.close()
        await third.close()


async def test_a_decompression_bomb_is_refused_before_it_is_inflated() -> None:
    limits = Limits(max_frame=64 << 10, max_queued_bytes=64 << 10, max_doc_bytes=64 << 10)
    async with Relay("memory://", port=0, limits=limits, compression=True) as relay:
        bomb = await websockets.connect(relay.url, compression="deflate", max_size=None)
        assert bomb.protocol.extensions  # permessage-deflate was negotiated
        await bomb.send(b"\x00" * (8 << 20))  # ~8 KiB on the wire, 8 MiB inflated
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(bomb.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        ok = await websockets.connect(relay.url, compression="deflate")
        await ok.send(encode_frame(Hello(ReplicaId("ok"))))
        assert isinstance(decode_frame(await ok.recv()), Welcome)
        await ok.close()


def test_an_open_relay_binds_only_to_loopback() -> None:
    with pytest.raises(ValueError, match="--insecure"):
        Relay("memory://", host="0.0.0.0")
    Relay("memory://", host="0.0.0.0", insecure=True)  # allowed when asked for
    Relay("memory://", host="0.0.0.0", authenticate=authenticator(keyring()))
    Relay("memory://", host="::1")


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    async with Relay("memory://", port=0, ssl_context=server_context) as relay:
        assert relay.url.startswith("wss://")
        client_context = ssl.create_default_context(cafile=str(cert))
        ws = await websockets.connect(relay.url, ssl=client_context)
        await ws.send(encode_frame(Hello(ReplicaId("tls"))))
        assert isinstance(decode_frame(await ws.recv()), Welcome)
        await ws.close()
        with pytest.raises(ssl.SSLError):
            await websockets.connect(relay.url)  # not trusted without the certificate


async def test_origin_allow_list() -> None:
    async with Relay("memory://", port=0, origins=["https://app.example"]) as relay:
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(relay.url, origin="https://evil.example")  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403
        allowed = await websockets.connect(relay.url, origin="https://app.example")  # type: ignore[arg-type]
        no_origin = await websockets.connect(relay.url)  # Python and Node send none
        await allowed.close()
        await no_origin.close()
