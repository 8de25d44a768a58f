"""Packaging: the library installs and runs with pycrdt, msgpack and websockets only;
the relay's dependencies are in the ``relay`` extra and never imported by it."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from .relay_helpers import ROOT


def test_the_library_depends_on_three_packages_and_the_relay_extra_on_the_rest() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {dep.split(">")[0].split("[")[0].split("=")[0] for dep in project["dependencies"]}
    assert names == {"pycrdt", "websockets", "msgpack"}
    relay = project["optional-dependencies"]["relay"]
    assert {dep.split(">")[0] for dep in relay} == {
        "PyJWT[crypto]",
        "redis[hiredis]",
        "prometheus-client",
        "h11",
    }


def test_a_syncing_replica_loads_none_of_the_relay_dependencies() -> None:
    script = """
import asyncio, sys
import crdtsync
from crdtsync.sync.client import Connector

async def main():
    replica = crdtsync.Replica(":memory:")
    replica.open("d").get("t", type=__import__("pycrdt").Text).insert(0, "x")
    await replica.connect("ws://127.0.0.1:9")  # nothing listens: it keeps trying
    await replica.disconnect()
    replica.close()

asyncio.run(main())
loaded = {"jwt", "cryptography", "redis", "prometheus_client", "h11", "httpx"} & set(sys.modules)
print(sorted(loaded))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "[]"
