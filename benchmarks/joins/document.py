"""The document the joins group's replicas join: its id and how a copy is checked."""

from __future__ import annotations

import hashlib

__all__ = ["DOC", "digest", "text"]

DOC = "big"
"""The document's id in the relay's store."""


def text(size_mb: int) -> str:
    """``size_mb`` MB of numbered lines: the document's text."""
    return "".join(f"{i:015d}\n" for i in range(size_mb * 1_000_000 // 16))


def digest(content: str) -> str:
    """What the worker checks each joiner's copy against."""
    return hashlib.sha256(content.encode()).hexdigest()
