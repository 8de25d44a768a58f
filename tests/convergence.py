"""A simulated network that hypothesis (or a seeded random soak) controls, over
the product's own sans-I/O objects: real :class:`~crdtsync.Replica` objects on
real stores (memory or SQLite files), their :class:`~crdtsync.session.ClientSession`,
and the relay's :class:`~relay.rooms.Hub` with its storage (a dict, or the real
:class:`~relay.storage.SQLiteStorage` driven on a private event loop).

What the network does, and why it is a fair adversary:

- Every connection is a pair of FIFO queues (a websocket is ordered and
  reliable while it lasts); *which* queue moves next is free, so frames are
  reordered across connections arbitrarily.
- A frame can be duplicated in its queue when it is an UPDATE: CRDT updates
  must be idempotent in both directions.
- Losing frames means losing a connection: a cut drops everything in flight
  both ways (a websocket never loses one frame and delivers the next; ACKs
  rely on that order). Partitions keep a set of replicas cut off.
- A replica crash drops the Replica object without any goodbye and reopens
  its store (in-memory state lost); a relay crash drops the hub, its rooms and
  the writes it had not committed, and reopens its storage.
- Storage commits happen when the scenario says so, so ACKs wait for them.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pycrdt

from crdtsync import Replica
from crdtsync.events import DocumentOpened, LocalUpdate, ReplicaEvent
from crdtsync.ids import DocId
from crdtsync.protocol import Ack, Update, decode_frame
from crdtsync.replica import _rebuild
from crdtsync.session import ClientSession, Limits, RelaySession
from crdtsync.statevector import doc_state
from crdtsync.store.memory import MemoryData, MemoryStore
from relay.rooms import Hub, Write, replay
from relay.storage import SQLiteStorage, StoredRoom, StoredUpdate

D = DocId("doc")
LIMITS = Limits(max_updates_per_second=0, max_bytes_per_second=0)
TOKEN = re.compile(r"<(\d+)\.(\d+)>")


class DictStorage:
    """The relay's storage as a dict that survives relay crashes."""

    def __init__(self) -> None:
        self.log: list[StoredUpdate] = []

    def load(self, doc_id: DocId) -> StoredRoom:
        return StoredRoom(doc_id, None, 0, list(self.log))

    def append(self, writes: list[Write]) -> list[int]:
        first = len(self.log) + 1
        self.log.extend(StoredUpdate(first + i, w.update) for i, w in enumerate(writes))
        return list(range(first, first + len(writes)))

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


class SQLiteRelayStorage:
    """The real SQLite relay storage, driven synchronously on a private loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.loop = asyncio.new_event_loop()
        self.storage = self._open()

    def _open(self) -> SQLiteStorage:
        storage = SQLiteStorage(self.path, synchronous="normal")
        self.loop.run_until_complete(storage.open())
        return storage

    def load(self, doc_id: DocId) -> StoredRoom:
        return self.loop.run_until_complete(self.storage.load(doc_id))

    def append(self, writes: list[Write]) -> list[int]:
        batch = [(w.doc_id, w.update) for w in writes]
        return self.loop.run_until_complete(self.storage.append(batch))

    def reopen(self) -> None:
        """A relay crash: what was committed is what the next process finds."""
        self.loop.run_until_complete(self.storage.close())
        self.storage = self._open()

    def close(self) -> None:
        self.loop.run_until_complete(self.storage.close())
        self.loop.close()


@dataclass(eq=False)
class Link:
    """One connection: the client session, its relay session, frames in flight."""

    relay: RelaySession
    up: deque[bytes] = field(default_factory=deque)
    down: deque[bytes] = field(default_factory=deque)


@dataclass(eq=False)
class Node:
    """One replica, its session, and what it wrote (for the invariants)."""

    index: int
    replica: Replica
    session: ClientSession
    link: Link | None = None
    outbox: dict[int, bytes] = field(default_factory=dict)  # seq -> update (local changes)
    acked: int = 0  # highest seq the relay acknowledged
    checked: int = 0  # acknowledged seqs up to this one were found in storage


class Network:
    """N replicas and one relay; every decision is made by the caller."""

    def __init__(self, size: int, backend: str) -> None:
        self.backend = backend
        self.dir = Path(tempfile.mkdtemp(prefix="crdtsync-net-"))
        self.store_data = [MemoryData() for _ in range(size)]
        self.storage: DictStorage | SQLiteRelayStorage = (
            DictStorage() if backend == "memory" else SQLiteRelayStorage(self.dir / "relay.db")
        )
        self.nodes = [self._start(i) for i in range(size)]
        self.partitioned: set[int] = set()
        self.written: set[tuple[int, int]] = set()  # tokens (replica, n) ever written
        self.counter = 0
        self._loads: list[DocId] = []
        self.hub = self._hub()

    # -- life cycle -------------------------------------------------------------------------

    def _hub(self) -> Hub:
        self._loads = []
        return Hub("sim-relay", LIMITS, on_load=self._loads.append)

    def _start(self, index: int) -> Node:
        if self.backend == "memory":
            replica = Replica(store=MemoryStore(self.store_data[index]))
        else:
            replica = Replica(self.dir / f"replica-{index}.db", durability="normal")
        replica.open(D)
        session = ClientSession(replica, replica.replica_id)
        session.add_document(D)
        node = Node(index, replica, session)
        node.acked = replica._store.document_info(D).acked_seq  # type: ignore[union-attr]

        def on_event(event: ReplicaEvent) -> None:
            if isinstance(event, LocalUpdate):
                node.outbox[event.seq] = event.update
                session.local_update(event.doc_id, event.seq, event.update)
            elif isinstance(event, DocumentOpened):
                session.add_document(event.doc_id)

        replica.observe(on_event)
        return node

    def close(self) -> None:
        for node in self.nodes:
            node.replica.close()
        self.storage.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- connections ------------------------------------------------------------------------

    def connect(self, i: int) -> None:
        node = self.nodes[i]
        if node.link is not None or i in self.partitioned:
            return
        node.link = Link(self.hub.open_session(name=f"r{i}"))
        node.session.connecting()
        node.session.connected()

    def cut(self, i: int) -> None:
        """The connection ends: whatever is in flight is lost, both ways."""
        node = self.nodes[i]
        if node.link is None:
            return
        self.hub.close_session(node.link.relay)
        node.session.connection_lost()
        node.link = None

    def partition(self, members: set[int]) -> None:
        for i in members:
            self.cut(i)
        self.partitioned |= members

    def heal(self) -> None:
        self.partitioned.clear()

    def crash_replica(self, i: int) -> None:
        """The replica's process dies: nothing but its store survives."""
        self.cut(i)
        node = self.nodes[i]
        # Every change is stored before the call that made it returns, so closing
        # releases the store and loses exactly what a crash loses: the objects.
        node.replica.close()
        old = node
        self.nodes[i] = self._start(i)
        self.nodes[i].outbox = old.outbox
        self.nodes[i].acked = max(self.nodes[i].acked, old.acked)
        self.nodes[i].checked = old.checked

    def crash_relay(self) -> None:
        """The relay's process dies: rooms and uncommitted writes are lost."""
        for i in range(len(self.nodes)):
            self.cut(i)
        self.hub = self._hub()
        self.storage.reopen()

    # -- moving frames ----------------------------------------------------------------------

    def pump(self, i: int) -> None:
        """Collect what replica ``i`` wants to send into its link (or drop it if offline)."""
        node = self.nodes[i]
        frames = node.session.frames_to_send()
        if node.link is not None:
            node.link.up.extend(frames)

    def deliver_up(self, i: int, duplicate: bool = False) -> bool:
        node = self.nodes[i]
        self.pump(i)
        if node.link is None or not node.link.up:
            return False
        data = node.link.up.popleft()
        if duplicate and isinstance(decode_frame(data), Update):
            node.link.up.appendleft(data)
        self.hub.receive(node.link.relay, data)
        self._loads_done()
        self._collect(i)
        return True

    def deliver_down(self, i: int, duplicate: bool = False) -> bool:
        node = self.nodes[i]
        self._collect(i)
        if node.link is None or not node.link.down:
            return False
        data = node.link.down.popleft()
        frame = decode_frame(data)
        if duplicate and isinstance(frame, Update):
            node.link.down.appendleft(data)
        if isinstance(frame, Ack):
            node.acked = max(node.acked, frame.seq)
        node.session.receive(data)
        self.pump(i)
        return True

    def _collect(self, i: int) -> None:
        """Move the relay's output for every connection into the links."""
        for node in self.nodes:
            if node.link is None:
                continue
            node.link.down.extend(node.link.relay.frames_to_send())
            if node.link.relay.close is not None:
                self.cut(node.index)

    def _loads_done(self) -> None:
        while self._loads:
            doc_id = self._loads.pop(0)
            self.hub.loaded(doc_id, self.storage.load(doc_id))

    def commit(self) -> bool:
        """One storage commit of everything the hub has waiting (ACKs follow)."""
        writes = self.hub.take_writes()
        if not writes:
            return False
        self.hub.written(writes, self.storage.append(writes))
        for node in self.nodes:
            if node.link is not None:
                node.link.down.extend(node.link.relay.frames_to_send())
        return True

    def quiesce(self, limit: int = 10_000) -> None:
        """Deliver everything, in a fixed order, until nothing moves."""
        for _ in range(limit):
            moved = self.commit()
            for i in range(len(self.nodes)):
                while self.deliver_up(i):
                    moved = True
                while self.deliver_down(i):
                    moved = True
            self._loads_done()
            if not moved:
                return
        raise AssertionError("the network did not go quiet")

    # -- edits ------------------------------------------------------------------------------

    def token(self, i: int) -> str:
        self.counter += 1
        self.written.add((i, self.counter))
        return f"<{i}.{self.counter}>"

    def doc(self, i: int) -> pycrdt.Doc[Any]:
        return self.nodes[i].replica.open(D)

    def edit(self, i: int, kind: str, a: int, b: int) -> None:
        """One local change by replica ``i`` (``a``/``b`` pick positions and options)."""
        doc = self.doc(i)
        text = doc.get("t", type=pycrdt.Text)
        array = doc.get("a", type=pycrdt.Array)
        mapping = doc.get("m", type=pycrdt.Map)
        length = len(str(text))
        # Text holds whole tokens only: inserts go between tokens, deletes take
        # whole tokens (so no deletion can splice a token that nobody wrote).
        spans = [m.span() for m in TOKEN.finditer(str(text))]
        if kind == "text_insert":
            attrs = {"bold": True} if b % 3 == 0 else None
            at = ([0] + [end for _, end in spans])[a % (len(spans) + 1)]
            text.insert(at, self.token(i), attrs=attrs)
        elif kind == "text_delete" and spans:
            start, end = spans[a % len(spans)]
            del text[start:end]
        elif kind == "text_format" and length:
            start = a % length
            text.format(start, min(length, start + 1 + b % 5), {"italic": b % 2 == 0})
        elif kind == "array_insert":
            array.insert(a % (len(array) + 1), self.token(i))
        elif kind == "array_delete" and len(array):
            del array[a % len(array)]
        elif kind == "array_move" and len(array):
            # pycrdt 0.14 has no Array.move: a move is a delete and an insert in one
            # transaction; the moved element is new content (a new token).
            with doc.transaction():
                del array[a % len(array)]
                array.insert(b % (len(array) + 1), self.token(i))
        elif kind == "map_set":
            mapping[f"k{a % 5}"] = self.token(i)
        elif kind == "map_delete":
            key = f"k{a % 5}"
            if key in mapping:
                del mapping[key]
        elif kind == "nested":
            mapping[f"n{a % 3}"] = pycrdt.Map(
                {"list": pycrdt.Array([self.token(i)]), "note": pycrdt.Text(self.token(i))}
            )
        elif kind == "nested_edit":
            nested = mapping.get(f"n{a % 3}")
            if isinstance(nested, pycrdt.Map):
                inner = nested.get("list")
                if isinstance(inner, pycrdt.Array):
                    inner.append(self.token(i))
        elif kind == "transaction":
            with doc.transaction():
                text.insert(0, self.token(i))
                mapping[f"k{b % 5}"] = self.token(i)
                array.append(self.token(i))
        self.pump(i)

    # -- invariants -------------------------------------------------------------------------

    def stored_doc(self) -> pycrdt.Doc[Any]:
        doc, _ = replay(self.storage.load(D))
        return doc

    def check_acked_are_stored(self) -> None:
        """(1) Every update the relay acknowledged is in its storage."""
        if all(node.checked >= node.acked for node in self.nodes):
            return
        stored = self.stored_doc()
        state = doc_state(stored)
        for node in self.nodes:
            for seq, update in node.outbox.items():
                if node.checked < seq <= node.acked:
                    stored.apply_update(update)
                    assert doc_state(stored) == state, (
                        f"replica {node.index}: acknowledged change {seq} is not stored"
                    )
            # Storage only grows (no compaction here): checked once is checked.
            node.checked = max(node.checked, node.acked)

    def check_replicas_stored(self) -> None:
        """(2) Every change a replica's call returned from is in its store."""
        for node in self.nodes:
            stored = node.replica._store.load_document(D)
            assert stored is not None
            rebuilt, _, _ = _rebuild(stored)
            assert doc_state(rebuilt) == doc_state(node.replica.open(D)), (
                f"replica {node.index}: its store lacks what its document holds"
            )

    def check_no_foreign_content(self) -> None:
        """(3) Nothing appears that no replica wrote, and nothing twice."""
        for node in self.nodes:
            tokens = Counter(tokens_in(node.replica.open(D)))
            for token, count in tokens.items():
                assert token in self.written, f"replica {node.index}: {token} was never written"
                assert count == 1, f"replica {node.index}: {token} appears {count} times"

    # -- the end ----------------------------------------------------------------------------

    def converge_and_check(self) -> None:
        """Heal, reconnect everyone, deliver until quiet, then compare everything."""
        self.heal()
        for i in range(len(self.nodes)):
            self.cut(i)
            self.connect(i)
        self.quiesce()
        docs = [self.doc(i) for i in range(len(self.nodes))]
        room = self.hub.rooms[D].doc
        stored = self.stored_doc()
        expected = doc_state(room)
        for i, doc in enumerate([*docs, stored]):
            assert doc_state(doc) == expected, f"document {i} did not converge"
        contents = {content(doc) for doc in [*docs, room, stored]}
        assert len(contents) == 1, contents
        for node in self.nodes:
            assert node.replica.pending(D) == 0
            loaded = node.replica._store.load_document(D)
            assert loaded is not None
            rebuilt, held, _ = _rebuild(loaded)
            assert doc_state(rebuilt) == expected and not held
        self.check_no_foreign_content()


def content(doc: pycrdt.Doc[Any]) -> str:
    """Every root type's content (text with formatting, array, map) as one string."""
    text = doc.get("t", type=pycrdt.Text)
    return json.dumps(
        [
            [[chunk, attrs] for chunk, attrs, *_ in text.diff()],
            doc.get("a", type=pycrdt.Array).to_py(),
            doc.get("m", type=pycrdt.Map).to_py(),
        ],
        sort_keys=True,
    )


def tokens_in(doc: pycrdt.Doc[Any]) -> Iterator[tuple[int, int]]:
    """Every token in the document (the text as a whole string: formatting splits
    it into chunks)."""
    parts = [
        str(doc.get("t", type=pycrdt.Text)),
        json.dumps(doc.get("a", type=pycrdt.Array).to_py()),
        json.dumps(doc.get("m", type=pycrdt.Map).to_py()),
    ]
    for match in TOKEN.finditer(" ".join(parts)):
        yield int(match.group(1)), int(match.group(2))
