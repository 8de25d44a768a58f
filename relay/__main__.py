"""The ``crdtsync-relay`` command (also ``python -m relay``).

    crdtsync-relay --host 127.0.0.1 --port 8765 --store sqlite:///relay-data/relay.db
    crdtsync-relay --port 8765 --store redis://127.0.0.1:6379/0 --require-auth  # several relays
    crdtsync-relay --require-auth --secret-file keys ...     # tokens required
    crdtsync-relay token --sub inspector-7 --docs 'site-12/*:rw' --ttl 3600
    crdtsync-relay admin --store URL list | info DOC | export DOC | import DOC | compact DOC
    crdtsync-relay admin --store URL verify

Every flag can also come from the environment (``CRDTSYNC_PORT=8765``...; see
:mod:`relay.config`).

Runs until SIGTERM or SIGINT, then shuts down gracefully: stops accepting,
stores (and acknowledges) what was received, closes connections with 1012
(service restart: clients move to another relay at once).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys
from collections.abc import Sequence

from crdtsync import __version__
from crdtsync.errors import StoreError
from crdtsync.sync.protocol import DEFAULT_MAX_DOCS, DEFAULT_MAX_FRAME

from .auth import ENV_SECRET, KeyRing, authenticator, issue_token, load_keyring
from .config import parse_args
from .limits import Limits
from .logs import configure_logging
from .offline import OfflineOptions
from .server import DEFAULT_STORE, Relay
from .storage import open_storage

__all__ = ["main"]

logger = logging.getLogger("relay")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crdtsync-relay",
        description="Run the crdtsync relay: a websocket server that stores, acknowledges and "
        "forwards CRDT updates between replicas.",
        epilog="Store URLs: sqlite:///relative/path.db, sqlite:////absolute/path.db, "
        "redis://[:password@]host:port/db (several relays share it; option ?prefix=name), "
        "memory:// (add ?synchronous=normal to a sqlite URL to skip the fsync per commit). "
        "Every flag can also be set in the environment: CRDTSYNC_ and the flag's name in "
        "capitals (CRDTSYNC_MAX_FRAME=...). Subcommands: 'crdtsync-relay token --help', "
        "'crdtsync-relay admin --help'.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8765, help="port (default: %(default)s; 0 = any free)"
    )
    parser.add_argument("--store", default=DEFAULT_STORE, help="storage URL (default: %(default)s)")
    parser.add_argument(
        "--redis-volatile",
        action="store_true",
        help="accept a Redis that does not fsync every write before replying (appendonly "
        "yes + appendfsync always); an ACK then promises only what that Redis keeps "
        "(README: 'Running several relays on Redis')",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=10.0,
        help="on SIGTERM, seconds to store what was received before closing connections "
        "with 1012 anyway (default: %(default)s)",
    )
    parser.add_argument(
        "--max-frame",
        type=int,
        default=DEFAULT_MAX_FRAME,
        help="largest frame accepted, bytes (default: %(default)s)",
    )
    parser.add_argument(
        "--max-docs",
        type=int,
        default=DEFAULT_MAX_DOCS,
        help="most documents per connection (default: %(default)s)",
    )
    parser.add_argument(
        "--max-queued",
        type=int,
        default=Limits().max_queued_bytes,
        help="fan-out bytes (others' updates) queued for one connection before it is closed "
        "as a slow consumer; its own syncs are not counted (default: %(default)s)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=60.0,
        help="seconds a document without subscribers stays loaded (default: %(default)s)",
    )
    parser.add_argument(
        "--commit-delay",
        type=float,
        default=0.002,
        help="seconds the storage writer waits so more updates share one commit "
        "(delays ACKs, never fan-out; default: %(default)s)",
    )
    defaults = Limits()
    parser.add_argument(
        "--max-updates-per-second",
        type=float,
        default=defaults.max_updates_per_second,
        help="updates (and awareness messages) per second per connection, one second of "
        "burst; beyond, ERROR rate_limited and close (0 = unlimited; default: %(default)s)",
    )
    parser.add_argument(
        "--max-bytes-per-second",
        type=int,
        default=defaults.max_bytes_per_second,
        help="bytes per second per connection (0 = unlimited; default: %(default)s)",
    )
    parser.add_argument(
        "--max-doc-bytes",
        type=int,
        default=defaults.max_doc_bytes,
        help="largest document the relay holds, stored bytes (default: %(default)s)",
    )
    parser.add_argument(
        "--max-connections-per-address",
        type=int,
        default=defaults.max_connections_per_address,
        help="open connections from one client address (0 = unlimited; default: %(default)s)",
    )
    parser.add_argument(
        "--auth-timeout",
        type=float,
        default=defaults.auth_timeout,
        help="seconds a connection has to finish its HTTP handshake, then to send a valid "
        "HELLO (default: %(default)s)",
    )
    parser.add_argument(
        "--max-pre-auth-bytes",
        type=int,
        default=defaults.max_pre_auth_bytes,
        help="bytes a client may send before HELLO is accepted: HTTP request line and "
        "headers (431 past it) and the first frame together (default: %(default)s)",
    )
    parser.add_argument(
        "--sync-piece-bytes",
        type=int,
        default=defaults.sync_piece_bytes,
        help="a sync answer larger than this is sent in pieces of about this size as the "
        "connection drains (default: %(default)s)",
    )
    parser.add_argument(
        "--max-concurrent-syncs",
        type=int,
        default=defaults.max_concurrent_syncs,
        help="sync answers of more than one piece sent at once, over all connections; "
        "others wait their turn (default: %(default)s)",
    )
    parser.add_argument(
        "--sync-stall-timeout",
        type=float,
        default=defaults.sync_stall_timeout,
        help="seconds a client may take nothing of its sync before it is closed as a slow "
        "consumer (default: %(default)s)",
    )
    parser.add_argument(
        "--max-handshakes",
        type=int,
        default=defaults.max_handshakes,
        help="connections still in the HTTP handshake, in all; past it the oldest silent one "
        "is closed; lowered to a quarter of the open-file limit (0 = unlimited; "
        "default: %(default)s)",
    )
    parser.add_argument(
        "--max-handshakes-per-address",
        type=int,
        default=defaults.max_handshakes_per_address,
        help="connections still in the HTTP handshake from one address (0 = unlimited; "
        "default: %(default)s)",
    )
    parser.add_argument(
        "--compression",
        action="store_true",
        help="offer permessage-deflate (the frame limit applies after decompression)",
    )
    offline = parser.add_argument_group("offline apps: /fetch and /attachments/ (see README.md)")
    offline.add_argument(
        "--max-fetch-bytes",
        type=int,
        default=OfflineOptions().max_fetch_bytes,
        help="largest /fetch response; larger documents come in pages (default: %(default)s)",
    )
    offline.add_argument(
        "--max-attachment-bytes",
        type=int,
        default=OfflineOptions().max_attachment_bytes,
        help="largest attachment kept (default: %(default)s)",
    )
    offline.add_argument(
        "--attachments",
        default=None,
        metavar="DIR",
        help="directory of attachment files (default: beside the SQLite store, "
        "e.g. relay.db.attachments/)",
    )
    auth = parser.add_argument_group("access (see SECURITY.md)")
    auth.add_argument(
        "--require-auth",
        action="store_true",
        help=f"require a signed token from every client (keys: --secret-file or ${ENV_SECRET})",
    )
    auth.add_argument(
        "--secret-file",
        default=None,
        help="file of HS256 keys, one 'kid=secret' line per key (for rotation)",
    )
    auth.add_argument(
        "--public-key",
        action="append",
        default=[],
        metavar="KID=PEM_FILE",
        help="an Ed25519 (EdDSA) or P-256 (ES256) public key that verifies tokens (repeatable)",
    )
    auth.add_argument(
        "--no-authorship",
        action="store_true",
        help="with tokens, do not check that writers use only their own client ids",
    )
    auth.add_argument(
        "--insecure",
        action="store_true",
        help="allow an open relay (no tokens) on a non-loopback interface",
    )
    auth.add_argument("--tls-cert", default=None, help="TLS certificate chain (PEM): serve wss://")
    auth.add_argument("--tls-key", default=None, help="TLS private key (PEM)")
    auth.add_argument(
        "--origin",
        action="append",
        default=None,
        help="allowed browser Origin (repeatable; default: any). Clients without an "
        "Origin header (Python, Node) are always allowed",
    )
    parser.add_argument(
        "--relay-id", default=None, help="name in logs and WELCOME (default: random)"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default: %(default)s",
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text, or one JSON object per line for log shippers (default: %(default)s)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


async def _serve(relay: Relay, ready: asyncio.Event | None = None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await relay.start()
    print(f"crdtsync relay listening on {relay.url} (store {relay.storage.url})", flush=True)
    if ready is not None:
        ready.set()
    await stop.wait()
    logger.info("signal received, shutting down")
    await relay.stop()


def _token_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crdtsync-relay token",
        description="Print a signed access token (and nothing else) on stdout.",
        epilog=f"Keys: --secret-file, else ${ENV_SECRET}. Patterns are shell-style globs on "
        "document ids (fnmatch, case-sensitive) with :r (read) or :rw (read and write).",
    )
    parser.add_argument("--sub", required=True, help="the subject (who the token is for)")
    parser.add_argument(
        "--docs",
        action="append",
        required=True,
        metavar="PATTERN:r|rw",
        help="a document pattern and permission, e.g. 'site-12/*:rw' (repeatable)",
    )
    parser.add_argument(
        "--ttl", type=float, default=3600.0, help="seconds until it expires (default: %(default)s)"
    )
    parser.add_argument("--kid", default=None, help="the key id to sign with (default: first)")
    parser.add_argument("--secret-file", default=None, help="file of 'kid=secret' lines")
    return parser


def _token(argv: Sequence[str]) -> int:
    args = _token_parser().parse_args(argv)
    try:
        keyring = load_keyring(args.secret_file)
        if keyring is None:
            print(
                f"crdtsync-relay token: no key: set ${ENV_SECRET} or pass --secret-file",
                file=sys.stderr,
            )
            return 2
        print(issue_token(keyring, args.sub, args.docs, args.ttl, kid=args.kid))
    except (ValueError, OSError) as exc:
        print(f"crdtsync-relay token: {exc}", file=sys.stderr)
        return 2
    return 0


def _keys(args: argparse.Namespace) -> KeyRing | None:
    keyring = load_keyring(args.secret_file)
    for item in args.public_key:
        kid, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--public-key {item!r}: expected KID=PEM_FILE")
        with open(path, "rb") as pem:
            keyring = keyring or KeyRing()
            keyring.add_public_key(kid, pem.read())
    return keyring


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``crdtsync-relay`` and ``python -m relay``."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["token"]:
        return _token(arguments[1:])
    if arguments[:1] == ["admin"]:
        from .admin import main as admin  # noqa: PLC0415 - only for the subcommand

        return admin(arguments[1:])
    args = parse_args(_parser(), arguments)
    configure_logging(args.log_level, args.log_format)
    try:
        limits = Limits(
            max_frame=args.max_frame,
            max_docs=args.max_docs,
            max_queued_bytes=args.max_queued,
            max_pre_auth_bytes=args.max_pre_auth_bytes,
            auth_timeout=args.auth_timeout,
            max_updates_per_second=args.max_updates_per_second,
            max_bytes_per_second=args.max_bytes_per_second,
            max_doc_bytes=args.max_doc_bytes,
            max_connections_per_address=args.max_connections_per_address,
            sync_piece_bytes=args.sync_piece_bytes,
            max_concurrent_syncs=args.max_concurrent_syncs,
            sync_stall_timeout=args.sync_stall_timeout,
            max_handshakes=args.max_handshakes,
            max_handshakes_per_address=args.max_handshakes_per_address,
        )
        keyring = _keys(args) if args.require_auth else None
        if args.require_auth and keyring is None:
            raise ValueError(f"--require-auth needs keys: --secret-file or ${ENV_SECRET}")
        context = None
        if args.tls_cert or args.tls_key:
            if not (args.tls_cert and args.tls_key):
                raise ValueError("--tls-cert and --tls-key go together")
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(args.tls_cert, args.tls_key)
        relay = Relay(
            open_storage(args.store, redis_volatile=args.redis_volatile),
            host=args.host,
            port=args.port,
            limits=limits,
            relay_id=args.relay_id,
            idle_timeout=args.idle_timeout,
            commit_delay=args.commit_delay,
            compression=args.compression,
            authenticate=authenticator(keyring) if keyring is not None else None,
            authorship=False if args.no_authorship else None,
            insecure=args.insecure,
            ssl_context=context,
            origins=args.origin,
            drain_timeout=args.drain_timeout,
            offline=OfflineOptions(
                max_fetch_bytes=args.max_fetch_bytes,
                max_attachment_bytes=args.max_attachment_bytes,
                attachments=args.attachments,
            ),
        )
        asyncio.run(_serve(relay))
    except ValueError as exc:
        print(f"crdtsync-relay: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"crdtsync-relay: storage {args.store}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"crdtsync-relay: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
