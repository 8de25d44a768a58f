"""The store group: reopening a replica that holds many documents.

A worker process (:mod:`.worker`) creates a :class:`crdtsync.Replica` store
(``durability="normal"``) holding ``documents`` small documents (each a text written
by ``edits`` one-edit transactions, as a user typing), closes it, and reports the
file size (SQLite file + WAL) against the documents' encoded size
(``len(doc.get_update())`` summed). A fresh worker process then reopens it:
``Replica(path)``, every document ``open()``-ed and its text read; the texts are
checked against what was written (a digest). Nothing is acknowledged by a relay
here, so every edit is still in the outbox: compare with a store after sync, where
compaction folds it. :mod:`.group` runs it, :mod:`.report` writes the table.

    python -m benchmarks.store --documents 1000 --out run.json
"""

from .group import run

__all__ = ["run"]
