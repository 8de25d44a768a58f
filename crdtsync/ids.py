"""Typed identifiers, so that a document id is never passed where a replica id goes."""

from __future__ import annotations

import secrets
from typing import NewType

__all__ = ["MAX_DOC_ID_BYTES", "DocId", "ReplicaId", "check_doc_id", "new_client_id"]

DocId = NewType("DocId", str)
"""The id of a document, e.g. ``"inspection-42"``."""

ReplicaId = NewType("ReplicaId", str)
"""The stable id of one replica (one local store), created on its first open."""

MAX_DOC_ID_BYTES = 512


def check_doc_id(doc_id: str) -> DocId:
    """Return ``doc_id`` as a :data:`DocId`, or raise ``ValueError`` if it is unusable.

    A document id is a non-empty string of at most 512 UTF-8 bytes without NUL
    characters or surrogates.
    """
    if not isinstance(doc_id, str):
        raise TypeError(f"document id must be a str, not {type(doc_id).__name__}")
    if not doc_id:
        raise ValueError("document id must not be empty")
    if "\x00" in doc_id:
        raise ValueError("document id must not contain NUL characters")
    try:
        size = len(doc_id.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValueError("document id must be valid unicode text") from exc
    if size > MAX_DOC_ID_BYTES:
        raise ValueError(f"document id is {size} bytes long; the limit is {MAX_DOC_ID_BYTES}")
    return DocId(doc_id)


def new_client_id() -> int:
    """A random non-zero 32-bit pycrdt client id, as Yjs uses."""
    return secrets.randbits(32) or 1
