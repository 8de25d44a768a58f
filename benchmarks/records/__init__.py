"""The records group: a collection of 100,000 records (``crdtsync.records``).

A worker process (:mod:`.worker`) creates a replica store (``durability="normal"``)
and fills a collection with ``records`` records, one ``add`` each (three fields),
then times, interleaved in blocks: ``update`` of one field of a random record, the
raw ``pycrdt.Map`` set of one key on the same document (the baseline), and ``get``
of a random record. A second replica (in memory) syncs the collection, makes 100
edits of random records, and the first applies them as 100 remote updates; then
``changes(since=cursor)`` for those 100 records is timed. A fresh worker process
reopens the store: open time (``Replica(path)`` + ``records()``), the first
``get``, ``changes()`` again, and the first ``len()`` and ``conflicts()`` (which
read the ``heads`` index once, and the records it cannot vouch for). Sizes: the
SQLite file + WAL, the document's encoded size; RSS of both processes.
:mod:`.group` runs it, :mod:`.report` writes the table and the goals.

    python -m benchmarks.records --records 20000 --out run.json
"""

from .group import run

__all__ = ["run"]
