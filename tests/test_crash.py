"""Crash tests: a change whose call returned survives a SIGKILL of the process that made it.

A child Python process edits a document one call at a time and prints ``done i``
after each call returns. The parent SIGKILLs it (possibly mid-change), reopens the
store and checks that every reported change is there, the outbox is intact, and
sequence numbers and the CRDT clock continue without reuse.

Change ``i`` is ``m[f"k{i}"] = i`` for even ``i`` and ``text.insert(len(text), "x")``
for odd ``i``: each change is one transaction, one outbox entry and one CRDT item,
so after ``n`` stored changes the content, ``pending`` and the clock all equal ``n``.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from crdtsync import Durability, Replica
from crdtsync.document import DEFAULT_COMPACT_MIN_BYTES
from crdtsync.statevector import decode_state_vector, doc_state

DOC = "doc"
READ_TIMEOUT = 30.0  # seconds a child may take to print its next line

# The child: open the store, continue the numbering where the stored content ends,
# make one change per call and report it once the call has returned.
CHILD = r"""
import sys

import pycrdt

from crdtsync import Replica

path, durability, compact_min_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
replica = Replica(path, durability=durability, compact_min_bytes=compact_min_bytes)
doc = replica.open("doc")
m = doc.get("m", type=pycrdt.Map)
text = doc.get("t", type=pycrdt.Text)
start = len(m) + len(text)
out = sys.stdout
out.write(f"start {start} {replica.client_id('doc')}\n")
out.flush()
for i in range(start, start + 10_000_000):
    if i % 2 == 0:
        m[f"k{i}"] = i
    else:
        text.insert(len(text), "x")
    out.write(f"done {i}\n")
    out.flush()
"""

# The child for the checkpoint test: make changes, then run a WAL checkpoint that a
# real file-size limit (RLIMIT_FSIZE) stops part-way, as a crash mid-checkpoint would.
CHECKPOINT_CHILD = r"""
import resource
import signal
import sys

import pycrdt

from crdtsync import Replica

path, count = sys.argv[1], int(sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
replica = Replica(path)
m = replica.open("doc").get("m", type=pycrdt.Map)
for i in range(count):
    m[f"k{i}"] = "v" * 50
sys.stdout.write(f"done {count}\n")
sys.stdout.flush()
resource.setrlimit(resource.RLIMIT_FSIZE, (8192, resource.RLIM_INFINITY))
try:
    replica.store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
except Exception as exc:
    sys.stdout.write(f"checkpoint failed: {exc}\n")
else:
    sys.stdout.write("checkpoint done\n")
sys.stdout.flush()
sys.stdin.read()  # wait here for the SIGKILL
"""


@dataclass
class Child:
    """A running child process whose stdout is read line by line with a deadline."""

    proc: subprocess.Popen[bytes]
    stderr_path: Path
    buffer: bytes = field(default=b"")

    def stderr(self) -> str:
        """What the child wrote to stderr so far (for failure messages)."""
        return self.stderr_path.read_text(errors="replace")[-3000:]

    def readline(self, timeout: float = READ_TIMEOUT) -> str:
        """The next stdout line, waiting at most ``timeout`` seconds for it."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(remaining, 0))
            if not ready:
                raise TimeoutError(f"no line from the child in {timeout}s:\n{self.stderr()}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError(f"the child exited ({self.proc.poll()}):\n{self.stderr()}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def drain(self) -> list[str]:
        """After the child died: the complete lines still in the pipe."""
        assert self.proc.stdout is not None
        while chunk := os.read(self.proc.stdout.fileno(), 65536):
            self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        return [line.decode() for line in lines]

    def sigkill(self) -> None:
        """SIGKILL the child and reap it; it must not have exited on its own."""
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(timeout=READ_TIMEOUT) == -signal.SIGKILL, self.stderr()


@contextmanager
def spawn(script: str, *args: str, tmp_path: Path) -> Iterator[Child]:
    """Run ``python -c script args``; the child is always killed and reaped on exit."""
    stderr_path = tmp_path / f"child-{time.monotonic_ns()}.stderr"
    with (
        stderr_path.open("wb") as stderr,
        subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        ) as proc,
    ):
        try:
            yield Child(proc, stderr_path)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def run_until_killed(
    path: Path, durability: Durability, count: int, tmp_path: Path, compact_min_bytes: int
) -> tuple[int, int, int]:
    """Start a child on ``path``, read ``count`` done lines, SIGKILL it.

    Returns ``(start, client_id, seen)``: where the child's numbering began, the
    client id it wrote under, and one past the last change it reported done (the
    lines it wrote before it died are read too).
    """
    with spawn(CHILD, str(path), durability, str(compact_min_bytes), tmp_path=tmp_path) as child:
        word, start_text, client_text = child.readline().split()
        assert word == "start", child.stderr()
        start = int(start_text)
        for expected in range(start, start + count):
            assert child.readline() == f"done {expected}", child.stderr()
        child.sigkill()
        later = child.drain()
    assert later == [f"done {i}" for i in range(start + count, start + count + len(later))]
    return start, int(client_text), start + count + len(later)


def apply_change(m: pycrdt.Map[Any], text: pycrdt.Text, i: int) -> None:
    """Change number ``i``, exactly as the child makes it."""
    if i % 2 == 0:
        m[f"k{i}"] = i
    else:
        text.insert(len(text), "x")


def roots(doc: pycrdt.Doc[Any]) -> tuple[pycrdt.Map[Any], pycrdt.Text]:
    """The document's map and text."""
    return doc.get("m", type=pycrdt.Map), doc.get("t", type=pycrdt.Text)


def check_reopened(replica: Replica, seen: int) -> int:
    """Check the reopened document holds exactly changes ``0..n-1``; return ``n``.

    ``n`` is every change reported done (``seen``), plus possibly the one the child
    was making when it was killed: stored, but its call had not returned yet.
    """
    doc = replica.open(DOC)
    m, text = roots(doc)
    n = replica.pending(DOC)
    assert n >= seen, f"{seen} changes were reported done, the store has {n}"
    assert n <= seen + 1, f"the store has {n} changes, the child reported only {seen}"
    assert len(m) + len(text) == n
    assert m.to_py() == {f"k{i}": i for i in range(0, n, 2)}
    assert str(text) == "x" * (n // 2)
    assert [entry.seq for entry in replica.outbox(DOC)] == list(range(1, n + 1))
    # Every change is one clock tick, under the client ids the document has written with.
    assert sum(decode_state_vector(doc.get_state()).values()) == n
    return n


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("durability", "count"), [("normal", 200), ("full", 50)])
def test_reported_changes_survive_sigkill(
    tmp_path: Path, durability: Durability, count: int
) -> None:
    """Every change whose call returned before SIGKILL is stored, in the outbox, in order;
    after the crash the next change takes the next sequence number (none is reused)."""
    path = tmp_path / "crash.db"
    start, client_id, seen = run_until_killed(
        path, durability, count, tmp_path, DEFAULT_COMPACT_MIN_BYTES
    )
    assert start == 0

    with Replica(path, durability=durability) as replica:
        n = check_reopened(replica, seen)
        # After an unclean "normal" session, writes reported durable could have been
        # lost (in a power loss): the client id rotates. "full" fsyncs every commit.
        assert (replica.client_id(DOC) == client_id) is (durability == "full")
        client_id = replica.client_id(DOC)
        m, text = roots(replica.open(DOC))
        apply_change(m, text, n)
        assert replica.outbox(DOC)[-1].seq == n + 1
        assert replica.pending(DOC) == n + 1
        check_reopened(replica, n + 1)

    with Replica(path, durability=durability) as replica:
        assert check_reopened(replica, n + 1) == n + 1
        assert replica.client_id(DOC) == client_id


@pytest.mark.timeout(60)
@pytest.mark.parametrize("durability", ["normal", "full"])
@pytest.mark.parametrize("compact_min_bytes", [DEFAULT_COMPACT_MIN_BYTES, 64])
def test_two_crashes_keep_both_runs(
    tmp_path: Path, durability: Durability, compact_min_bytes: int
) -> None:
    """Killed, reopened by a second process, killed again: the content of both runs is
    there, under one client id per run ("normal") or one in all ("full"): the stored
    state, a fresh doc built from it, and a peer built from the outbox alone all agree.

    ``compact_min_bytes=64`` makes the children compact often, so a kill can land in a
    compaction too.
    """
    path = tmp_path / "crash.db"
    count = 100 if durability == "normal" else 40
    start1, client1, seen1 = run_until_killed(path, durability, count, tmp_path, compact_min_bytes)
    assert start1 == 0
    start2, client2, seen2 = run_until_killed(path, durability, count, tmp_path, compact_min_bytes)
    assert seen1 <= start2 <= seen1 + 1, "the second run must see everything the first stored"
    # Kept across crashes where every commit was fsync'd; rotated after an unclean
    # "normal" session, where a power loss could have taken changes peers already have.
    assert (client2 == client1) is (durability == "full")

    with Replica(path, durability=durability) as replica:
        n = check_reopened(replica, seen2)
        doc = replica.open(DOC)
        m, text = roots(doc)

        fresh: pycrdt.Doc[Any] = pycrdt.Doc()
        fresh.apply_update(doc.get_update())
        fresh_m, fresh_text = roots(fresh)
        assert doc_state(fresh) == doc_state(doc)  # not bytes: client order varies
        assert fresh_m.to_py() == m.to_py()
        assert str(fresh_text) == str(text)

        # Nothing was ever acknowledged: a peer that receives only the outbox rebuilds
        # the whole document, so no two outbox entries collide under the reused id.
        peer: pycrdt.Doc[Any] = pycrdt.Doc()
        peer.apply_update(pycrdt.merge_updates(*(e.data for e in replica.outbox(DOC))))
        peer_m, peer_text = roots(peer)
        assert doc_state(peer) == doc_state(doc)
        assert peer_m.to_py() == {f"k{i}": i for i in range(0, n, 2)}
        assert str(peer_text) == "x" * (n // 2)


@pytest.mark.timeout(60)
def test_crash_during_wal_checkpoint_loses_nothing(tmp_path: Path) -> None:
    """A crash in the middle of a WAL checkpoint leaves a main file shorter than its
    header says, with every page still in the WAL: the store must reopen with all data.

    A real RLIMIT_FSIZE stops the checkpoint part-way (page 1 is written first), then
    the child is SIGKILLed, as if it had died in that checkpoint. (Plain SIGKILLs at
    random moments of a busy writer hit the same state, a few times in 400 runs:
    SQLite checkpoints automatically every 1,000 WAL pages, inside an edit's commit.)
    """
    path = tmp_path / "crash.db"
    count = 300
    with spawn(CHECKPOINT_CHILD, str(path), str(count), tmp_path=tmp_path) as child:
        assert child.readline() == f"done {count}", child.stderr()
        assert child.readline().startswith("checkpoint failed"), child.stderr()
        child.sigkill()
    assert Path(f"{path}-wal").stat().st_size > path.stat().st_size

    with Replica(path) as replica:
        m = replica.open(DOC).get("m", type=pycrdt.Map)
        assert m.to_py() == {f"k{i}": "v" * 50 for i in range(count)}
        assert replica.pending(DOC) == count


ROLLBACK_CHILD = r"""
import os, shutil, sys, pycrdt
from crdtsync import Replica
path = sys.argv[1]
replica = Replica(path, durability="normal")
text = replica.open("d").get("t", type=pycrdt.Text)
text += "saved "
print(replica.client_id("d"), flush=True)
# What a power loss can leave in "normal" durability: the state at the last fsync.
for suffix in ("", "-wal"):
    if os.path.exists(path + suffix):
        shutil.copy(path + suffix, path + suffix + ".synced")
text += "SENT"  # stored in the WAL, not fsync'd, and sent to a peer:
with open(path + ".sent", "wb") as sent:
    sent.write(b"".join(batch.update for batch in replica.pending_batches("d")))
os._exit(0)  # the power goes out
"""


@pytest.mark.timeout(60)
def test_a_store_that_lost_its_tail_never_reuses_sent_clocks(tmp_path: Path) -> None:
    """A power loss in "normal" durability can drop commits that were already sent.
    The replica must then write under a new client id: reusing the old one would give
    new changes the clocks of the lost ones, and peers would silently ignore them."""
    path = tmp_path / "r.db"
    child = subprocess.run(
        [sys.executable, "-c", ROLLBACK_CHILD, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    old_client_id = int(child.stdout.strip())
    peer: pycrdt.Doc[Any] = pycrdt.Doc()
    peer.apply_update(Path(f"{path}.sent").read_bytes())
    assert str(peer.get("t", type=pycrdt.Text)) == "saved SENT"
    for suffix in ("", "-wal"):  # the disk comes back as it was at the last fsync
        Path(f"{path}{suffix}").unlink(missing_ok=True)
        synced = Path(f"{path}{suffix}.synced")
        if synced.exists():
            synced.rename(f"{path}{suffix}")

    with Replica(path) as replica:
        doc = replica.open("d")
        text = doc.get("t", type=pycrdt.Text)
        assert str(text) == "saved "  # "SENT" was lost locally
        assert replica.client_id("d") != old_client_id
        text.insert(6, "NEW")
        for batch in replica.pending_batches("d"):
            peer.apply_update(batch.update)
        replica.apply_remote("d", peer.get_update())
        assert str(text) == str(peer.get("t", type=pycrdt.Text))
        assert "SENT" in str(text) and "NEW" in str(text)
