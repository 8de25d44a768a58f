"""The store group's worker: create the store, or reopen it and read every document.

Each action runs in a fresh process (``python -m benchmarks.store --worker ACTION PATH``)
and prints its figures as one JSON line; crdtsync is imported only here.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pycrdt

__all__ = ["create", "reopen"]


def _text(number: int, edits: int) -> str:
    return "".join(chr(ord("a") + (number + i) % 26) for i in range(edits))


def create(path: Path, documents: int, edits: int) -> dict[str, Any]:
    """Write the store; its sizes and the digest of every text."""
    from crdtsync import Replica  # noqa: PLC0415 - only in the worker process

    digest = hashlib.sha256()
    encoded = 0
    started = time.perf_counter()
    replica = Replica(path, durability="normal")
    try:
        for number in range(documents):
            doc = replica.open(f"doc-{number}")
            text = doc.get("text", type=pycrdt.Text)
            for char in _text(number, edits):
                text += char
            encoded += len(doc.get_update())
            digest.update(str(text).encode() + b"\0")
    finally:
        replica.close()
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return {
        "create_s": seconds,
        "store_bytes": size,
        "encoded_bytes": encoded,
        "digest": digest.hexdigest(),
    }


def reopen(path: Path, documents: int) -> dict[str, Any]:
    """Reopen the store and read every document; the time and the digest of the texts."""
    started = time.perf_counter()
    from crdtsync import Replica  # noqa: PLC0415 - timed: a cold start imports it too

    imported = time.perf_counter()
    replica = Replica(path, durability="normal")
    digest = hashlib.sha256()
    try:
        for number in range(documents):
            doc = replica.open(f"doc-{number}")
            digest.update(str(doc.get("text", type=pycrdt.Text)).encode() + b"\0")
    finally:
        replica.close()
    done = time.perf_counter()
    return {
        "reopen_s": done - imported,
        "import_s": imported - started,
        "digest": digest.hexdigest(),
    }
