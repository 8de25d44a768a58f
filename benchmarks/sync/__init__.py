"""The sync group: catching up after being offline, and joining late, on every server.

For each server that holds documents (our relay through both protocols and the
peers; the bare forwarder stores nothing), one worker process
(``python -m benchmarks.sync --spec ...``, :mod:`.worker`) connects over loopback:

- a **writer** that replays the automerge-paper editing trace through the
  server, one transaction (one update, one message) per edit, never more than
  ``window`` updates ahead of an online **observer** (a client that receives
  every update: the server really forwarded them);
- one **replica per lag** (1,000 / 10,000 / 100,000 edits), online from the
  start; when the writer is ``lag`` edits from the end it pauses until that
  replica has everything so far, the replica disconnects (its state vector is
  kept) and the writer goes on. At the end each replica reconnects and syncs
  with its protocol (native: SUBSCRIBE with its state vector, SYNC back;
  y-websocket / Hocuspocus: sync step 1 both ways, step 2 both ways): *time to
  synced* runs from the start of its TCP connection until its text equals the
  writer's, with the bytes of websocket payloads each way. The minimal diff is
  ``len(writer_doc.get_update(replica_state_vector))`` (pycrdt); resending the
  history would be the missed updates themselves, or the whole document;
- **late joiners**: a new client with an empty document, until its text is the
  trace's final text (checked against the trace's ``endContent``, or an
  independent replay for a prefix).

The server is pinned to one core, the worker to another; the orchestrator
(:mod:`.group`) reads the server's CPU (threads' schedstat) around every catch-up
and join, and its peak RSS. A run whose texts or states differ is FAILED, not a
number. :mod:`.report` writes the tables and judges the goals (:mod:`.params`).

One server by hand (:mod:`.__main__`)::

    python -m benchmarks.sync --server relay --edits 3000 --lags 1000 --out run.json
"""

from .group import run

__all__ = ["run"]
