"""The joins group: replicas joining a large document at the same time (issue 18).

Our relay only (the question is about its own bounds, not a comparison): a
fresh relay process (pinned to one core) holds one document of ``size_mb`` MB
(a text pasted at once: one item, the worst case for the joiners, who receive it
cut into pieces) in its SQLite store, not loaded yet. A worker process
(:mod:`.worker`, another core) connects ``joiners`` real replicas at once and
waits until each has the whole document (checked by digest). Meanwhile the
orchestrator (:mod:`.group`) reads the relay's RSS and asks ``GET /health``
every 50 ms. Reported (:mod:`.report`), not asserted:

- the relay's RSS before anyone joins, its peak (``VmHWM``), and after the joins
  (the room stays loaded): *peak over idle per joiner*, in MB and in multiples
  of the document's size (the issue's bound: about 2x);
- ``/health`` latency during the joins (median, p99, max) and probes that failed;
- how long the joins took.

Each configuration (1 joiner, then ``joiners`` at once) runs on a fresh relay.
By hand: ``python -m benchmarks.joins --size-mb 30 --joiners 5 --out run.json``.
"""

from .group import run

__all__ = ["run"]
