"""What one connection, and the relay as a whole, may do: the limits an operator
sets with ``crdtsync-relay`` flags (SECURITY.md lists them with their defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from crdtsync.sync.protocol import DEFAULT_MAX_DOCS, DEFAULT_MAX_FRAME

__all__ = ["Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may do on a relay, and what the relay takes on at once."""

    max_frame: int = DEFAULT_MAX_FRAME
    """Largest frame accepted (bytes)."""
    max_docs: int = DEFAULT_MAX_DOCS
    """Most documents one connection may subscribe to at once."""
    max_queued_bytes: int = 8 << 20
    """Fan-out bytes (updates and presence from others) waiting for a connection
    beyond which it is closed as a slow consumer. What the client asked for (its
    syncs) is not counted: that is sent with flow control."""
    max_pre_auth_bytes: int = 64 << 10
    """Bytes a client may send before it is authenticated: the HTTP request
    (request line and headers; past it, HTTP 431) and then the first frame
    (HELLO with its token) together."""
    auth_timeout: float = 10.0
    """Seconds a connection has to complete the HTTP handshake and then a valid
    HELLO (each); traffic does not extend it."""
    max_updates_per_second: float = 5000.0
    """UPDATE and AWARENESS frames per second per connection, with one second of
    burst (0: unlimited). Beyond: ERROR rate_limited and the connection is closed."""
    max_bytes_per_second: int = 32 << 20
    """Bytes per second per connection, with one second of burst (0: unlimited)."""
    max_doc_bytes: int = 256 << 20
    """Largest document (stored bytes: snapshot and log) the relay holds."""
    max_connections_per_address: int = 1000
    """Open connections from one client address (0: unlimited); more get HTTP 429.
    Probes (``/health``, ``/healthz``, ``/readyz``, ``/metrics``) are exempt."""
    sync_piece_bytes: int = 1 << 20
    """A sync answer larger than this is sent as pieces of about this size (each
    an update the client applies at once), one after another as the connection
    drains; a client that reconnects midway resumes where it stopped."""
    max_concurrent_syncs: int = 4
    """Syncs of more than one piece encoded and sent at once, over all
    connections (each holds about its document's size in memory); more wait
    their turn, and their clients stay SYNCING."""
    sync_stall_timeout: float = 30.0
    """Seconds a sync in progress may go without the client taking any of it;
    then the client is closed as a slow consumer (it stopped reading)."""
    max_handshakes: int = 1024
    """Connections still in the HTTP handshake, over all addresses (0: unlimited).
    Past it, the oldest one that has not sent its request yet is closed. The
    relay lowers it to a quarter of its open-file limit if that is smaller."""
    max_handshakes_per_address: int = 256
    """Connections still in the HTTP handshake from one address (0: unlimited);
    past it, that address's oldest one that has not sent its request is closed."""

    def __post_init__(self) -> None:
        if self.max_frame < 1024:
            raise ValueError(f"max_frame must be at least 1024 bytes, not {self.max_frame}")
        if self.max_docs < 1:
            raise ValueError(f"max_docs must be at least 1, not {self.max_docs}")
        if self.max_queued_bytes < self.max_frame:
            raise ValueError("max_queued_bytes must be at least max_frame")
        if self.max_pre_auth_bytes < 256:
            raise ValueError("max_pre_auth_bytes must be at least 256")
        for name in ("auth_timeout", "sync_stall_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        for name in ("max_updates_per_second", "max_bytes_per_second"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative (0 means unlimited)")
        if self.max_doc_bytes < self.max_frame:
            raise ValueError("max_doc_bytes must be at least max_frame")
        for name in (
            "max_connections_per_address",
            "max_handshakes",
            "max_handshakes_per_address",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative (0 means unlimited)")
        if self.sync_piece_bytes < 64:
            raise ValueError(f"sync_piece_bytes must be at least 64, not {self.sync_piece_bytes}")
        if self.max_concurrent_syncs < 1:
            raise ValueError("max_concurrent_syncs must be at least 1")
