"""The crdtsync internals the benchmarks use: imported here and nowhere else.

The benchmarks measure crdtsync from the outside, through its public API
(``from crdtsync import Replica``) and its command (``python -m relay``). Two things
they need are not public: the native wire protocol's frames, to speak to the relay
as a client would (:mod:`benchmarks.wire` encodes and decodes them), and the
comparison of two documents' state vectors and delete sets (the convergence checks).
When those modules move, only this file changes.
"""

from __future__ import annotations

from crdtsync import DocId, ReplicaId
from crdtsync.statevector import same_state
from crdtsync.sync.protocol import (
    Ack,
    ErrorFrame,
    Hello,
    Subscribe,
    Sync,
    Update,
    Welcome,
    decode_frame,
    encode_frame,
    encode_update,
)

__all__ = [
    "Ack",
    "DocId",
    "ErrorFrame",
    "Hello",
    "ReplicaId",
    "Subscribe",
    "Sync",
    "Update",
    "Welcome",
    "decode_frame",
    "encode_frame",
    "encode_update",
    "same_state",
]
