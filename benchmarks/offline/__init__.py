"""The offline group: what an app that lives offline waits for.

- *Cold start*: a store holding ``documents`` small documents; a fresh process
  imports crdtsync, opens the store and reads the first document (the goal: under
  100 ms); the import is reported apart.
- *Prefetch*: a relay process whose storage holds ``documents`` small documents
  (about 1 KB of text each) and one large one (``big_mb`` MB); a fresh replica
  prefetches them over HTTP (``POST /fetch``, 256 KiB responses) through a
  byte-counting proxy: the time, and every byte on the wire (requests, responses,
  HTTP headers) against the bytes of the diffs (the documents' updates; the goal:
  at most 1.1x). The texts are checked against what was written.

:mod:`.group` runs it, :mod:`.worker` is the measured process, :mod:`.report`
writes the table.

    python -m benchmarks.offline --documents 1000 --big-mb 20 --out run.json
"""

from .group import run

__all__ = ["run"]
