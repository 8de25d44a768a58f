"""A deterministic in-process network for the sans-I/O sessions.

Wires :class:`~crdtsync.sync.session.ClientSession` objects (each over a real
:class:`~crdtsync.Replica`) to one :class:`~relay.rooms.Hub` whose storage is a
plain dict, and moves frames only when told to. No sockets, no asyncio, no
clock: the same objects the relay server and the asyncio client drive.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pycrdt

from crdtsync import Replica
from crdtsync.events import DocumentOpened, LocalUpdate, ReplicaEvent
from crdtsync.ids import DocId
from crdtsync.sync.session import ClientSession
from relay.room import Write
from relay.rooms import Hub
from relay.session import Limits, RelaySession
from relay.storage import StoredRoom, StoredUpdate


@dataclass
class SimStorage:
    """The relay's storage as a dict: doc id -> [(id, update)]. Survives hub restarts."""

    log: dict[DocId, list[StoredUpdate]] = field(default_factory=dict)
    next_id: int = 1

    def load(self, doc_id: DocId) -> StoredRoom:
        return StoredRoom(doc_id, None, 0, list(self.log.get(doc_id, [])))

    def append(self, writes: list[Write]) -> list[int]:
        ids = []
        for write in writes:
            self.log.setdefault(write.doc_id, []).append(StoredUpdate(self.next_id, write.update))
            ids.append(self.next_id)
            self.next_id += 1
        return ids


@dataclass(eq=False)
class Link:
    """One connection: a client session, its relay session and the frames in flight."""

    client: ClientSession
    relay: RelaySession
    up: deque[bytes] = field(default_factory=deque)  # client -> relay
    down: deque[bytes] = field(default_factory=deque)  # relay -> client


class SimNetwork:
    """Deterministic wiring; call :meth:`run` to deliver everything until quiet."""

    def __init__(self, storage: SimStorage | None = None, limits: Limits | None = None) -> None:
        self.storage = storage or SimStorage()
        self.limits = limits or Limits()
        self._loads: list[DocId] = []
        self.hub = self._new_hub()
        self.links: dict[ClientSession, Link] = {}
        self.closed: list[Link] = []

    def _new_hub(self) -> Hub:
        return Hub("sim-relay", self.limits, on_load=self._loads.append)

    def restart_relay(self) -> None:
        """The relay crashes: every connection and unstored write is lost."""
        for link in list(self.links.values()):
            self.disconnect(link.client)
        self._loads.clear()
        self.hub = self._new_hub()

    def client(self, replica: Replica, token: str | None = None) -> ClientSession:
        """A client session over ``replica`` that sends its local changes as they happen."""
        session = ClientSession(replica, replica.replica_id, token=token)
        for doc_id in replica._docs:
            session.add_document(doc_id)

        def on_event(event: ReplicaEvent) -> None:
            if isinstance(event, LocalUpdate):
                session.local_update(event.doc_id, event.seq, event.update)
            elif isinstance(event, DocumentOpened):
                session.add_document(event.doc_id)

        replica.observe(on_event)
        return session

    def connect(self, client: ClientSession) -> Link:
        link = Link(client, self.hub.open_session(name=client.replica_id))
        self.links[client] = link
        client.connecting()
        client.connected()
        return link

    def disconnect(self, client: ClientSession) -> None:
        link = self.links.pop(client, None)
        if link is None:
            return
        self.hub.close_session(link.relay)
        client.connection_lost()
        self.closed.append(link)

    def step(self) -> bool:
        """Move every queued frame one hop and run storage; True if anything moved."""
        moved = False
        for link in list(self.links.values()):
            link.up.extend(link.client.frames_to_send())
            while link.up:
                moved = True
                self.hub.receive(link.relay, link.up.popleft())
        if self._loads:
            moved = True
            loads = list(self._loads)
            self._loads.clear()  # the hub holds this list's append
            for doc_id in loads:
                self.hub.loaded(doc_id, self.storage.load(doc_id))
        writes = self.hub.take_writes()
        if writes:
            moved = True
            self.hub.written(writes, self.storage.append(writes))
        for client, link in list(self.links.items()):
            while self.hub.syncs.feed(link.relay):  # large syncs, in pieces (no flow control here)
                moved = True
            link.down.extend(link.relay.frames_to_send())
            while link.down and client in self.links:
                moved = True
                client.receive(link.down.popleft())
            if link.relay.close is not None:
                self.disconnect(client)
        return moved

    def run(self, limit: int = 1000) -> None:
        for _ in range(limit):
            if not self.step():
                return
        raise AssertionError("the network did not go quiet")


def text(replica: Replica, doc_id: str = "doc") -> pycrdt.Text:
    """The root Text ``t`` of ``doc_id`` (opened if needed)."""
    return replica.open(doc_id).get("t", type=pycrdt.Text)
