"""A simulated network that hypothesis (or a seeded random soak) controls, over
the product's own objects: real :class:`~crdtsync.Replica` objects on real
stores (memory, or SQLite files), their :class:`~crdtsync.sync.session.ClientSession`,
and a :class:`relay.Relay` that is never started (no sockets): the test plays
its host, driving its sans-I/O :class:`~relay.rooms.Hub` and its real storage
(:class:`relay.storage.MemoryStorage` or :class:`relay.storage.SQLiteStorage`)
on a private event loop. Nothing of the protocol is re-implemented here: the
test only moves bytes and decides when each thing happens.

What the network may do, and why each is something the product must survive:

- **Reordering across connections.** Every connection is a pair of FIFO queues
  (a websocket is ordered and loses nothing while it lasts); *which* queue
  moves next is free, so frames of different connections interleave in any
  order. Frames are never reordered within a connection: the relay's ACK of
  ``seq`` covers every lower one, which relies on that order.
- **Duplicates.** An UPDATE can be delivered twice on its connection (both
  directions): CRDT updates are idempotent and both ends must accept them
  again (DESIGN.md guarantee 3). Duplicates also arise for real: a replica
  resends its unacknowledged outbox on every new connection, and frames of an
  old connection can reach the relay after the new one has resent them.
- **Drops are connection losses.** A websocket never loses one frame and
  delivers the next, so losing frames means losing the connection. The two
  ends notice at different times, as over TCP:

  * ``drop``: the replica notices first (it reconnects when it likes); a
    prefix of the frames it had sent still reaches the relay afterwards, even
    after its new connection resent them; the relay notices later (``late``).
  * ``relay_drop``: the relay notices first (its session is closed); a prefix
    of what it had sent still reaches the replica, which notices when it has
    read everything.
  * a partition cuts a set of replicas off (nothing in flight survives) and
    keeps them from reconnecting until it heals.
- **Crashes.** A crash keeps exactly what a ``kill -9`` keeps: the store's
  bytes at that instant (a copy of the SQLite files, WAL included, or of the
  memory store's data). The dead process's objects are then closed, and
  whatever they write while closing goes to the discarded original. A
  crashed replica restarts at once from the copy (so an SQLite store takes
  its unclean-shutdown path: new client ids); frames it had sent may still
  reach the relay. A crashed relay loses its rooms, its sessions, its loads,
  its uncommitted writes and its pending compactions; replicas may still read
  what it had sent before they notice.
- **Storage timing.** Loads, group commits and compactions happen when the
  scenario says so: ACKs wait for commits, requests wait for loads, and
  compactions run between other events (with the relay host's own
  compaction code, ``Relay._compact``). Small compaction thresholds make both
  the replicas' stores and the relay's storage compact often.

No ERROR frame is expected anywhere: the network is hostile, but every peer
is honest and no limit is in force.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import shutil
import tempfile
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pycrdt

import crdtsync.replica
from crdtsync import Replica
from crdtsync.compaction import rebuild_document
from crdtsync.events import DocumentOpened, LocalUpdate, ReplicaEvent
from crdtsync.ids import DocId
from crdtsync.statevector import DeleteSet, doc_state
from crdtsync.sync.protocol import Ack, ErrorFrame, Update, decode_frame
from crdtsync.sync.session import ClientSession
from crdtsync.update import summarize_update
from relay import Relay
from relay.room import replay
from relay.rooms import Hub
from relay.session import Limits, RelaySession

from .disks import RelayDisk, ReplicaDisk
from .edits import apply_edit, content, tokens_in

D = DocId("doc")
LIMITS = Limits(max_updates_per_second=0, max_bytes_per_second=0)
BACKENDS = ("memory", "sqlite")
"""Stores of the replicas and of a single relay."""
SHARED = "redis"
"""The relays' store when there are several (the replicas then use memory stores)."""


# -- connections and replicas ------------------------------------------------------------------


@dataclass(eq=False)
class Link:
    """One websocket connection and what is in flight on it, each way.

    ``client_open``/``relay_open``: whether each end still uses the connection
    (each notices its end at its own time). Frames sent to an end that has
    stopped reading are lost.
    """

    index: int
    relay: RelaySession
    host: int = 0  # which relay process the connection goes to
    up: deque[bytes] = field(default_factory=deque)
    down: deque[bytes] = field(default_factory=deque)
    client_open: bool = True
    relay_open: bool = True


@dataclass(eq=False)
class Node:
    """One replica, its session, its connection, and the record of what it wrote and
    what the relay acknowledged (kept across its restarts, for the invariants)."""

    index: int
    disk: ReplicaDisk
    replica: Replica = field(init=False)
    session: ClientSession = field(init=False)
    link: Link | None = None
    local: dict[int, bytes] = field(default_factory=dict)  # seq -> local update, as stored
    acked: int = 0  # highest seq an ACK covered
    errors: list[ErrorFrame] = field(default_factory=list)
    connects: int = 0  # connections made (with several relays, each goes to the next)

    def close(self) -> None:
        self.replica.close()  # the replica of the moment (it changes with restarts)


@dataclass(eq=False)
class Host:
    """One relay process: its :class:`Relay` (never started), and what its host must do
    next: rooms to load, compactions to run, and other relays' updates the shared
    storage delivered that the hub has not been given yet."""

    index: int
    relay: Relay
    loads: list[DocId] = field(default_factory=list)
    compactions: list[DocId] = field(default_factory=list)
    snapshot_reads: list[DocId] = field(default_factory=list)
    remote: deque[tuple[DocId, bytes, int]] = field(default_factory=deque)

    @property
    def hub(self) -> Hub:
        return self.relay.hub


class Network:
    """``size`` replicas and ``relays`` relay processes (one, or two sharing a Redis
    store: ``backend="redis"``); every decision is the caller's.

    With two relays, replica ``i``'s n-th connection goes to relay ``(i + n) % 2``
    (replicas move between relays as they reconnect), and what one relay commits
    reaches the other through the real Redis feed, handed to its hub when the
    scenario says (``feed`` events)."""

    def __init__(
        self,
        size: int,
        backend: str,
        *,
        replica_compact_bytes: int = 1 << 18,
        relay_compact_bytes: int = 1 << 18,
        max_frame: int = LIMITS.max_frame,
        sync_piece: int = LIMITS.sync_piece_bytes,
        seed: int = 0,
        relays: int = 1,
    ) -> None:
        if backend not in (*BACKENDS, SHARED):
            raise ValueError(f"backend must be one of {(*BACKENDS, SHARED)}")
        if relays != 1 and backend != SHARED:
            raise ValueError(f"several relays need a shared store: backend={SHARED!r}")
        # Client ids decide the order of concurrent inserts: draw them from ``seed``
        # so that a scenario replays exactly (hypothesis shrinks by replaying).
        ids = random.Random(seed)
        self.size = size
        self.backend = backend
        self.relay_compact_bytes = relay_compact_bytes
        self.limits = dataclasses.replace(
            LIMITS, max_frame=max_frame, sync_piece_bytes=sync_piece, max_concurrent_syncs=2
        )
        self.dir = Path(tempfile.mkdtemp(prefix="crdtsync-net-"))
        self.hosts: list[Host] = []
        self.nodes: list[Node] = []
        with contextlib.ExitStack() as stack:
            stack.enter_context(
                mock.patch.object(
                    crdtsync.replica, "_new_client_id", lambda: ids.randrange(1, 1 << 32)
                )
            )
            stack.callback(shutil.rmtree, self.dir, ignore_errors=True)
            self.disk = RelayDisk(backend, self.dir, relays)
            stack.callback(self.disk.close)
            self.hosts = [self._start_relay(k) for k in range(relays)]
            for i in range(size):
                node = Node(i, ReplicaDisk(backend, self.dir, i, replica_compact_bytes))
                self._boot(node)
                stack.callback(node.close)
                self.nodes.append(node)
            self._cleanup = stack.pop_all()  # close() unwinds all of it
        self.orphans: list[Link] = []  # the replica has left them; the relay has not noticed
        self.partitioned: set[int] = set()
        self.written: set[tuple[int, int]] = set()  # tokens (replica, n) ever written
        self.counter = 0
        self.clock = 0.0
        self.storage_version = 0  # bumped by every change to the relay's storage
        self._checked_version = -1
        self._checked_acks: list[int] = []
        self.stats: Counter[str] = Counter()
        """How often interesting situations arose (reported as hypothesis events)."""
        self.log: list[str] = []
        """What happened, in words (printed with a failing example)."""

    @property
    def relay(self) -> Relay:
        """The first relay process."""
        return self.hosts[0].relay

    @property
    def hub(self) -> Hub:
        return self.hosts[0].hub

    # -- life cycle ---------------------------------------------------------------------------

    def _start_relay(self, k: int) -> Host:
        """Relay process ``k`` over its storage. Never started: the network is its I/O
        layer (loads, commits, compactions, snapshot reads and feed deliveries happen
        when the scenario says)."""
        relay = Relay(
            self.disk.storages[k],
            limits=self.limits,
            relay_id=f"sim-relay-{k}",
            compact_min_bytes=self.relay_compact_bytes,
        )
        host = Host(k, relay)
        relay.hub.on_load = host.loads.append
        relay.hub.on_write = _nothing
        relay.hub.on_compact = host.compactions.append
        if relay.hub.syncs.request_snapshot is not None:  # not on shared storage
            relay.hub.syncs.request_snapshot = host.snapshot_reads.append
        relay.storage.on_remote(lambda *delivered: host.remote.append(delivered))
        return host

    def _boot(self, node: Node) -> None:
        """Open the replica's store and its session (after a crash: from what survived)."""
        replica = node.disk.open()
        session = ClientSession(replica, replica.replica_id)
        node.replica, node.session, node.link = replica, session, None
        replica.open(D)
        session.add_document(D)

        def on_event(event: ReplicaEvent) -> None:
            if isinstance(event, LocalUpdate):
                node.local[event.seq] = event.update
                session.local_update(event.doc_id, event.seq, event.update)
            elif isinstance(event, DocumentOpened):
                session.add_document(event.doc_id)

        replica.observe(on_event)

    def close(self) -> None:
        self._cleanup.close()

    # -- connections --------------------------------------------------------------------------

    def connect(self, i: int) -> bool:
        """Replica ``i`` opens a new connection (if it has none and can reach the relay)."""
        node = self.nodes[i]
        if node.link is not None or i in self.partitioned:
            return False
        k = (i + node.connects) % len(self.hosts)
        node.connects += 1
        node.link = Link(i, self.hosts[k].hub.open_session(name=f"r{i}"), k)
        self.log.append(f"r{i} connects" + (f" to relay {k}" if len(self.hosts) > 1 else ""))
        node.session.connecting()
        node.session.connected()
        self.pump(i)
        return True

    def drop(self, i: int, keep: int = 0) -> bool:
        """Replica ``i``'s connection breaks and the replica notices first: ``keep`` of
        the frames it had sent still reach the relay later (see :meth:`late`)."""
        node = self.nodes[i]
        link = node.link
        if link is None:
            return False
        node.session.connection_lost()
        self.log.append(f"r{i} loses its connection ({len(link.up)} sent, {keep} still arrive)")
        node.link = None
        link.client_open = False
        link.down.clear()
        while len(link.up) > keep:
            link.up.pop()
        if link.relay_open:
            self.orphans.append(link)
        return True

    def relay_drop(self, i: int, keep: int = 0) -> bool:
        """Replica ``i``'s connection breaks and the relay notices first: ``keep`` of the
        frames it had sent still reach the replica, which notices after them."""
        link = self.nodes[i].link
        if link is None or not link.relay_open:
            return False
        self._relay_closes(link)
        self.log.append(f"the relay drops r{i} ({len(link.down)} sent, {keep} still arrive)")
        while len(link.down) > keep:
            link.down.pop()
        return True

    def _relay_closes(self, link: Link) -> None:
        link.relay_open = False
        link.up.clear()
        self.hosts[link.host].hub.close_session(link.relay)

    def late(self, k: int) -> bool:
        """The relay reads the next frame a replica sent on a connection the replica has
        already left; when none is left, the relay notices the connection is gone."""
        if not self.orphans:
            return False
        link = self.orphans[k % len(self.orphans)]
        if link.up:
            if self.nodes[link.index].link is not None:
                self.stats["a frame of an old connection arrived after a reconnect"] += 1
            data = link.up.popleft()
            self.log.append(f"relay <- r{link.index} (old connection): {describe(data)}")
            self._receive(link, data)
        else:
            self.orphans.remove(link)
            self._relay_closes(link)
            self.log.append(f"the relay notices r{link.index}'s old connection is gone")
        return True

    def partition(self, members: set[int]) -> None:
        """Cut ``members`` off: their connections die with everything in flight, and they
        cannot reconnect until :meth:`heal`."""
        for i in sorted(members):
            link = self.nodes[i].link
            if link is not None:
                self.drop(i)
                if link.relay_open:
                    self.orphans.remove(link)
                    self._relay_closes(link)
        self.partitioned |= members
        self.log.append(f"partition {sorted(members)}")

    def heal(self) -> None:
        if self.partitioned:
            self.log.append("the partition heals")
        self.partitioned.clear()

    def crash_replica(self, i: int) -> None:
        """Replica ``i``'s process dies and restarts from what its store holds; frames
        it had sent may still reach the relay. Its document must come back whole."""
        node = self.nodes[i]
        if node.replica.pending(D):
            self.stats["a replica crashed with changes pending"] += 1
        if node.link is not None:
            self.drop(i, keep=len(node.link.up))
        self.log.append(f"r{i} crashes and restarts")
        before = doc_state(node.replica.open(D)), content(node.replica.open(D))
        node.disk.crash(node.replica)
        self._boot(node)
        after = doc_state(node.replica.open(D)), content(node.replica.open(D))
        assert after == before, f"replica {i} lost changes in a restart: {before} -> {after}"

    def crash_relay(self, k: int | None = None) -> None:
        """Relay process ``k`` (every one if None) dies and restarts from what storage
        holds: its rooms, sessions, loads, uncommitted writes, pending compactions
        and undelivered feed messages are gone."""
        for host in list(self.hosts) if k is None else [self.hosts[k]]:
            if host.hub.writes_waiting:
                self.stats["a relay crashed with writes not committed"] += 1
            links = [node.link for node in self.nodes if node.link is not None] + self.orphans
            for link in links:
                if link.host == host.index:
                    link.relay_open = False
                    link.up.clear()
            self.orphans = [link for link in self.orphans if link.host != host.index]
            self.log.append(
                f"relay {host.index} crashes ({host.hub.writes_waiting} writes not committed)"
            )
            self.disk.crash(host.index)
            self.hosts[host.index] = self._start_relay(host.index)
        self.storage_version += 1

    # -- moving frames --------------------------------------------------------------------------

    def pump(self, i: int) -> None:
        """Put what replica ``i`` sends on its connection (lost if the relay stopped reading)."""
        node = self.nodes[i]
        frames = node.session.frames_to_send()
        if node.link is not None and node.link.relay_open:
            node.link.up.extend(frames)

    def _collect(self) -> None:
        """Put what the relay sends on each connection, and close what it decided to close."""
        for link in [node.link for node in self.nodes if node.link is not None] + self.orphans:
            if not link.relay_open:
                continue
            frames = link.relay.frames_to_send()
            if link.client_open:
                link.down.extend(frames)
            if link.relay.close is not None:
                if link in self.orphans:
                    self.orphans.remove(link)
                self._relay_closes(link)

    def send_piece(self, i: int) -> bool:
        """Replica ``i``'s connection has drained: its relay sends the next piece of a
        large sync answer (:mod:`relay.syncs`), or does a step towards it."""
        link = self.nodes[i].link
        if link is None or not link.relay_open:
            return False
        syncs = self.hosts[link.host].hub.syncs
        if not syncs.pending(link.relay):
            return False
        self.stats["a relay sent a sync answer in pieces"] += 1
        if not syncs.feed(link.relay):
            self.stats["a sync in pieces reached its SYNC"] += 1
        self._collect()
        return True

    def deliver_up(self, i: int, duplicate: bool = False) -> bool:
        """The relay reads the next frame from replica ``i``'s connection."""
        link = self.nodes[i].link
        self.pump(i)
        if link is None or not link.relay_open or not link.up:
            return False
        data = link.up.popleft()
        twice = duplicate and isinstance(decode_frame(data), Update)
        if twice:
            link.up.appendleft(data)
        self.log.append(f"relay <- r{i}: {describe(data)}" + (" (twice)" if twice else ""))
        self._receive(link, data)
        return True

    def _receive(self, link: Link, data: bytes) -> None:
        hub = self.hosts[link.host].hub
        hub.receive(link.relay, data)
        room = hub.rooms.get(D)
        if room is not None and room.live.held:
            self.stats["the relay held an update for its dependencies"] += 1
        self._collect()

    def deliver_down(self, i: int, duplicate: bool = False) -> bool:
        """Replica ``i`` reads the next frame from its connection, or notices that the
        relay closed it once nothing is left to read."""
        node = self.nodes[i]
        link = node.link
        self._collect()
        if link is None:
            return False
        if not link.down:
            if link.relay_open:
                return False
            self.log.append(f"r{i} notices the relay closed its connection")
            self.drop(i)  # the close arrives after the data
            return True
        data = link.down.popleft()
        frame = decode_frame(data, 1 << 30)
        twice = duplicate and isinstance(frame, Update)
        if twice:
            link.down.appendleft(data)
        self.log.append(f"r{i} <- relay: {describe(data)}" + (" (twice)" if twice else ""))
        if isinstance(frame, Ack):
            node.acked = max(node.acked, frame.seq)
            self.stats["a replica received an ACK"] += 1
        elif isinstance(frame, ErrorFrame):
            node.errors.append(frame)
        node.session.receive(data)
        self.pump(i)
        return True

    # -- the relay's host: storage ------------------------------------------------------------

    def load(self, k: int = 0) -> bool:
        """Storage answers relay ``k``'s oldest pending room load."""
        host = self.hosts[k]
        if not host.loads:
            return False
        doc_id = host.loads.pop(0)
        self.log.append(f"storage loads the room of relay {k}")
        host.hub.loaded(doc_id, self.disk.load(doc_id, k, follow=True))
        self._collect()
        return True

    def commit(self, k: int = 0) -> bool:
        """One group commit of every write relay ``k`` has waiting; the ACKs follow.
        Other relays' feeds then have the new entries (to hand over with ``feed``)."""
        host = self.hosts[k]
        writes = host.hub.take_writes()
        if not writes:
            return False
        ids = self.disk.append([(w.doc_id, w.update) for w in writes], k)
        self.log.append(f"relay {k} commits {len(writes)} update(s)")
        self.storage_version += 1
        host.hub.written(writes, ids)
        self.disk.delivered(D, ids[-1])
        self._collect()
        return True

    def read_snapshot(self, k: int = 0) -> bool:
        """Relay ``k``'s storage reads a room's snapshot for a large sync from nothing
        (what its host does instead of encoding the room)."""
        host = self.hosts[k]
        if not host.snapshot_reads:
            return False
        doc_id = host.snapshot_reads.pop(0)
        room = host.hub.rooms.get(doc_id)
        self.log.append(f"relay {k} reads the snapshot for a large sync")
        if room is not None:
            host.hub.syncs.snapshot_loaded(room, self.disk.load(doc_id).snapshot)
            self.stats["a large sync sent the stored snapshot"] += 1
        self._collect()
        return True

    def compact(self, k: int = 0) -> bool:
        """Relay ``k``'s host runs its oldest pending compaction (its own code)."""
        host = self.hosts[k]
        if not host.compactions:
            return False
        doc_id = host.compactions.pop(0)
        self.disk.run(host.relay.persistence.compact(doc_id))
        self.stats["a relay compacted its storage"] += 1
        self.log.append(f"relay {k} compacts its storage")
        self.storage_version += 1
        return True

    def feed(self, k: int = 0) -> bool:
        """Relay ``k``'s hub takes the next update another relay stored."""
        host = self.hosts[k]
        if not host.remote:
            return False
        doc_id, update, entry_id = host.remote.popleft()
        self.log.append(f"relay {k} <- feed: entry {entry_id} ({len(update)} B)")
        self.stats["a relay applied another relay's update"] += 1
        host.hub.remote_update(doc_id, update, entry_id)
        self._collect()
        return True

    def janitor(self) -> list[DocId]:
        """Time passes: relays unload rooms nobody uses (they reload from storage)."""
        self.clock += 1.0
        unloaded = [d for host in self.hosts for d in host.hub.unload_idle(self.clock, 0.5)]
        if unloaded:
            self.log.append("a relay unloads the idle room")
        return unloaded

    def ready(self, edits: bool = True) -> list[tuple[str, int]]:
        """Every event that can happen now, in a fixed order: a local edit by any
        replica (unless ``edits`` is False); a replica (re)connecting; a frame
        the relay can read (``up``) or a replica can read (``down``, which is
        also how a replica notices that the relay closed); the next piece of a
        large sync (``piece``); a frame of an abandoned connection (``late``); a
        room load, a group commit, a compaction, a snapshot read, another relay's
        update (``feed``); the partition healing."""
        self._collect()
        events = [("edit", i) for i in range(self.size)] if edits else []
        for i, node in enumerate(self.nodes):
            self.pump(i)
            link = node.link
            if link is None:
                if i not in self.partitioned:
                    events.append(("connect", i))
                continue
            if link.relay_open and link.up:
                events.append(("up", i))
            if link.down or not link.relay_open:
                events.append(("down", i))
            if link.relay_open and self.hosts[link.host].hub.syncs.pending(link.relay):
                events.append(("piece", i))
        events.extend(("late", k) for k in range(len(self.orphans)))
        for host in self.hosts:
            if host.loads:
                events.append(("load", host.index))
            if host.hub.writes_waiting:
                events.append(("commit", host.index))
            if host.compactions:
                events.append(("compact", host.index))
            if host.snapshot_reads:
                events.append(("snapshot", host.index))
            if host.remote:
                events.append(("feed", host.index))
        if self.partitioned:
            events.append(("heal", 0))
        return events

    def step(
        self,
        choice: int,
        duplicate: bool = False,
        edit: tuple[str, int, int] | None = ("text_insert", 0, 0),
    ) -> str:
        """Make ready event number ``choice`` (modulo how many are ready) happen.
        ``duplicate`` delivers an UPDATE frame twice; ``edit`` is ``(kind, a, b)``
        for :meth:`edit`, or None to leave edits out. Returns what happened
        (``""`` if nothing was ready)."""
        events = self.ready(edits=edit is not None)
        if not events:
            return ""
        kind, i = events[choice % len(events)]
        if kind == "edit" and edit is not None:
            self.edit(i, *edit)
            return kind
        if kind == "connect":
            self.connect(i)
        elif kind == "up":
            self.deliver_up(i, duplicate)
        elif kind == "down":
            self.deliver_down(i, duplicate)
        elif kind == "piece":
            self.send_piece(i)
        elif kind == "late":
            self.late(i)
        elif kind == "load":
            self.load(i)
        elif kind == "commit":
            self.commit(i)
        elif kind == "compact":
            self.compact(i)
        elif kind == "snapshot":
            self.read_snapshot(i)
        elif kind == "feed":
            self.feed(i)
        else:
            self.heal()
        return kind

    def quiesce(self, limit: int = 20_000) -> None:
        """Reconnect whoever can, and deliver everything until nothing moves."""
        for _ in range(limit):
            moved = False
            for i in range(self.size):
                moved |= self.connect(i)
            for k in range(len(self.hosts)):
                while (
                    self.load(k)
                    or self.commit(k)
                    or self.compact(k)
                    or self.read_snapshot(k)
                    or self.feed(k)
                ):
                    moved = True
            while self.late(0):
                moved = True
            for i in range(self.size):
                while self.deliver_up(i):
                    moved = True
                while self.send_piece(i):
                    moved = True
                while self.deliver_down(i):
                    moved = True
            if not moved:
                return
        raise AssertionError("the network did not go quiet")

    # -- edits ----------------------------------------------------------------------------------

    def token(self, i: int) -> str:
        """New content nobody else writes: ``<replica.n>``."""
        self.counter += 1
        self.written.add((i, self.counter))
        return f"<{i}.{self.counter}>"

    def doc(self, i: int) -> pycrdt.Doc[Any]:
        return self.nodes[i].replica.open(D)

    def edit(self, i: int, kind: str, a: int, b: int) -> None:
        """One local change (one transaction) by replica ``i``: see
        :func:`tests.edits.apply_edit`."""
        self.log.append(f"r{i} edits: {kind} {a} {b}")
        apply_edit(self.doc(i), kind, a, b, lambda: self.token(i))
        self.pump(i)

    # -- invariants ---------------------------------------------------------------------------

    def stored(self) -> tuple[pycrdt.Doc[Any], list[bytes]]:
        """The relay's storage as a restarted relay loads it: the document, and the
        updates it holds for missing dependencies."""
        replayed = replay(self.disk.load(D))
        doc, held = replayed.doc, replayed.held
        return doc, [item.update for item in held]

    def check_acked_are_stored(self) -> None:
        """(1) Every local update an ACK covered is in the relay's storage (what a
        restarted relay loads): integrated there, or held for its dependencies."""
        acks = [node.acked for node in self.nodes]
        if self._checked_version == self.storage_version and self._checked_acks == acks:
            return
        doc, held = self.stored()
        have = Coverage(doc, held)
        for node in self.nodes:
            for seq, update in node.local.items():
                if seq <= node.acked:
                    missing = have.missing(update)
                    assert not missing, (
                        f"replica {node.index}: acknowledged change {seq} is not in the "
                        f"relay's storage (missing {missing})"
                    )
        self._checked_version, self._checked_acks = self.storage_version, acks

    def check_replicas_stored(self) -> None:
        """(2) Every change a replica's call returned from is in its store: the store,
        rebuilt from scratch as a restart does, equals the live document."""
        for node in self.nodes:
            loaded = node.replica.store.load_document(D)
            assert loaded is not None
            rebuilt = rebuild_document(loaded)[0].doc
            assert doc_state(rebuilt) == doc_state(self.doc(node.index)), (
                f"replica {node.index}: its store lacks what its document holds"
            )

    def check_no_foreign_content(self) -> None:
        """(3) No document holds content nobody wrote, or anything twice."""
        docs = [(f"replica {node.index}", self.doc(node.index)) for node in self.nodes]
        for host in self.hosts:
            room = host.hub.rooms.get(D)
            if room is not None:
                docs.append((f"relay {host.index}'s room", room.doc))
        for name, doc in docs:
            for token, count in Counter(tokens_in(doc)).items():
                assert token in self.written, f"{name}: {token} was never written"
                assert count == 1, f"{name}: {token} appears {count} times"

    def check_no_errors(self) -> None:
        """(4) Honest peers: the relay never refuses anything a replica sends."""
        for node in self.nodes:
            assert not node.errors, f"replica {node.index} received {node.errors}"

    def check_all(self) -> None:
        self.check_acked_are_stored()
        self.check_replicas_stored()
        self.check_no_foreign_content()
        self.check_no_errors()

    # -- the end ------------------------------------------------------------------------------

    def converge_and_check(self) -> None:
        """Heal, let the relay notice every dead connection, reconnect everyone, deliver
        until quiet, and compare everything; then restart every replica and the relay
        from their stores and compare again."""
        self.heal()
        while self.orphans:
            self.late(0)
        self.quiesce()
        self._check_converged()
        expected = content(self.doc(0))
        for i in range(self.size):
            self.crash_replica(i)  # asserts the restarted document is the same
        self.crash_relay()
        self.quiesce()
        self._check_converged()
        assert content(self.doc(0)) == expected, "a restart after convergence changed content"
        self.check_all()

    def _check_converged(self) -> None:
        docs = [self.doc(i) for i in range(self.size)]
        rooms = [host.hub.rooms[D] for host in self.hosts if D in host.hub.rooms]
        room = rooms[0]
        stored, held = self.stored()
        assert not held, f"the relay's storage still holds {len(held)} update(s)"
        for other in rooms:
            assert not other.live.held, f"a relay's room still holds {len(other.live.held)}"
        expected = doc_state(room.doc)
        named = [(f"replica {i}", d) for i, d in enumerate(docs)]
        named += [(f"relay room {n}", r.doc) for n, r in enumerate(rooms)]
        for name, doc in [*named, ("storage", stored)]:
            assert doc_state(doc) == expected, f"{name} did not converge with the relay's room"
        contents = {content(doc) for doc in [*docs, *(r.doc for r in rooms), stored]}
        assert len(contents) == 1, contents
        for node in self.nodes:
            assert node.replica.pending(D) == 0, f"replica {node.index} has changes pending"
            assert node.session.is_synced(D), f"replica {node.index} is not synced"
            loaded = node.replica.store.load_document(D)
            assert loaded is not None
            live, _ = rebuild_document(loaded)
            rebuilt, replica_held = live.doc, live.held
            assert not replica_held, f"replica {node.index}'s store still holds updates"
            assert doc_state(rebuilt) == expected
            assert content(rebuilt) == content(room.doc)
        self.check_all()


# -- what the invariants read ------------------------------------------------------------------


class Coverage:
    """What a stored document holds: its integrated clock ranges and deletions, plus
    the updates it holds back. Answers whether an update adds anything to it."""

    def __init__(self, doc: pycrdt.Doc[Any], held: list[bytes]) -> None:
        state, deletes = doc_state(doc)
        self.ranges: dict[int, list[tuple[int, int]]] = {c: [(0, k)] for c, k in state.items()}
        self.deletes: dict[int, list[tuple[int, int]]] = {
            c: [(clock, clock + n) for clock, n in spans] for c, spans in deletes.items()
        }
        for update in held:
            summary = summarize_update(update)
            for client, spans in summary.ranges.items():
                self.ranges.setdefault(client, []).extend(spans)
            for client, dspans in summary.delete_set.items():
                self.deletes.setdefault(client, []).extend((c, c + n) for c, n in dspans)

    def missing(self, update: bytes) -> dict[str, list[tuple[int, int, int]]]:
        """``{"items" | "deletions": [(client, start, end)]}`` the update has and this lacks."""
        summary = summarize_update(update)
        out: dict[str, list[tuple[int, int, int]]] = {}
        for what, spans_of, have in (
            ("items", summary.ranges, self.ranges),
            ("deletions", _ends(summary.delete_set), self.deletes),
        ):
            for client, spans in spans_of.items():
                for start, end in spans:
                    if not _covered(start, end, have.get(client, [])):
                        out.setdefault(what, []).append((client, start, end))
        return out


def _ends(delete_set: DeleteSet) -> dict[int, list[tuple[int, int]]]:
    return {c: [(clock, clock + n) for clock, n in spans] for c, spans in delete_set.items()}


def _covered(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    """True if ``[start, end)`` lies within the union of ``spans``."""
    at = start
    for first, last in sorted(spans):
        if first > at:
            break
        at = max(at, last)
        if at >= end:
            return True
    return at >= end


def describe(data: bytes) -> str:
    """A frame in a few words, for the log."""
    frame = decode_frame(data, 1 << 30)
    name = type(frame).__name__.upper()
    seq = getattr(frame, "seq", None)
    size = len(getattr(frame, "update", b""))
    code = getattr(frame, "code", None)
    return (
        name
        + (f" seq={seq}" if seq else "")
        + (f" {size} B" if size else "")
        + (f" {code}" if code else "")
    )


def _nothing() -> None:
    """The hub's write notification: commits happen when the scenario says."""
