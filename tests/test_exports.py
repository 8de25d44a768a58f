"""The public API is what ``__all__`` says, and every name in it exists."""

from __future__ import annotations

import re

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


def _event_classes() -> list[type]:
    """Every event class :mod:`crdtsync.events` defines (frozen dataclasses)."""
    import dataclasses  # noqa: PLC0415
    import inspect  # noqa: PLC0415

    from crdtsync import events  # noqa: PLC0415

    return [
        cls
        for _, cls in inspect.getmembers(events, inspect.isclass)
        if cls.__module__ == events.__name__ and dataclasses.is_dataclass(cls)
    ]


def test_every_event_class_is_exported_and_documented() -> None:
    """An app can import every event it may receive from ``crdtsync``, and
    ``Replica.observe`` names every event a replica reports."""
    classes = _event_classes()
    assert len(classes) >= 9
    for cls in classes:
        assert cls.__name__ in crdtsync.__all__, cls.__name__
        assert getattr(crdtsync, cls.__name__) is cls
    doc = crdtsync.Replica.observe.__doc__ or ""
    for cls in classes:
        if cls.__name__ != "AwarenessReceived":  # the session's, turned into presence
            assert cls.__name__ in doc, f"Replica.observe does not mention {cls.__name__}"


def test_the_error_tree_drawing_names_every_error() -> None:
    from crdtsync import errors  # noqa: PLC0415

    drawing = errors.__doc__ or ""
    for name in errors.__all__:
        assert re.search(rf"(^|[ ─]){name}( |$)", drawing, re.M), f"{name} is not in the drawing"


def test_an_offline_replica_loads_no_network_code() -> None:
    """Importing crdtsync and using a replica with no network never imports
    websockets nor the sync package (they load on the first connect())."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    script = (
        "import sys, pycrdt, crdtsync\n"
        "with crdtsync.Replica(':memory:') as r:\n"
        "    r.open('d').get('t', type=pycrdt.Text).insert(0, 'offline')\n"
        "    r.awareness('d').set_local_state({'user': 'ana'})\n"
        "    assert r.status is crdtsync.SyncStatus.OFFLINE and r.pending('d') == 1\n"
        "loaded = [m for m in ('websockets', 'crdtsync.sync') if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "", f"loaded offline: {result.stdout.strip()}"
