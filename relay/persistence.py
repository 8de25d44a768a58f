"""The relay's storage work: room loads, group commit, and compaction.

:class:`Persistence` answers the hub's storage callbacks (``on_load``,
``on_write``, ``on_compact``) with calls to a :class:`~relay.storage.RelayStorage`:

- one writer for the whole relay doing group commit: every update received
  while a commit runs goes into the next one (after ``commit_delay`` seconds,
  so that paced updates share an fsync), and the hub sends the ACKs after the
  commit that holds them (DESIGN.md guarantee 2; fan-out never waits for it);
- room loads, as tasks; a loaded room is *followed* (shared storage delivers
  other relays' appends to it) until the hub unloads it; reads of a room's
  snapshot for a large sync;
- compaction, as tasks: from the live room when it is exactly what storage
  holds (:meth:`relay.rooms.Hub.live_snapshot`), otherwise by replaying storage
  on a worker thread; either way the snapshot is verified to reproduce the
  document before the log it replaces is deleted.

Storage out of reach (:class:`~crdtsync.errors.StoreUnavailableError`: Redis
down) is waited out, not failed: the writer keeps what it could not store and
retries (every ``retry_delay`` seconds, doubling up to one second), the hub
tells the senders once (ERROR storage_unavailable) and acknowledges once the
retry stored it; loads are retried the same way. Only past ``max_pending_bytes``
of unstored updates does the writer give up on them
(:meth:`relay.rooms.Hub.write_failed`: the clients resend from their outboxes).
Any other storage failure fails at once, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from crdtsync.document import check_snapshot, verified_snapshot
from crdtsync.errors import StoreError, StoreUnavailableError
from crdtsync.ids import DocId

from .room import Write, replay
from .rooms import Hub
from .storage import RelayStorage, StoredRoom

__all__ = ["Persistence", "compaction_snapshot"]

logger = logging.getLogger("relay.persistence")


class Persistence:
    """Carries out the storage work a :class:`~relay.rooms.Hub` asks for.

    Takes over the hub's ``on_load``, ``on_write`` and ``on_compact`` callbacks.
    Call :meth:`start` on the event loop, :meth:`drain` to wait until everything
    received is stored (or failed), and :meth:`stop` last.
    """

    def __init__(
        self,
        hub: Hub,
        storage: RelayStorage,
        *,
        commit_delay: float = 0.002,
        retry_delay: float = 0.05,
        max_pending_bytes: int = 64 << 20,
    ) -> None:
        self.hub = hub
        self.storage = storage
        self.commit_delay = commit_delay
        """Seconds the writer waits before a commit so that more updates share its
        fsync (group commit). Delays ACKs, never fan-out."""
        self.retry_delay = retry_delay
        """First wait (seconds) before storage out of reach is tried again; doubles
        up to one second."""
        self.max_pending_bytes = max_pending_bytes
        """Bytes of updates kept for unreachable storage before they are failed."""
        self.unavailable = False
        """True while storage is out of reach for the writer (updates wait)."""
        self.on_commit: Callable[[float, Sequence[Write]], None] | None = None
        """Called after each successful commit with its duration (seconds) and its
        writes (metrics)."""
        hub.on_load = self._on_load
        hub.on_write = self._on_write
        hub.on_compact = self._on_compact
        hub.on_unload = storage.unfollow
        # Large syncs from nothing send the stored snapshot. Shared storage may hold
        # more than this process's room (another relay's updates on their way
        # here): the pieces then carry them early, the final SYNC the rest of the
        # room and its whole delete set, and the fan-out what comes later.
        hub.syncs.request_snapshot = self._on_snapshot
        self._tasks: set[asyncio.Task[None]] = set()
        self._write_wake = asyncio.Event()
        self._writes_idle = asyncio.Event()
        self._writes_idle.set()
        self._writer: asyncio.Task[None] | None = None
        self._draining = False
        self._kept: list[Write] = []  # writes that found storage out of reach

    def start(self) -> None:
        """Start the storage writer."""
        self._writer = asyncio.get_running_loop().create_task(
            self._write_loop(), name="relay storage writer"
        )

    async def drain(self) -> None:
        """Wait until every received update is stored (or failed); commits no longer
        wait for ``commit_delay``."""
        self._draining = True
        while self.hub.writes_waiting or not self._writes_idle.is_set():
            self._write_wake.set()
            await self._writes_idle.wait()

    async def stop(self) -> None:
        """Cancel the writer, loads and compactions (after :meth:`drain`)."""
        tasks = [t for t in (self._writer, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._writer = None
        self._draining = False

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` as a task that :meth:`stop` cancels."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- loads -------------------------------------------------------------------------------

    def _on_load(self, doc_id: DocId) -> None:
        self.spawn(self._load(doc_id), f"load {doc_id}")

    async def _load(self, doc_id: DocId) -> None:
        delay = self.retry_delay
        while True:
            try:
                stored = await self.storage.load(doc_id, follow=True)
            except StoreUnavailableError as exc:
                if not self.hub.load_delayed(doc_id, exc):
                    self.storage.unfollow(doc_id)
                    return  # nobody waits for it any more
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)
                continue
            except StoreError as exc:
                self.hub.load_failed(doc_id, exc)
                return
            break
        if doc_id not in self.hub.rooms:
            self.storage.unfollow(doc_id)  # dropped while loading
        self.hub.loaded(doc_id, stored)

    def _on_snapshot(self, doc_id: DocId) -> None:
        self.spawn(self._read_snapshot(doc_id), f"snapshot {doc_id}")

    async def _read_snapshot(self, doc_id: DocId) -> None:
        """A large sync from nothing sends the stored snapshot: reading it costs the
        event loop nothing, where pycrdt's encoding of the room holds it."""
        try:
            stored = await self.storage.load(doc_id)
        except StoreError as exc:
            logger.warning("reading the snapshot of %r failed (%s); encoding the room", doc_id, exc)
            stored = None
        room = self.hub.rooms.get(doc_id)
        if room is not None:
            self.hub.syncs.snapshot_loaded(room, stored.snapshot if stored else None)

    # -- group commit ------------------------------------------------------------------------

    def _on_write(self) -> None:
        self._writes_idle.clear()
        self._write_wake.set()

    @property
    def writes_waiting(self) -> int:
        """Updates received and not stored yet (metrics)."""
        return self.hub.writes_waiting + len(self._kept)

    async def _write_loop(self) -> None:
        """Group commit: everything received while one commit runs goes into the next.
        Writes that found storage out of reach stay first in line for the next try."""
        delay = self.retry_delay
        while True:
            await self._write_wake.wait()
            if self.commit_delay and not self._draining and not self._kept:
                # Let more updates join this commit: one fsync for all of them.
                await asyncio.sleep(self.commit_delay)
            self._write_wake.clear()
            writes = self._kept + self.hub.take_writes()
            self._kept = []
            if writes:
                self._kept = await self._commit(writes)
            # Hold nothing of this commit while waiting for the next: each write holds
            # its sender's session, and through it the whole (maybe closed) connection.
            del writes
            if self._kept:
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)
                self._write_wake.set()
                continue
            delay = self.retry_delay
            if self.hub.writes_waiting:
                self._write_wake.set()
            else:
                self._writes_idle.set()

    async def _commit(self, writes: list[Write]) -> list[Write]:
        """Store ``writes`` in one append; return them if storage was out of reach
        (to try again), else ``[]`` (stored and acknowledged, or failed)."""
        claims = [(w.doc_id, client, owner) for w in writes for client, owner in w.claims]
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            ids = await self.storage.append([(w.doc_id, w.update) for w in writes], claims)
        except StoreUnavailableError as exc:
            if sum(len(w.update) for w in writes) <= self.max_pending_bytes:
                if not self.unavailable:
                    logger.error("storage unreachable; keeping %d update(s): %s", len(writes), exc)
                self.unavailable = True
                self.hub.storage_unavailable(writes, exc)
                return writes
            logger.error("storage unreachable and over %d bytes kept", self.max_pending_bytes)
            self.unavailable = False
            self.hub.write_failed(writes, exc)
            return []
        except StoreError as exc:
            self.hub.write_failed(writes, exc)
            return []
        if self.unavailable:
            logger.warning("storage reachable again; %d update(s) stored", len(writes))
            self.unavailable = False
        self.hub.written(writes, ids)
        if self.on_commit is not None:
            self.on_commit(loop.time() - start, writes)
        return []

    # -- compaction --------------------------------------------------------------------------

    def _on_compact(self, doc_id: DocId) -> None:
        self.spawn(self.compact(doc_id), f"compact {doc_id}")

    async def compact(self, doc_id: DocId) -> None:
        """Compact ``doc_id`` now (what the hub's ``on_compact`` schedules), and tell
        the hub how it went."""
        live = self.hub.live_snapshot(doc_id, shared=self.storage.shared)
        try:
            if live is not None:
                # The room's document is what storage holds up to live.upto: no log to
                # replay; the snapshot is checked against the room's state first.
                snapshot, upto = live.snapshot, live.upto
                await asyncio.to_thread(check_snapshot, snapshot, live.expected)
            else:
                stored = await self.storage.load(doc_id)
                if not stored.updates:
                    self.hub.compacted(doc_id, len(stored.snapshot or b""), stored.snapshot_upto)
                    return
                snapshot, upto = await asyncio.to_thread(compaction_snapshot, stored)
        except (StoreError, ValueError, RuntimeError) as exc:
            self.hub.compaction_failed(doc_id, exc)
            return
        try:
            await self.storage.compact(doc_id, snapshot, upto)
        except ValueError as exc:
            if not self.storage.shared:
                self.hub.compaction_failed(doc_id, exc)
                return
            # Another relay stored a snapshot covering more meanwhile: take its figures.
            logger.info("compaction of %r overtaken by another relay's: %s", doc_id, exc)
            await self._recount(doc_id)
            return
        except StoreError as exc:
            self.hub.compaction_failed(doc_id, exc)
            return
        logger.info(
            "compacted %r: log entries up to %d into a %d-byte snapshot",
            doc_id,
            upto,
            len(snapshot),
        )
        self.hub.compacted(doc_id, len(snapshot), upto)

    async def _recount(self, doc_id: DocId) -> None:
        """Take the stored snapshot's size and coverage as the room's bookkeeping."""
        try:
            stored = await self.storage.load(doc_id)
        except StoreError as exc:
            self.hub.compaction_failed(doc_id, exc)
            return
        self.hub.compacted(doc_id, len(stored.snapshot or b""), stored.snapshot_upto)


def compaction_snapshot(stored: StoredRoom) -> tuple[bytes, int]:
    """The room's state as one update and the last log id it covers, checked to
    reproduce the stored content.

    Log entries still waiting for their dependencies (held) are not folded in:
    the snapshot covers the log up to the first of them, and they stay in the
    log. Raises ``ValueError`` if there is nothing to fold, or if the snapshot
    does not reproduce the same state vector and delete set.
    """
    live = replay(stored)
    updates = stored.updates
    if live.held:
        waiting = {item.update for item in live.held}
        first = next(i for i, entry in enumerate(updates) if entry.update in waiting)
        if first == 0:
            raise ValueError("the oldest log entry waits for missing dependencies")
        updates = updates[:first]
        live = replay(StoredRoom(stored.doc_id, stored.snapshot, stored.snapshot_upto, updates))
    return verified_snapshot(live.doc), updates[-1].id
