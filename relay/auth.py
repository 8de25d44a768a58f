"""Access tokens: signed JWTs (PyJWT) naming a subject and the documents it may
read (``pattern:r``) or read and write (``pattern:rw``). No I/O beyond reading
key files.

A token carries ``sub`` (who), ``exp`` (until when), ``nbf``/``iat``, a ``kid``
header (which key signed it, for rotation) and ``docs``, a list of
``"<glob>:<r|rw>"`` strings. Globs use :func:`fnmatch.fnmatchcase` semantics on
document ids (``*`` also matches ``/``; case-sensitive).

Keys (:class:`KeyRing`): HS256 secrets by key id (``CRDTSYNC_SECRET`` or a
``--secret-file`` of ``kid=secret`` lines), and optionally EdDSA/ES256 public
keys (verification only) with their private keys for signing. Each key accepts
exactly its own algorithm, so ``alg: none`` and algorithm confusion (an HS256
token "signed" with a public key) are refused. PyJWT compares signatures in
constant time.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from crdtsync.errors import AuthError
from crdtsync.sync.protocol import ErrorCode

from .session import Authenticate

__all__ = [
    "ENV_SECRET",
    "MIN_SECRET_BYTES",
    "Grant",
    "Key",
    "KeyRing",
    "Permission",
    "authenticator",
    "issue_token",
    "load_keyring",
    "parse_doc_pattern",
    "verify_token",
]

ENV_SECRET = "CRDTSYNC_SECRET"
"""Environment variable holding one HS256 secret (or ``kid=secret``)."""
MIN_SECRET_BYTES = 32
"""Shortest HS256 secret accepted (RFC 7518 asks for at least the hash size)."""
DEFAULT_KID = "default"
MAX_TOKEN_DOCS = 256


class Permission(enum.Enum):
    """What a document pattern grants."""

    READ = "r"
    READ_WRITE = "rw"


def parse_doc_pattern(text: str) -> tuple[str, Permission]:
    """``"site-12/*:rw"`` -> ``("site-12/*", Permission.READ_WRITE)``.

    Raises ``ValueError`` unless it is ``<non-empty glob>:r`` or ``<glob>:rw``.
    """
    glob, sep, perm = text.rpartition(":")
    if not sep or not glob:
        raise ValueError(f"document pattern {text!r} is not '<glob>:r' or '<glob>:rw'")
    try:
        return glob, Permission(perm)
    except ValueError:
        raise ValueError(
            f"document pattern {text!r}: permission must be 'r' or 'rw', not {perm!r}"
        ) from None


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows (implements :class:`relay.session.Access`)."""

    subject: str
    expires_at: float | None
    patterns: tuple[tuple[str, Permission], ...]
    key_id: str
    not_before: float | None = None

    def can_read(self, doc_id: str) -> bool:
        """A pattern (``:r`` or ``:rw``) matches ``doc_id``."""
        return any(fnmatchcase(doc_id, glob) for glob, _ in self.patterns)

    def can_write(self, doc_id: str) -> bool:
        """An ``:rw`` pattern matches ``doc_id`` (the most permissive match wins)."""
        return any(
            perm is Permission.READ_WRITE and fnmatchcase(doc_id, glob)
            for glob, perm in self.patterns
        )


@dataclass(frozen=True, slots=True)
class Key:
    """One key of a :class:`KeyRing`: what verifies (and, if present, signs) tokens
    with key id ``kid``, and the only algorithm it accepts."""

    kid: str
    algorithm: str
    verify_with: Any
    sign_with: Any | None = None


@dataclass
class KeyRing:
    """Keys by key id. ``signing_kid`` signs new tokens (default: the first key
    that can sign)."""

    keys: dict[str, Key] = field(default_factory=dict)
    signing_kid: str | None = None

    def add_secret(self, kid: str, secret: str | bytes) -> None:
        """An HS256 secret (at least :data:`MIN_SECRET_BYTES` bytes)."""
        data = secret.encode() if isinstance(secret, str) else secret
        if len(data) < MIN_SECRET_BYTES:
            raise ValueError(
                f"the secret for key {kid!r} is {len(data)} bytes; at least "
                f"{MIN_SECRET_BYTES} are needed (e.g. `openssl rand -hex 32`)"
            )
        self._add(Key(kid, "HS256", data, data))

    def add_public_key(self, kid: str, pem: bytes, private_pem: bytes | None = None) -> None:
        """An Ed25519 (EdDSA) or P-256 (ES256) public key in PEM, and optionally its
        private key for signing."""
        public = load_pem_public_key(pem)
        if isinstance(public, ed25519.Ed25519PublicKey):
            algorithm = "EdDSA"
        elif isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1":
            algorithm = "ES256"
        else:
            raise ValueError(f"key {kid!r}: only Ed25519 (EdDSA) and P-256 (ES256) keys")
        private = load_pem_private_key(private_pem, password=None) if private_pem else None
        self._add(Key(kid, algorithm, public, private))

    def _add(self, key: Key) -> None:
        if not key.kid or "=" in key.kid:
            raise ValueError(f"bad key id {key.kid!r}")
        if key.kid in self.keys:
            raise ValueError(f"key id {key.kid!r} is given twice")
        self.keys[key.kid] = key

    def signing_key(self, kid: str | None = None) -> Key:
        """The key that signs new tokens: ``kid``, :attr:`signing_kid`, or the first
        key able to sign."""
        wanted = kid or self.signing_kid
        if wanted is not None:
            key = self.keys.get(wanted)
            if key is None:
                raise ValueError(f"no key with id {wanted!r}")
        else:
            key = next((k for k in self.keys.values() if k.sign_with is not None), None)
            if key is None:
                raise ValueError("no key can sign tokens (public keys only verify)")
        if key.sign_with is None:
            raise ValueError(f"key {key.kid!r} is a public key: it can only verify")
        return key


def load_keyring(
    secret_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> KeyRing | None:
    """The keys from ``secret_file`` (one ``kid=secret`` per line; ``#`` comments
    and blank lines are skipped) or else from ``$CRDTSYNC_SECRET`` (``secret`` or
    ``kid=secret``); None if neither is set. Raises ``ValueError`` with the line
    number for a malformed file, ``OSError`` if it cannot be read."""
    ring = KeyRing()
    if secret_file is not None:
        lines = Path(secret_file).read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            kid, sep, secret = text.partition("=")
            if not sep or not kid.strip() or not secret.strip():
                raise ValueError(f"{secret_file}, line {number}: expected 'kid=secret'")
            try:
                ring.add_secret(kid.strip(), secret.strip())
            except ValueError as exc:
                raise ValueError(f"{secret_file}, line {number}: {exc}") from exc
        if not ring.keys:
            raise ValueError(f"{secret_file} holds no keys")
        return ring
    value = (os.environ if env is None else env).get(ENV_SECRET)
    if not value:
        return None
    kid, sep, secret = value.partition("=")
    if sep and kid and "=" not in kid and len(secret) >= MIN_SECRET_BYTES:
        ring.add_secret(kid, secret)
    else:
        ring.add_secret(DEFAULT_KID, value)
    return ring


def issue_token(
    keyring: KeyRing,
    subject: str,
    docs: Sequence[str],
    ttl: float,
    *,
    kid: str | None = None,
    now: float | None = None,
) -> str:
    """A token for ``subject`` granting ``docs`` (``"glob:r"`` / ``"glob:rw"``) for
    ``ttl`` seconds, signed with ``kid`` (default: the keyring's signing key)."""
    if not subject:
        raise ValueError("the subject must not be empty")
    if ttl <= 0:
        raise ValueError(f"ttl must be positive, not {ttl}")
    if not docs:
        raise ValueError("a token needs at least one document pattern")
    for pattern in docs:
        parse_doc_pattern(pattern)
    key = keyring.signing_key(kid)
    signer: Any = key.sign_with  # checked by signing_key()
    issued = time.time() if now is None else now
    claims = {
        "sub": subject,
        "iat": int(issued),
        "nbf": int(issued),
        "exp": int(issued + ttl),
        "docs": list(docs),
    }
    return jwt.encode(claims, signer, algorithm=key.algorithm, headers={"kid": key.kid})


def verify_token(
    keyring: KeyRing, token: str | None, *, now: float | None = None, leeway: float = 0
) -> Grant:
    """Check ``token`` and return what it grants.

    Raises :class:`~crdtsync.errors.AuthError` whose ``code`` says why:
    ``token_required``, ``token_invalid`` (malformed, tampered, bad signature,
    missing or bad claims), ``token_expired``, ``token_not_yet_valid``,
    ``unknown_key``, ``wrong_algorithm``.
    """
    if not token:
        raise AuthError(ErrorCode.TOKEN_REQUIRED, "this relay requires a token")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError as exc:
        raise AuthError(ErrorCode.TOKEN_INVALID, f"malformed token: {exc}") from exc
    kid = header.get("kid")
    key = keyring.keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise AuthError(ErrorCode.UNKNOWN_KEY, f"no key with id {kid!r}")
    if header.get("alg") != key.algorithm:
        raise AuthError(
            ErrorCode.WRONG_ALGORITHM,
            f"key {kid!r} accepts {key.algorithm}, not {header.get('alg')!r}",
        )
    clock = time.time() if now is None else now
    try:
        claims = jwt.decode(
            token,
            key.verify_with,
            algorithms=[key.algorithm],
            # Times are checked below against ``now`` (testable, one clock).
            options={
                "require": ["sub", "exp", "docs"],
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.InvalidAlgorithmError as exc:
        raise AuthError(ErrorCode.WRONG_ALGORITHM, str(exc)) from exc
    except jwt.InvalidTokenError as exc:
        raise AuthError(ErrorCode.TOKEN_INVALID, str(exc)) from exc
    expires = claims["exp"]
    not_before = claims.get("nbf")
    if not isinstance(expires, int | float) or isinstance(expires, bool):
        raise AuthError(ErrorCode.TOKEN_INVALID, "'exp' must be a number")
    if not_before is not None and (
        not isinstance(not_before, int | float) or isinstance(not_before, bool)
    ):
        raise AuthError(ErrorCode.TOKEN_INVALID, "'nbf' must be a number")
    if clock >= expires + leeway:
        raise AuthError(ErrorCode.TOKEN_EXPIRED, f"the token expired at {expires}")
    if not_before is not None and clock + leeway < not_before:
        raise AuthError(ErrorCode.TOKEN_NOT_YET_VALID, f"the token is valid from {not_before}")
    subject, docs = claims["sub"], claims["docs"]
    if not isinstance(subject, str) or not subject:
        raise AuthError(ErrorCode.TOKEN_INVALID, "'sub' must be a non-empty string")
    if (
        not isinstance(docs, list)
        or len(docs) > MAX_TOKEN_DOCS
        or not all(isinstance(d, str) for d in docs)
    ):
        raise AuthError(ErrorCode.TOKEN_INVALID, "'docs' must be a list of 'glob:r|rw' strings")
    try:
        patterns = tuple(parse_doc_pattern(d) for d in docs)
    except ValueError as exc:
        raise AuthError(ErrorCode.TOKEN_INVALID, str(exc)) from exc
    return Grant(subject, float(expires), patterns, key.kid, not_before)


def authenticator(keyring: KeyRing, *, leeway: float = 0) -> Authenticate:
    """The relay's token check over ``keyring`` (for ``Relay(authenticate=...)``)."""

    def authenticate(token: str | None) -> Grant:
        return verify_token(keyring, token, leeway=leeway)

    return authenticate
