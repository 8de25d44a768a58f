"""Holding back updates that arrive before their dependencies.

pycrdt 0.14.13 integrates an update that arrives before an earlier update of
the same client inconsistently: the same set of updates applied in different
orders can end in different documents. Both the replica and the relay
therefore hold such an update (stored, not applied) until
:meth:`~crdtsync.update.UpdateSummary.missing` says everything it needs is in
the document, then apply it. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pycrdt

from .errors import InvalidUpdateError
from .statevector import decode_state_vector
from .update import UpdateSummary

__all__ = ["Held", "check_decodes", "release_ready"]


@dataclass(frozen=True, slots=True)
class Held:
    """An update waiting for its dependencies, with its header summary."""

    update: bytes
    summary: UpdateSummary


def release_ready(
    doc: pycrdt.Doc[Any], held: list[Held], apply: Callable[[bytes], None]
) -> list[Held]:
    """Apply (with ``apply``) and remove from ``held`` every update whose dependencies
    ``doc`` now has, until none is ready. Returns those pycrdt rejected."""
    rejected: list[Held] = []
    progress = bool(held)
    while progress:
        progress = False
        have = decode_state_vector(doc.get_state())
        for item in held:
            if not item.summary.missing(have):
                held.remove(item)
                try:
                    apply(item.update)
                except (InvalidUpdateError, ValueError, RuntimeError):
                    rejected.append(item)
                progress = True
                break
    return rejected


def check_decodes(doc_id: str, update: bytes) -> None:
    """Raise :class:`InvalidUpdateError` unless pycrdt can decode ``update``.

    Used before holding an update: the header reader does not look inside
    content, and a held update is only given to the document later.
    """
    scratch: pycrdt.Doc[Any] = pycrdt.Doc()
    try:
        scratch.apply_update(update)
    except (ValueError, RuntimeError) as exc:
        raise InvalidUpdateError(f"update for {doc_id!r} rejected: {exc}") from exc
