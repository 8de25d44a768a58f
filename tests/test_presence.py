"""The relay's presence table (:mod:`relay.presence`): the awareness codec, y-protocols'
clock rules, and removal with the connection or after the timeout."""

from __future__ import annotations

import json

import pytest

from relay.presence import AwarenessEntry, Presence, decode_awareness, encode_awareness


def _awareness(client_id: int, clock: int, state: object) -> bytes:
    return encode_awareness([AwarenessEntry(client_id, clock, json.dumps(state))])


def test_awareness_codec_round_trip_and_validation() -> None:
    entries = [AwarenessEntry(1, 3, '{"name":"ana"}'), AwarenessEntry(2**32 - 1, 0, "null")]
    assert decode_awareness(encode_awareness(entries)) == entries
    assert entries[1].removed
    with pytest.raises(ValueError, match="not JSON"):
        decode_awareness(encode_awareness([AwarenessEntry(1, 1, "{oops")]))
    with pytest.raises(ValueError, match="truncated"):
        decode_awareness(b"\x01\x01\x01\x09{}")
    with pytest.raises(ValueError, match="trailing"):
        decode_awareness(encode_awareness(entries) + b"\x00")


def test_presence_follows_the_y_protocols_clock_rules() -> None:
    presence = Presence(timeout=30)
    a, b = object(), object()
    assert presence.apply(decode_awareness(_awareness(1, 1, {"n": 1})), a, 0) is not None
    # An older or repeated clock changes nothing and is not forwarded.
    assert presence.apply(decode_awareness(_awareness(1, 1, {"n": 0})), b, 1) is None
    assert presence.apply(decode_awareness(_awareness(1, 0, {"n": 0})), b, 1) is None
    assert presence.states() == {1: '{"n": 1}'}
    # null at the same clock removes.
    removal = encode_awareness([AwarenessEntry(1, 1, "null")])
    assert presence.apply(decode_awareness(removal), a, 2) == removal
    assert presence.states() == {}


def test_presence_is_removed_with_its_connection_and_after_the_timeout() -> None:
    presence = Presence(timeout=30)
    a, b = object(), object()
    presence.apply(decode_awareness(_awareness(1, 4, {"n": "a"})), a, 0)
    presence.apply(decode_awareness(_awareness(2, 0, {"n": "b"})), b, 10)
    gone = presence.remove_owner(a)
    assert gone is not None and decode_awareness(gone) == [AwarenessEntry(1, 4, "null")]
    assert presence.remove_owner(a) is None
    # The client comes back with the same clock (a Yjs client does): it is taken.
    assert presence.apply(decode_awareness(_awareness(1, 4, {"n": "a"})), a, 11) is not None
    assert presence.expire(39) is None
    expired = presence.expire(40)
    assert expired is not None and [e.client_id for e in decode_awareness(expired)] == [2]
    assert set(presence.states()) == {1}
