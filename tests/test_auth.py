"""Access tokens (``relay.auth``): every way a token is refused, patterns, rotation,
public keys, and the ``crdtsync-relay token`` command. Fixed clocks, no sleeps."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from crdtsync.errors import AuthError
from crdtsync.sync.protocol import ErrorCode
from relay.auth import (
    ENV_SECRET,
    KeyRing,
    Permission,
    issue_token,
    load_keyring,
    parse_doc_pattern,
    verify_token,
)

NOW = 1_800_000_000.0
SECRET = "s" * 40
OTHER = "o" * 40
ROOT = Path(__file__).resolve().parent.parent


def ring(**secrets: str) -> KeyRing:
    keys = KeyRing()
    for kid, secret in (secrets or {"k1": SECRET}).items():
        keys.add_secret(kid, secret)
    return keys


def token(
    keys: KeyRing | None = None, docs: tuple[str, ...] = ("site-12/*:rw",), **kw: float
) -> str:
    return issue_token(keys or ring(), "ana", list(docs), kw.get("ttl", 60), now=kw.get("now", NOW))


def refused(keys: KeyRing, value: str | None, code: str, now: float = NOW) -> None:
    with pytest.raises(AuthError) as info:
        verify_token(keys, value, now=now)
    assert info.value.code == code, info.value


def test_a_good_token_grants_its_patterns() -> None:
    grant = verify_token(ring(), token(docs=("site-12/*:rw", "templates/*:r")), now=NOW + 1)
    assert (grant.subject, grant.key_id, grant.expires_at) == ("ana", "k1", NOW + 60)
    assert grant.can_write("site-12/a") and grant.can_write("site-12/a/b")  # fnmatch: * spans /
    assert grant.can_read("templates/x") and not grant.can_write("templates/x")
    assert not grant.can_read("Site-12/a")  # case-sensitive
    assert not grant.can_read("site-13/a")


def test_the_most_permissive_pattern_wins() -> None:
    grant = verify_token(ring(), token(docs=("a/*:r", "a/b:rw")), now=NOW)
    assert grant.can_write("a/b") and not grant.can_write("a/c")


def test_expired_and_not_yet_valid() -> None:
    keys = ring()
    refused(keys, token(keys), ErrorCode.TOKEN_EXPIRED, now=NOW + 60)
    refused(keys, token(keys, now=NOW + 100), ErrorCode.TOKEN_NOT_YET_VALID)


def test_missing_garbage_and_tampered_tokens() -> None:
    keys = ring()
    refused(keys, None, ErrorCode.TOKEN_REQUIRED)
    refused(keys, "", ErrorCode.TOKEN_REQUIRED)
    refused(keys, "not a token", ErrorCode.TOKEN_INVALID)
    header, payload, signature = token(keys).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["docs"] = ["*:rw"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    refused(keys, f"{header}.{forged}.{signature}", ErrorCode.TOKEN_INVALID)
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    refused(keys, f"{header}.{payload}.{flipped}", ErrorCode.TOKEN_INVALID)


def test_wrong_key_unknown_key_and_wrong_algorithm() -> None:
    keys = ring()
    refused(keys, token(ring(k1=OTHER)), ErrorCode.TOKEN_INVALID)  # same kid, other secret
    refused(keys, token(ring(k9=SECRET)), ErrorCode.UNKNOWN_KEY)
    claims = {"sub": "ana", "exp": NOW + 60, "docs": ["*:rw"]}
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": "k1"})
    refused(keys, unsigned, ErrorCode.WRONG_ALGORITHM)
    hs512 = jwt.encode(claims, SECRET * 2, algorithm="HS512", headers={"kid": "k1"})
    refused(keys, hs512, ErrorCode.WRONG_ALGORITHM)


def test_algorithm_confusion_with_a_public_key_is_refused() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    keys = KeyRing()
    keys.add_public_key("ed", public_pem)
    # An HS256 token "signed" with the public key's bytes as the secret.
    claims = {"sub": "eve", "exp": NOW + 60, "docs": ["*:rw"]}
    # (PyJWT refuses to make one, so it is assembled by hand.)
    signing_input = b".".join(
        _b64(json.dumps(part).encode())
        for part in ({"alg": "HS256", "kid": "ed", "typ": "JWT"}, claims)
    )
    mac = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    confused = (signing_input + b"." + _b64(mac)).decode()
    refused(keys, confused, ErrorCode.WRONG_ALGORITHM)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def test_missing_and_bad_claims() -> None:
    keys = ring()
    for claims in (
        {"exp": NOW + 60, "docs": ["*:rw"]},
        {"sub": "ana", "docs": ["*:rw"]},
        {"sub": "ana", "exp": NOW + 60},
        {"sub": "ana", "exp": NOW + 60, "docs": ["no-permission"]},
        {"sub": "ana", "exp": NOW + 60, "docs": "*:rw"},
        {"sub": "", "exp": NOW + 60, "docs": ["*:rw"]},
    ):
        bad = jwt.encode(claims, SECRET, algorithm="HS256", headers={"kid": "k1"})
        refused(keys, bad, ErrorCode.TOKEN_INVALID)


@pytest.mark.parametrize("text", ["", ":rw", "a", "a:w", "a:rwx", "a/*:"])
def test_bad_patterns(text: str) -> None:
    with pytest.raises(ValueError, match="pattern"):
        parse_doc_pattern(text)


def test_patterns_parse() -> None:
    assert parse_doc_pattern("site-12/*:rw") == ("site-12/*", Permission.READ_WRITE)
    assert parse_doc_pattern("a:b:r") == ("a:b", Permission.READ)


@pytest.mark.parametrize("kind", ["ed25519", "p256"])
def test_public_keys_verify_tokens_signed_with_the_private_key(kind: str) -> None:
    private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey = (
        ed25519.Ed25519PrivateKey.generate()
        if kind == "ed25519"
        else ec.generate_private_key(ec.SECP256R1())
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    signer = KeyRing()
    signer.add_public_key("pk", public_pem, private_pem)
    verifier = KeyRing()
    verifier.add_public_key("pk", public_pem)
    grant = verify_token(verifier, token(signer), now=NOW)
    assert grant.subject == "ana"
    with pytest.raises(ValueError, match="only verify"):
        token(verifier)


def test_rotation_by_key_id(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# rotation\nold={SECRET}\n\nnew={OTHER}\n")
    both = load_keyring(keys_file)
    assert both is not None
    old_token = issue_token(both, "ana", ["*:r"], 60, kid="old", now=NOW)
    assert verify_token(both, old_token, now=NOW).key_id == "old"
    both.signing_kid = "new"
    assert jwt.get_unverified_header(issue_token(both, "ana", ["*:r"], 60, now=NOW))["kid"] == "new"
    keys_file.write_text(f"new={OTHER}\n")
    only_new = load_keyring(keys_file)
    assert only_new is not None
    refused(only_new, old_token, ErrorCode.UNKNOWN_KEY)


def test_key_loading_errors(tmp_path: Path) -> None:
    bad = tmp_path / "keys"
    bad.write_text("k1=short\n")
    with pytest.raises(ValueError, match=r"line 1: .*at least 32"):
        load_keyring(bad)
    bad.write_text(f"k1={SECRET}\nnonsense\n")
    with pytest.raises(ValueError, match="line 2"):
        load_keyring(bad)
    bad.write_text(f"k1={SECRET}\nk1={OTHER}\n")
    with pytest.raises(ValueError, match="twice"):
        load_keyring(bad)
    assert load_keyring(None, env={}) is None
    from_env = load_keyring(None, env={ENV_SECRET: SECRET})
    assert from_env is not None and list(from_env.keys) == ["default"]
    named = load_keyring(None, env={ENV_SECRET: f"k7={SECRET}"})
    assert named is not None and list(named.keys) == ["k7"]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != ENV_SECRET} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "relay", "token", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_token_command_prints_the_token_alone(tmp_path: Path) -> None:
    patterns = ("--docs", "site-12/*:rw", "--docs", "templates/*:r")
    done = _cli("--sub", "inspector-7", *patterns, "--ttl", "3600", env={ENV_SECRET: SECRET})
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    grant = verify_token(load_keyring(None, env={ENV_SECRET: SECRET}) or KeyRing(), line)
    assert grant.subject == "inspector-7"
    assert grant.can_write("site-12/x") and not grant.can_write("templates/x")
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"a={SECRET}\nb={OTHER}\n")
    done = _cli("--secret-file", str(keys_file), "--kid", "b", "--sub", "s", "--docs", "*:r")
    assert done.returncode == 0, done.stderr
    assert jwt.get_unverified_header(done.stdout.strip())["kid"] == "b"


def test_token_command_errors() -> None:
    done = _cli("--sub", "s", "--docs", "*:rw")
    assert done.returncode == 2 and "no key" in done.stderr and done.stdout == ""
    done = _cli("--sub", "s", "--docs", "nopattern", env={ENV_SECRET: SECRET})
    assert done.returncode == 2 and "pattern" in done.stderr and done.stdout == ""
