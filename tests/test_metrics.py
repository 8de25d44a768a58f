"""relay.metrics: /metrics in Prometheus' text format, with the figures the issue
names, read from a relay that served real clients (native and Yjs), and the
token rule when the relay requires tokens."""

from __future__ import annotations

import asyncio
import http.client
from pathlib import Path

import pycrdt
from prometheus_client.parser import text_string_to_metric_families

from crdtsync import Replica
from crdtsync.ids import DocId
from relay.auth import KeyRing, authenticator, issue_token
from relay.http import metrics_need_token
from relay.server import Relay
from relay.storage.redis import RedisStorage

from .relay_helpers import eventually

D = DocId("doc")


def scrape(relay: Relay, token: str | None = None) -> tuple[int, str, dict[str, float]]:
    """GET /metrics: status, content type, and every sample by name{labels}."""
    connection = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=10)
    try:
        connection.request(
            "GET", "/metrics", headers={"Authorization": f"Bearer {token}"} if token else {}
        )
        response = connection.getresponse()
        body = response.read().decode()
        kind = response.getheader("Content-Type") or ""
    finally:
        connection.close()
    samples: dict[str, float] = {}
    if response.status == 200:
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return response.status, kind, samples


async def test_metrics_after_real_traffic(tmp_path: Path) -> None:
    async with Relay(f"sqlite:///{tmp_path}/relay.db", port=0) as relay:
        a, b = Replica(tmp_path / "a.db"), Replica(tmp_path / "b.db")
        try:
            form = a.open(D).get("m", type=pycrdt.Map)
            b.open(D)
            await a.connect(relay.url)
            await b.connect(relay.url)
            await a.wait_synced(D, timeout=30)
            await b.wait_synced(D, timeout=30)
            for n in range(5):  # live: one UPDATE each
                form[f"k{n}"] = n
            await a.wait_synced(D, timeout=30)
            await eventually(b.open(D), lambda: len(b.open(D).get("m", type=pycrdt.Map)) == 5)
            status, kind, samples = await asyncio.to_thread(scrape, relay)
        finally:
            for replica in (a, b):
                await replica.disconnect()
                replica.close()
    assert status == 200 and kind.startswith("text/plain; version=0.0.4")
    assert samples["crdtsync_relay_connections{protocol=native}"] == 2
    assert samples["crdtsync_relay_connections{protocol=yjs}"] == 0
    assert samples["crdtsync_relay_rooms"] == 1
    assert samples["crdtsync_relay_updates_received_total"] >= 5
    assert samples["crdtsync_relay_updates_stored_total"] >= 5
    assert samples["crdtsync_relay_updates_fanned_out_total"] >= 5
    assert samples["crdtsync_relay_bytes_received_total"] > 0
    assert samples["crdtsync_relay_bytes_sent_total"] > 0
    assert samples["crdtsync_relay_ack_latency_seconds_count"] >= 1
    assert samples["crdtsync_relay_storage_commit_seconds_count"] >= 1
    assert samples["crdtsync_relay_ready"] == 1
    assert samples["crdtsync_relay_storage_unavailable"] == 0
    assert samples["crdtsync_relay_queued_writes"] == 0
    assert "crdtsync_relay_redis_round_trip_seconds_count" in samples


async def test_metrics_need_a_token_from_elsewhere_when_the_relay_does(tmp_path: Path) -> None:
    """Tokens required: this host reads /metrics as issue 13's operator does (``curl
    localhost:8765/metrics``); any other address needs a valid token."""
    keys = KeyRing()
    keys.add_secret("k1", "metrics-secret-" + "x" * 32)
    async with Relay("memory://", port=0, authenticate=authenticator(keys)) as relay:
        status, _, samples = await asyncio.to_thread(scrape, relay)
        assert status == 200 and "crdtsync_relay_rooms" in samples
        token = issue_token(keys, "prometheus", ["none:r"], 600)
        status, _, samples = await asyncio.to_thread(scrape, relay, token)
        assert status == 200
    for address in ("127.0.0.1", "127.3.4.5", "::1", "::ffff:127.0.0.1"):
        assert not metrics_need_token(address), address
    for address in ("10.0.0.7", "192.168.1.2", "2001:db8::1", "", "/run/relay.sock"):
        assert metrics_need_token(address), address


async def test_redis_round_trips_are_measured(redis_url: str) -> None:
    storage = RedisStorage(redis_url, interval=0.05)
    async with Relay(storage, port=0) as relay:
        observed = asyncio.Event()
        metric = storage.on_round_trip
        assert metric is not None

        def both(seconds: float) -> None:
            metric(seconds)
            observed.set()

        storage.on_round_trip = both
        await asyncio.wait_for(observed.wait(), 30)
        _, _, samples = await asyncio.to_thread(scrape, relay)
    assert samples["crdtsync_relay_redis_round_trip_seconds_count"] >= 1
    assert samples["crdtsync_relay_followed_documents"] == 0
