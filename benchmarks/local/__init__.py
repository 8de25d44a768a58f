"""The local group: how much does durable storage cost per edit?

Replays the automerge-paper editing trace into a pycrdt Text, once on a bare
``pycrdt.Doc`` and once on a document opened from a ``crdtsync.Replica`` in
each durability mode, with one edit per transaction and with 100 edits per
transaction (:mod:`.configs`). See ``benchmarks/README.md`` for what is measured
and how to read it.

Every configuration runs in its own fresh worker process (:mod:`.worker`)::

    python -m benchmarks.local --worker --store normal --per-transaction 1 \\
        --edits 20000 --trace-cache trace.bin --out result.json

The orchestrating process (:mod:`.group`, called by ``python -m benchmarks``)
never parses the JSON trace itself: on Linux a child's ``ru_maxrss`` starts at
its parent's peak, so the parent stays small and a helper process
(``--prepare-trace``) writes the compact trace the workers read. :mod:`.summary`
and :mod:`.report` turn the runs into ``results/local.json`` and ``local.md``.
Nothing here imports crdtsync but the worker, and only when it opens a Replica.
"""

from .group import run

__all__ = ["run"]
