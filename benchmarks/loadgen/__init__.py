"""Load generator of the relay benchmark: real pycrdt clients over real websockets.

Every client is a ``pycrdt.Doc`` with a 32-bit client id and one websocket
connection. A writing client sets its own key of the root map ``m`` to
``"<counter> <time.monotonic_ns()>"`` (one transaction, one Yjs update) and sends
the update in its server's wire format (:mod:`benchmarks.wire`): a native UPDATE
frame (the counter as ``seq``), a y-websocket update message (type 0, step 2), the
same with Hocuspocus' document-name prefix, or, to the bare forwarder, the
y-websocket message with no handshake. A receiving client decodes each message,
applies the update to its own document, reads the sender's value back from its
map and records the latency (time after applying and reading, minus the time
written into the value: ``time.monotonic_ns`` is one clock for every process of
the machine). An update that comes back to its own writer (the y-websocket
server, Hocuspocus and pycrdt-websocket send every update to every connection of
the room, the writer's included) is counted as an echo and not applied.

Handshakes: against the relay's native protocol HELLO, SUBSCRIBE with the state
vector, wait for SYNC (the relay ACKs every update after its durable commit);
y-websocket: sync step 1 both ways, step 2 both ways, in sync after the server's
step 2; Hocuspocus: the auth message first, then the same.

The orchestrator (:mod:`benchmarks.relay`) drives one or several of these
processes (``python -m benchmarks.loadgen --spec FILE --out FILE``, :mod:`.__main__`)
through stdin/stdout lines:

- rooms scenarios (``a``, ``b``, ``c``; :mod:`.rooms`): the process connects every
  client and prints ``ready``; on ``go <t0_ns>`` writers start at ``t0`` (warm-up),
  the measured window is ``[t0 + warmup, t0 + warmup + duration]`` (deliveries are
  counted by the time they were observed), writers stop at its end; then the
  process drains (every update delivered to every other client of its room and,
  against the relay, acknowledged), checks convergence, writes ``--out`` and
  prints ``done``;
- late joiner (``d``; :mod:`.late`): ``ready``; on ``go`` a writer builds a document
  of ``--updates`` updates through the relay (the automerge-paper trace prefix, one
  edit per update) and waits for every ACK, prints ``built``; each
  ``join <url> <label>`` runs a new client that subscribes with an empty state
  vector and measures the time until its text equals the writer's and the bytes
  it received, answering ``joined``; ``disconnect`` closes the writer
  (``disconnected``); ``finish`` writes ``--out`` and prints ``done``.

**Several processes, one room.** When a room has more clients than one process
should drive (one room, 2 writers flat out: one process per writer), the
orchestrator gives each process some of the room's clients (``members``). The
processes share one file of counters (``shared``, memory-mapped, :mod:`.shared`:
per room, what every receiver has seen of every sender, what every sender has sent
and whether it has finished), so windows, draining and ordering checks work across
processes; client ids are derived from ``id_seed`` so every process knows whose
update it receives. Each process checks the clients it holds; the orchestrator
compares the final documents across processes (``room_states`` in the result).

Modules: :mod:`.spec` (what a process is asked and answers), :mod:`.shared`,
:mod:`.client` (one client: writing, receiving, its window), :mod:`.rooms`,
:mod:`.late`.
"""
