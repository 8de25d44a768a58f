"""The crdtsync relay service (built in the "Sync protocol, relay service" issue)."""

__all__: list[str] = []
