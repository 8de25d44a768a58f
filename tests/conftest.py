"""Shared test configuration.

Hypothesis profiles: ``ci`` (the default: fast enough for every run) and
``thorough`` (many more examples, for soak runs). Select with the environment
variable ``CRDTSYNC_HYPOTHESIS_PROFILE=thorough``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from crdtsync import Replica
from relay import Relay

from .redis_server import RedisServer, shared_server

for name, examples, steps in (("ci", 60, 40), ("thorough", 1000, 100)):
    settings.register_profile(
        name,
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        print_blob=True,
    )
settings.load_profile(os.environ.get("CRDTSYNC_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    """Three in-memory replicas, closed after the test."""
    made = [Replica(":memory:") for _ in range(3)]
    yield made
    for replica in made:
        replica.close()


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    """One private redis-server (AOF, appendfsync always) for the whole test session;
    tests keep apart by key prefix (``redis_url``)."""
    return shared_server()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A store of its own on the session's redis-server (a fresh key prefix)."""
    return f"{redis_server.url}?prefix=t{secrets.token_hex(6)}"


@pytest.fixture
async def replica(tmp_path: Path) -> AsyncIterator[Replica]:
    """A replica on an SQLite file, disconnected and closed after the test."""
    made = Replica(tmp_path / "replica.db")
    yield made
    await made.disconnect()
    made.close()


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    """A relay on 127.0.0.1 (a free port) over an SQLite file, stopped after the test."""
    async with Relay(f"sqlite:///{tmp_path}/relay.db", port=0) as server:
        yield server
