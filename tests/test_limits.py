"""Per-connection limits and per-document access in the sans-I/O relay session
and hub: what each limit answers, and that everyone else carries on.

Access here is a plain value object (what a verified token grants); the token
checks themselves are ``relay.auth`` (``test_auth.py``) and the whole path with
real signed tokens over websockets is ``test_security.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import pycrdt
import pytest

from crdtsync.errors import AuthError
from crdtsync.ids import DocId, ReplicaId
from crdtsync.sync.protocol import (
    Auth,
    ErrorCode,
    ErrorFrame,
    Hello,
    Subscribe,
    Sync,
    Update,
    decode_frame,
    encode_frame,
)
from relay.rooms import Hub
from relay.session import Access, Limits, RelaySession
from relay.storage import StoredRoom

D = DocId("site-12/a")


@dataclass(frozen=True)
class Grant:
    subject: str
    expires_at: float | None
    read: tuple[str, ...] = ("*",)
    write: tuple[str, ...] = ("*",)

    def can_read(self, doc_id: str) -> bool:
        return any(fnmatchcase(doc_id, p) for p in (*self.read, *self.write))

    def can_write(self, doc_id: str) -> bool:
        return any(fnmatchcase(doc_id, p) for p in self.write)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


TOKENS: dict[str, Access] = {
    "rw": Grant("ana", 2000.0),
    "ro": Grant("bob", 2000.0, read=("site-12/*",), write=()),
    "ana-later": Grant("ana", 5000.0),
    "eve": Grant("eve", 5000.0),
}


def authenticate(token: str | None) -> Access:
    if token is None:
        raise AuthError(ErrorCode.TOKEN_REQUIRED, "this relay requires a token")
    try:
        return TOKENS[token]
    except KeyError:
        raise AuthError(ErrorCode.TOKEN_INVALID, "bad signature") from None


def _hub(limits: Limits = Limits(), **kwargs: Any) -> tuple[Hub, Clock]:  # noqa: B008
    clock = Clock()
    hub = Hub("relay", limits, clock=clock, wall_clock=clock, **kwargs)
    hub.on_load = lambda doc_id: hub.loaded(doc_id, StoredRoom(doc_id, None, 0, []))
    return hub, clock


def _frames(session: RelaySession) -> list[Any]:
    return [decode_frame(f) for f in session.frames_to_send()]


def _connect(hub: Hub, token: str | None, subscribe: DocId | None = D) -> RelaySession:
    session = hub.open_session("c")
    hub.receive(session, encode_frame(Hello(ReplicaId("r"), token)))
    if subscribe is not None and session.close is None:
        hub.receive(session, encode_frame(Subscribe(subscribe, b"\x00")))
    return session


def _update(text: str, client_id: int = 1) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    doc.get("t", type=pycrdt.Text).insert(0, text)
    return doc.get_update()


def _errors(session: RelaySession) -> list[ErrorFrame]:
    return [f for f in _frames(session) if isinstance(f, ErrorFrame)]


@pytest.mark.parametrize(
    ("token", "code"), [(None, ErrorCode.TOKEN_REQUIRED), ("forged", ErrorCode.TOKEN_INVALID)]
)
def test_a_refused_token_closes_the_connection_at_hello(token: str | None, code: str) -> None:
    hub, _ = _hub(authenticate=authenticate)
    session = _connect(hub, token)
    (error,) = _errors(session)
    assert error.code == code and error.fatal
    assert session.close is not None and session.close.code == 1008
    assert D not in hub.rooms


def test_permission_denied_is_for_that_document_only() -> None:
    hub, _ = _hub(authenticate=authenticate)
    session = _connect(hub, "ro", subscribe=DocId("templates/x"))
    (error,) = _errors(session)
    assert (error.code, error.doc_id, error.fatal) == (
        ErrorCode.PERMISSION_DENIED,
        "templates/x",
        False,
    )
    hub.receive(session, encode_frame(Subscribe(D, b"\x00")))
    assert any(isinstance(f, Sync) for f in _frames(session))
    assert session.close is None


def test_a_read_only_subscriber_reads_but_its_updates_go_nowhere() -> None:
    hub, _ = _hub(authenticate=authenticate)
    writer = _connect(hub, "rw")
    reader = _connect(hub, "ro")
    _frames(writer), _frames(reader)
    hub.receive(writer, encode_frame(Update(D, _update("hello"), 1)))
    assert any(isinstance(f, Update) for f in _frames(reader))
    hub.receive(reader, encode_frame(Update(D, _update("evil", 2), 1)))
    (error,) = _errors(reader)
    assert (error.code, error.seq) == (ErrorCode.READ_ONLY, 1)
    assert _frames(writer) == []  # nothing broadcast
    writes = hub.take_writes()
    assert [w.sender for w in writes] == [writer]  # nothing stored from the reader
    assert str(hub.rooms[D].doc.get("t", type=pycrdt.Text)) == "hello"


def test_token_expiry_is_announced_then_enforced_and_auth_extends_it() -> None:
    hub, clock = _hub(authenticate=authenticate)
    session = _connect(hub, "rw")
    _frames(session)
    clock.now = 1975.0  # 25 s before expiry
    hub.tick()
    (warning,) = _errors(session)
    assert warning.code == ErrorCode.TOKEN_EXPIRED and not warning.fatal
    hub.receive(session, encode_frame(Auth("ana-later")))
    clock.now = 2500.0
    hub.tick()
    assert session.close is None and _frames(session) == []
    # Another subject's token cannot take over the connection.
    hub.receive(session, encode_frame(Auth("eve")))
    assert session.close is not None and "same subject" in session.close.reason

    other = _connect(hub, "rw")  # expired already: refused at... its grant says 2000
    clock.now = 2500.0
    hub.tick()
    assert other.close is not None and ErrorCode.TOKEN_EXPIRED in other.close.reason


def test_a_connection_that_never_says_hello_is_closed_at_the_deadline() -> None:
    hub, clock = _hub(Limits(auth_timeout=10), authenticate=authenticate)
    silent = hub.open_session("slow-loris")
    clock.now += 9.9
    hub.tick()
    assert silent.close is None
    clock.now += 0.1
    hub.tick()
    assert silent.close is not None and ErrorCode.AUTH_TIMEOUT in silent.close.reason


def test_a_large_first_frame_is_refused_before_decoding() -> None:
    hub, _ = _hub(Limits(max_pre_auth_bytes=1024), authenticate=authenticate)
    session = hub.open_session("big")
    hub.receive(session, encode_frame(Hello(ReplicaId("r"), "x" * 2000)))
    assert session.close is not None and session.close.code == 1009


def test_rate_limits_close_the_flooding_connection_only() -> None:
    hub, clock = _hub(Limits(max_updates_per_second=10, max_bytes_per_second=0))
    calm = _connect(hub, None)
    flood = _connect(hub, None)
    _frames(calm), _frames(flood)
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=5)
    text = doc.get("t", type=pycrdt.Text)
    for seq in range(1, 12):
        before = doc.get_state()
        text.insert(0, "x")
        hub.receive(flood, encode_frame(Update(D, doc.get_update(before), seq)))
    assert flood.close is not None and flood.close.code == 1013
    assert ErrorCode.RATE_LIMITED in flood.close.reason
    assert hub.refusals[ErrorCode.RATE_LIMITED] == 1  # counted
    assert len([f for f in _frames(calm) if isinstance(f, Update)]) == 10
    clock.now += 1.0  # the calm one is unaffected
    hub.receive(calm, encode_frame(Update(D, _update("ok", 9), 1)))
    assert calm.close is None


def test_bytes_per_second_limit() -> None:
    hub, _ = _hub(
        Limits(
            max_frame=2048,
            max_queued_bytes=1 << 20,
            max_updates_per_second=0,
            max_bytes_per_second=2048,
        )
    )
    session = _connect(hub, None)
    hub.receive(session, encode_frame(Update(D, _update("a" * 1500, 1), 1)))
    assert session.close is None
    hub.receive(session, encode_frame(Update(D, _update("b" * 1500, 2), 2)))
    assert session.close is not None and ErrorCode.RATE_LIMITED in session.close.reason


def test_a_document_larger_than_the_limit_is_refused() -> None:
    hub, _ = _hub(Limits(max_frame=4096, max_queued_bytes=4096, max_doc_bytes=4096))
    session = _connect(hub, None)
    hub.receive(session, encode_frame(Update(D, _update("a" * 3000, 1), 1)))
    hub.written(hub.take_writes(), [1])
    _frames(session)
    hub.receive(session, encode_frame(Update(D, _update("b" * 2000, 2), 2)))
    (error,) = _errors(session)
    assert (error.code, error.seq) == (ErrorCode.DOCUMENT_TOO_LARGE, 2)
    assert hub.refusals == {ErrorCode.DOCUMENT_TOO_LARGE: 1}
    assert hub.writes_waiting == 0 and session.close is None


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="auth_timeout"):
        Limits(auth_timeout=0)
    with pytest.raises(ValueError, match="negative"):
        Limits(max_updates_per_second=-1)
    with pytest.raises(ValueError, match="max_doc_bytes"):
        Limits(max_doc_bytes=10)
