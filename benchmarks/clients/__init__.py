"""Websocket clients of the servers under test, shared by the groups that compare them.

- :mod:`.connection`: one websocket and the task reading it (the base of every client);
- :mod:`.document`: :class:`~.document.DocClient`, one document over one connection in
  any protocol, counting payload bytes (the sync and memory workers);
- :mod:`.native`: one native connection carrying many documents;
- :mod:`.server_copy`: what a server holds of a document, fetched by a fresh client
  (the convergence checks).

The load generator's own clients (:mod:`benchmarks.loadgen`) build on the same base.
"""
