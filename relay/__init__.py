"""The crdtsync relay: a websocket service that stores, acknowledges and forwards
CRDT updates between replicas.

Run it with ``crdtsync-relay`` (or ``python -m relay``), or embed it::

    from relay import Relay

    async with Relay("sqlite:///relay-data/relay.db", host="127.0.0.1", port=8765) as relay:
        await relay.serve_forever()
"""

from .limits import Limits

try:
    import jwt  # noqa: F401
    import prometheus_client  # noqa: F401
except ImportError as exc:  # pragma: no cover - an install without the relay extra
    raise ImportError(
        f"the crdtsync relay needs its extra: pip install 'crdtsync[relay]' ({exc})"
    ) from exc

from .rooms import Hub
from .server import DEFAULT_STORE, Relay
from .storage import MemoryStorage, RelayStorage, SQLiteStorage, StoredRoom, open_storage

__all__ = [
    "DEFAULT_STORE",
    "Hub",
    "Limits",
    "MemoryStorage",
    "Relay",
    "RelayStorage",
    "SQLiteStorage",
    "StoredRoom",
    "open_storage",
]
