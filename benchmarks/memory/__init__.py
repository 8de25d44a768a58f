"""The memory group: what an idle connection and a loaded document cost a server.

For every server, two measurements, each on a fresh server process (pinned to
one core) with one worker process (``python -m benchmarks.memory``, :mod:`.worker`)
on another core, so that memory the first one freed (and the allocator kept) cannot
hide what the second allocates (:mod:`.group`):

1. **idle connections**: the server's RSS after start-up (``VmRSS`` of its
   process); the worker opens ``connections`` websockets, each through its
   protocol's handshake (native: HELLO + SUBSCRIBE; y-websocket: sync steps;
   Hocuspocus: auth + sync), all on one small document, and leaves them idle;
   RSS again: *per idle connection* = the growth / connections; the worker
   closes them and RSS is read once more;
2. **loaded documents** (a fresh server): RSS after start-up; the worker writes
   ``documents`` small documents (a
   100-character text each, one update) and keeps them open: our native
   protocol multiplexes them over a few connections; the y-websocket protocols
   need one connection per document (*per document* then includes a connection;
   the table also gives it minus an idle connection's cost); RSS again;
   then every connection closes; the worker waits until the server
   should have unloaded the documents (our relay runs with ``--idle-timeout``
   of ``unload_wait`` minus a margin), then RSS: how much of the documents'
   memory the server gave back, against the RSS before the documents loaded.

The bare forwarder takes part in step 1 only (it holds no documents).
A sample of the documents a server held is checked at the end of step 2 (a fresh client
gets it back, equal). RSS figures are read by the orchestrator from
``/proc/<pid>/status`` after ``settle_s`` seconds of quiet. :mod:`.report` writes the
table and judges the goals.

One server by hand (:mod:`.__main__`)::

    python -m benchmarks.memory --server relay --connections 200 --documents 200 --out run.json
"""

from .group import run

__all__ = ["run"]
