"""The prose under the relay report's tables: what each figure is and how to read it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..harness.render import bullets
from .result import SATURATED
from .scenarios import Params

__all__ = ["goals_notes", "late_notes", "rooms_notes"]


def late_notes(params: Params) -> str:
    """Under scenario d's table."""
    return bullets(
        [
            f"The writer makes the first {params.late_updates:,} edits of the "
            "automerge-paper trace, one transaction (one update, one UPDATE frame) per edit, "
            f"with at most {params.late_window} unacknowledged, and waits for every ACK. Then "
            "a new client connects, says HELLO, subscribes with an empty state vector and "
            "applies the SYNC; *join until equal* runs from the start of its TCP connection "
            "until its text equals the writer's (state vectors and delete sets compared too).",
            "*Room in memory*: the writer is still subscribed. *After a relay restart*: the "
            "writer disconnects, the relay is stopped (SIGTERM) and started again on the same "
            "store, so the room loads from SQLite (snapshot + log) on SUBSCRIBE.",
            "*Bytes received*: websocket message payloads (WELCOME + SYNC); *doc state bytes*: "
            "`len(writer_doc.get_update())`. *Server CPU ms*: the relay's on-CPU time during the "
            "join (sum of its threads' schedstat); *peak RSS*: `VmHWM` of the relay process "
            "after the join.",
        ]
    )


def rooms_notes(params: Params) -> str:
    """Under the tables of scenarios a, b and c."""
    return bullets(
        [
            "*Deliveries/s*: updates observed by a receiving client (decoded, applied to its "
            "pycrdt document and its value read back) during the measured window, divided by its "
            "length; an update sent to a room of N clients is N-1 deliveries. *vs bare*: over "
            "the bare forwarder's median in the same invocation.",
            "*Latency*: from just before the writer's edit (the `time.monotonic_ns()` written in "
            "the value) to after the receiver applied the update and read the value back, for "
            "deliveries observed in the window. In (a) and (c) it is dominated by the window's "
            "queueing: compare it only within a scenario.",
            f"*Windows*: a writer stops while {params.a_window} (a) or {params.c_window} (c) of "
            "its updates are not yet observed by every peer or, against the relay, not yet "
            "acknowledged (ACKs follow the fsync), and resumes when half of them are.",
            "*Server CPU*: user + system time of the server process (all threads, "
            "/proc/<pid>/stat) over the measured window; % of one core. *µs/delivery*: that "
            "CPU over the deliveries of the window (the load generator cannot distort it).",
            "*Est. max/s at 1 core* ((a), (c)): deliveries/s over the fraction of one core the "
            "server used: what it would deliver at 100% of its core at the same cost per "
            "delivery. An estimate, but one the load generator does not cap.",
            "*Peak RSS*: `VmHWM` of the server process at the end of the run.",
            f"*Load-gen CPU %*: the busiest load-generator process over the window. **⚠** "
            f"marks a run above {SATURATED:.0f}%: the load generator was the bottleneck, the "
            "server may have had spare capacity, and its deliveries/s are a lower bound.",
            "*Converged*: after the writers stop, every update reached every peer (and, relay, "
            "was acknowledged); every client's map content (`to_py()`) and state vector + delete "
            "set are equal in each room, the counters match what was sent, and (relay) a fresh "
            "subscriber gets that same state from the relay. A run failing any of this is "
            "FAILED, not a number.",
        ]
    )


def goals_notes(goals: Sequence[dict[str, Any]]) -> str:
    """Under the goals table: what the ratios compare, and a caution when saturated."""
    notes = [
        "Ratios are medians of this invocation (our relay over the other server, same load, "
        "same machine): *native* is our relay through its own protocol, */yjs* through its "
        "y-websocket path, against the peers speaking y-websocket (Hocuspocus: its framing). "
        "Our relay stores every update (SQLite, fsync'd group commit) before the native ACK; "
        "the peers keep documents in memory only. Measured earlier on this kind of machine "
        "under load (b) with a y-websocket load: bare forwarder 24 µs, @y/websocket-server "
        "32 µs, Hocuspocus 39 µs, pycrdt-websocket 86 µs of server CPU per delivered update.",
        "*CPU-normalized*: the same ratio of *est. max/s at 1 core* (deliveries/s divided by "
        "the fraction of a core the server used), which the load generator cannot cap. It "
        "assumes the cost per delivery stays the same up to a full core.",
    ]
    if any(goal["loadgen_saturated"] for goal in goals):
        notes.append(
            "⚠ The load generator was saturated in a run behind this ratio: when it was the "
            "other server's run, its figure is a lower bound of its capacity and the measured "
            "ratio flatters our relay; read the CPU-normalized one."
        )
    return bullets(notes)
