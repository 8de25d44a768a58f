"""The relay's Prometheus metrics (``GET /metrics``, prometheus-client's text format).

Each :class:`RelayMetrics` has its own registry (several relays in one process do
not mix their figures). Counters and gauges are read from the hub, the
persistence and the storage when scraped (nothing is counted twice, nothing
costs anything between scrapes); three histograms are observed as things happen:
ACK latency (update received to ACK queued), storage commit latency and, on
Redis, the health ping's round trip.

Names (all prefixed ``crdtsync_relay_``): ``connections{protocol}``, ``rooms``,
``rooms_loading``, ``updates_received_total``, ``updates_stored_total``,
``updates_fanned_out_total``, ``remote_updates_total``, ``bytes_received_total``,
``bytes_sent_total``, ``refusals_total{code}``, ``queued_writes``,
``queued_bytes``, ``ready``, ``storage_unavailable``, ``followed_documents``,
``ack_latency_seconds``, ``storage_commit_seconds``,
``redis_round_trip_seconds``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .persistence import Persistence
from .room import RoomState, Write
from .rooms import Hub

__all__ = ["RelayMetrics"]

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class RelayMetrics(Collector):
    """The metrics of one relay; ``ready()`` says whether it takes work (``/readyz``)."""

    def __init__(self, hub: Hub, persistence: Persistence, ready: Callable[[], bool]) -> None:
        self.hub = hub
        self.persistence = persistence
        self.ready = ready
        self.registry = CollectorRegistry(auto_describe=True)
        self.ack_latency = Histogram(
            "crdtsync_relay_ack_latency_seconds",
            "Seconds from an update's arrival to its ACK (stored)",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.commit_latency = Histogram(
            "crdtsync_relay_storage_commit_seconds",
            "Seconds one storage commit (group of updates) took",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.redis_round_trip = Histogram(
            "crdtsync_relay_redis_round_trip_seconds",
            "Seconds a Redis health ping took (Redis storage only)",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(self)
        persistence.on_commit = self._committed
        storage = persistence.storage
        if hasattr(storage, "on_round_trip"):
            storage.on_round_trip = self.redis_round_trip.observe

    def _committed(self, seconds: float, writes: Sequence[Write]) -> None:
        self.commit_latency.observe(seconds)
        now = self.hub.clock()
        observe = self.ack_latency.observe
        for write in writes:
            if write.sender is not None and write.seq is not None:
                observe(now - write.received)

    def render(self) -> bytes:
        """Every metric in the text exposition format."""
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        """The figures read at scrape time (prometheus-client's collector protocol)."""
        hub = self.hub
        connections = GaugeMetricFamily(
            "crdtsync_relay_connections", "Open connections", labels=["protocol"]
        )
        wires = Counter(session.wire for session in hub.sessions)
        for wire in ("native", "yjs"):
            connections.add_metric([wire], wires.get(wire, 0))
        yield connections
        loading = sum(room.state is RoomState.LOADING for room in hub.rooms.values())
        yield GaugeMetricFamily("crdtsync_relay_rooms", "Rooms loaded", len(hub.rooms) - loading)
        yield GaugeMetricFamily("crdtsync_relay_rooms_loading", "Rooms being loaded", loading)
        for name, help_text, value in (
            ("updates_received", "Updates received from clients", hub.updates_received),
            ("updates_stored", "Updates stored", hub.updates_stored),
            ("updates_fanned_out", "Updates sent on to subscribers", hub.deliveries),
            ("remote_updates", "Updates other relay processes stored", hub.remote_updates),
            ("bytes_received", "Bytes received from clients", hub.bytes_received),
            ("bytes_sent", "Bytes sent to clients", hub.bytes_sent),
        ):
            yield CounterMetricFamily(f"crdtsync_relay_{name}", help_text, value)
        refusals = CounterMetricFamily(
            "crdtsync_relay_refusals", "ERROR codes sent to clients", labels=["code"]
        )
        for code, count in sorted(hub.refusals.items()):
            refusals.add_metric([code], count)
        yield refusals
        persistence = self.persistence
        storage = persistence.storage
        for name, help_text, number in (
            ("queued_writes", "Updates waiting for a storage commit", persistence.writes_waiting),
            ("queued_bytes", "Bytes queued for connections, not yet written", hub.queued_bytes),
            ("ready", "1 while the relay takes work (/readyz)", int(self.ready())),
            (
                "storage_unavailable",
                "1 while storage is out of reach and updates wait",
                int(persistence.unavailable),
            ),
            (
                "followed_documents",
                "Documents whose other relays' updates this relay receives",
                getattr(storage, "following", 0),
            ),
        ):
            yield GaugeMetricFamily(f"crdtsync_relay_{name}", help_text, number)
