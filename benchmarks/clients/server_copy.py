"""What a server holds of a document: a fresh client with an empty document syncs once.

The convergence checks compare it with the clients' documents; the memory group reads
a sample of the documents back before they unload.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pycrdt

from ..wire import Protocol, codec
from .connection import HANDSHAKE_TIMEOUT_S
from .document import DocClient
from .native import NativeConnection

__all__ = ["fetch_document", "fetch_native_documents"]


async def fetch_document(protocol: Protocol, prefix: str, url: str, doc_id: str) -> pycrdt.Doc[Any]:
    """The server's copy of ``doc_id`` through a one-document protocol (y-websocket,
    Hocuspocus): a new client syncs from an empty state vector and disconnects."""
    wire = codec(protocol, doc_id, f"bench-verifier-{os.getpid()}", prefix)
    client = DocClient(wire, "verifier", doc=pycrdt.Doc())
    try:
        await client.open(url)
        await client.wait_synced(HANDSHAKE_TIMEOUT_S)
    finally:
        await client.close()
    return client.doc


async def fetch_native_documents(url: str, names: Sequence[str]) -> dict[str, pycrdt.Doc[Any]]:
    """The relay's copy of every document of ``names``, over one native connection."""
    docs: dict[str, pycrdt.Doc[Any]] = {name: pycrdt.Doc() for name in names}
    connection = NativeConnection(f"bench-verifier-{os.getpid()}")
    try:
        await connection.open(url)
        await connection.subscribe(docs, HANDSHAKE_TIMEOUT_S)
    finally:
        await connection.close()
    return docs
