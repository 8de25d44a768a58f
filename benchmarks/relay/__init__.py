"""The relay group (fan-out): crdtsync's relay against its peers and a bare forwarder.

Servers under test (:mod:`benchmarks.servers`) run as separate processes on
127.0.0.1: ``python -m relay`` on a SQLite store with durable ACKs
(``synchronous=full``, the default), measured through its native protocol and
through its ``/yjs`` y-websocket path; the peers people would pick instead
(``@y/websocket-server`` and Hocuspocus on Node, pycrdt-websocket), installed by
:mod:`benchmarks.peers`; and ``python -m benchmarks.bare_forwarder`` (forwards
bytes, no CRDT work, no storage: the practical limit of a Python relay). Real
clients (pycrdt documents over websockets, :mod:`benchmarks.loadgen`) run in
separate load-generator processes, each speaking its server's protocol. The
server is pinned to one core and the load generator(s) to the other(s) where the
platform allows it. Scenarios (:mod:`.scenarios`):

- **a**: one room, 2 writers, as fast as a window of unacknowledged/undelivered
  updates per writer allows;
- **b**: one room, 20 clients, 20 updates/s each (paced);
- **c**: 100 rooms, 2 clients each, as fast as the window allows;
- **d**: a late joiner on a 20,000-update document (our relay's native protocol
  only; :mod:`benchmarks.sync` compares every server), with the room in memory
  and after a relay restart.

Modules: :mod:`.group` (the group: every scenario and server), :mod:`.rooms` and
:mod:`.late` (one run), :mod:`.result` (a run's figures), :mod:`.summary` and
:mod:`.goals` (over the runs), :mod:`.results_json`, :mod:`.report` and
:mod:`.notes` (what is written). See ``benchmarks/README.md`` for what is measured
and how to read the report. One run of one scenario against one server, without
the rest of the group (:mod:`.__main__`)::

    python -m benchmarks.relay --scenario a --server relay --warmup 0.2 --duration 0.5 \\
        --out run.json
"""

from .group import run

__all__ = ["run"]
