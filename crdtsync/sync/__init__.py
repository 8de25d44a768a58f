"""Syncing replicas with a relay: the network half of crdtsync.

- :mod:`~crdtsync.sync.protocol`: the native wire frames (msgpack), no I/O;
- :mod:`~crdtsync.sync.session`: the client's sans-I/O state machine;
- :mod:`~crdtsync.sync.client`: the asyncio websocket connector;
- :mod:`~crdtsync.sync.presence`: presence exchanged while connected.

Apps do not import this package: :meth:`crdtsync.Replica.connect` loads it on
first use. Nothing is imported here, so that the relay can use the protocol
without loading the client.
"""
