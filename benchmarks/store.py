"""The store benchmark: reopening a replica that holds many documents.

A worker process creates a :class:`crdtsync.Replica` store (``durability="normal"``)
holding ``documents`` small documents (each a text written by ``edits`` one-edit
transactions, as a user typing), closes it, and reports the file size (SQLite
file + WAL) against the documents' encoded size (``len(doc.get_update())``
summed). A fresh worker process then reopens it: ``Replica(path)``, every
document ``open()``-ed and its text read; the texts are checked against what was
written (a digest). Nothing is acknowledged by a relay here, so every edit is
still in the outbox: compare with a store after sync, where compaction folds it.

    python -m benchmarks.store --documents 1000 --out run.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pycrdt

from . import PROJECT_DIR, Mode, RunOptions
from .report import fmt_float, fmt_int, machine_info, markdown_table, now_iso, write_results

__all__ = ["Params", "main", "run"]

GROUP = "store"
WORKER_TIMEOUT_S = 900
EN_DASH = "\N{EN DASH}"


@dataclass(frozen=True, slots=True)
class Params:
    """Sizes and repetitions for one mode."""

    mode: Mode
    documents: int = 1000
    edits: int = 20
    repeat: int = 1

    @classmethod
    def for_mode(cls, mode: Mode) -> Params:
        """1,000 documents of 20 edits in both modes; ``full`` reopens three times."""
        return cls(mode, repeat=1 if mode == "quick" else 3)


def _text(number: int, edits: int) -> str:
    return "".join(chr(ord("a") + (number + i) % 26) for i in range(edits))


def create(path: Path, documents: int, edits: int) -> dict[str, Any]:
    """Write the store; its sizes and the digest of every text."""
    from crdtsync import Replica  # noqa: PLC0415 - only in the worker process

    digest = hashlib.sha256()
    encoded = 0
    started = time.perf_counter()
    replica = Replica(path, durability="normal")
    try:
        for number in range(documents):
            doc = replica.open(f"doc-{number}")
            text = doc.get("text", type=pycrdt.Text)
            for char in _text(number, edits):
                text += char
            encoded += len(doc.get_update())
            digest.update(str(text).encode() + b"\0")
    finally:
        replica.close()
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return {
        "create_s": seconds,
        "store_bytes": size,
        "encoded_bytes": encoded,
        "digest": digest.hexdigest(),
    }


def reopen(path: Path, documents: int) -> dict[str, Any]:
    """Reopen the store and read every document; the time and the digest of the texts."""
    started = time.perf_counter()
    from crdtsync import Replica  # noqa: PLC0415 - timed: a cold start imports it too

    imported = time.perf_counter()
    replica = Replica(path, durability="normal")
    digest = hashlib.sha256()
    try:
        for number in range(documents):
            doc = replica.open(f"doc-{number}")
            digest.update(str(doc.get("text", type=pycrdt.Text)).encode() + b"\0")
    finally:
        replica.close()
    done = time.perf_counter()
    return {
        "reopen_s": done - imported,
        "import_s": imported - started,
        "digest": digest.hexdigest(),
    }


def _worker(command: Sequence[str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.store", "--worker", *command],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"worker failed ({done.returncode}): {tail}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run_once(params: Params, work: Path) -> dict[str, Any]:
    """Create the store, then reopen it ``repeat`` times, each in a fresh process."""
    path = work / "replica.db"
    result: dict[str, Any] = {"status": "ok", "failure": None, "reopens": []}
    try:
        sizes = ["--documents", str(params.documents)]
        result.update(_worker(["create", str(path), *sizes, "--edits", str(params.edits)]))
        for _ in range(params.repeat):
            reopened = _worker(["reopen", str(path), *sizes])
            result["reopens"].append(reopened)
            if reopened["digest"] != result["digest"]:
                result["status"] = "FAILED"
                result["failure"] = "a reopened document's text differs from what was written"
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
        result["status"] = "FAILED"
        result["failure"] = f"{type(exc).__name__}: {exc}"
    return result


def run(options: RunOptions) -> bool:
    """Run the store group, print the report, write the results."""
    started = now_iso()
    params = Params.for_mode(options.mode)
    with tempfile.TemporaryDirectory(prefix="crdtsync-store-bench-", dir=options.tmpdir) as tmp:
        print(f"store: {params.documents:,} documents ...", end=" ", file=sys.stderr, flush=True)
        result = run_once(params, Path(tmp))
        print(result["status"], file=sys.stderr)
    data = {
        "group": GROUP,
        "mode": params.mode,
        "started": started,
        "finished": now_iso(),
        "machine": machine_info(),
        "parameters": asdict(params),
        "result": result,
    }
    markdown = render_markdown(data)
    print(markdown)
    write_results(options.results_dir, GROUP, data, markdown)
    return bool(result["status"] == "ok")


def render_markdown(data: dict[str, Any]) -> str:
    """One table."""
    params, result = data["parameters"], data["result"]
    reopen = [r["reopen_s"] for r in result.get("reopens", [])]
    median = statistics.median(reopen) if reopen and result["status"] == "ok" else None
    store, encoded = result.get("store_bytes"), result.get("encoded_bytes")
    spread = ""
    if len(reopen) > 1:
        spread = f" [{min(reopen) * 1000:.1f}{EN_DASH}{max(reopen) * 1000:.1f}]"
    row = [
        fmt_int(params["documents"]),
        fmt_int(params["edits"]),
        fmt_float(None if median is None else median * 1000, 1) + spread,
        fmt_float(None if median is None else median * 1e6 / params["documents"], 1),
        fmt_int(store),
        fmt_int(encoded),
        "—" if not store or not encoded else f"{store / encoded:.1f}x",
        "ok" if result["status"] == "ok" else f"**FAILED**: {result['failure']}",
    ]
    headers = [
        "Documents",
        "Edits each",
        "Reopen ms",
        "µs per document",
        "Store bytes",
        "Encoded bytes",
        "Store / encoded",
        "Status",
    ]
    notes = [
        "- *Reopen*: a fresh process times `Replica(path)` and `open()` + reading the text "
        "of every document (the import of crdtsync is excluded); the file is in the OS cache "
        "(warm). Texts checked against what was written.",
        "- *Store*: SQLite file + WAL after `close()`; *encoded*: the documents' "
        "`len(doc.get_update())` summed. Nothing was acknowledged, so every one-edit update "
        "is still in the outbox.",
    ]
    return (
        f"# Store benchmark ({data['mode']})\n\n"
        + markdown_table(headers, [row], "rrrrrrrl")
        + "\n\n"
        + "\n".join(notes)
        + "\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.store``: one run (``--worker``: create or reopen a store)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.store")
    parser.add_argument("--worker", nargs=2, metavar=("ACTION", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.worker:
        action, path = args.worker
        if action == "create":
            print(json.dumps(create(Path(path), args.documents, args.edits)))
        else:
            print(json.dumps(reopen(Path(path), args.documents)))
        return 0
    params = Params("quick", documents=args.documents, edits=args.edits)
    with tempfile.TemporaryDirectory(prefix="crdtsync-store-run-") as tmp:
        result = run_once(params, Path(tmp))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "reopens"}), file=sys.stderr)
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
