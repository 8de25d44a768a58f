"""The public API is what ``__all__`` says, and every name in it exists."""

from __future__ import annotations

import crdtsync
import crdtsync.store
import relay


def test_all_names_exist() -> None:
    for module in (crdtsync, crdtsync.store, relay):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_the_contract_names_are_exported() -> None:
    for name in ("Replica", "PendingChanged", "StoreError", "CrdtsyncError", "DocId", "SyncStatus"):
        assert name in crdtsync.__all__
    for name in ("Relay", "open_storage", "Limits"):
        assert name in relay.__all__


def test_every_error_is_in_the_tree() -> None:
    errors = [getattr(crdtsync, n) for n in crdtsync.__all__ if n.endswith("Error")]
    assert errors
    for error in errors:
        assert issubclass(error, crdtsync.CrdtsyncError)
