"""Writing benchmark results: machine description, JSON, markdown tables, number formats."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from . import PROJECT_DIR

__all__ = [
    "filesystem_type",
    "fmt_float",
    "fmt_int",
    "fmt_mb",
    "git_commit",
    "machine_info",
    "markdown_table",
    "now_iso",
    "peak_rss_mb",
    "source_digest",
    "vm_hwm_mb",
    "write_results",
]


def now_iso() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_model() or platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "pycrdt": _package_version("pycrdt"),
        "crdtsync": _package_version("crdtsync"),
        "sqlite": sqlite3.sqlite_version,
        "git_commit": git_commit(),
        "crdtsync_source_sha256": source_digest(PROJECT_DIR / "crdtsync"),
    }


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    """The CPU model name from /proc/cpuinfo (Linux), else None."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return None


def git_commit(repo: Path = PROJECT_DIR) -> str | None:
    """``git rev-parse HEAD`` of ``repo`` (read-only), or None if unavailable."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


def source_digest(directory: Path) -> str | None:
    """SHA-256 over the paths and contents of the ``*.py`` files under ``directory``.

    Identifies the code measured even when the working tree has uncommitted changes.
    """
    files = sorted(directory.rglob("*.py"))
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding ``path`` (from /proc/mounts; Linux only)."""
    try:
        mounts = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    target = str(path.resolve())
    best: tuple[int, str] | None = None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point, fs_type = fields[1], fields[2]
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and (best is None or len(mount_point) > best[0]):
            best = (len(mount_point), fs_type)
    return None if best is None else best[1]


def peak_rss_mb() -> float | None:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in MB (None where unsupported).

    On Linux this value is inherited across fork+exec: a child reports at least
    its parent's peak at the time it was started. Keep the parent small.
    """
    try:
        import resource  # noqa: PLC0415 - Unix only
    except ImportError:
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return maxrss * scale / 1e6


def vm_hwm_mb() -> float | None:
    """This process's own peak RSS (``VmHWM`` in /proc/self/status, Linux), in MB."""
    try:
        status = Path("/proc/self/status").read_text(encoding="utf-8")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    return None


def write_results(
    results_dir: Path, group: str, data: dict[str, Any], markdown: str
) -> tuple[Path, Path]:
    """Write ``<group>.json`` and ``<group>.md`` into ``results_dir``; return both paths."""
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path = results_dir / f"{group}.json"
    md_path = results_dir / f"{group}.md"
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown, encoding="utf-8")
    return json_path, md_path


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """A markdown table; ``align`` has one letter per column: ``l`` or ``r``."""
    if len(align) != len(headers) or any(len(row) != len(headers) for row in rows):
        raise ValueError("every row and the alignment need one entry per column")
    marks = {"l": ":--", "r": "--:"}
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(marks[a] for a in align) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    return "\n".join(lines)


def fmt_int(value: int | None) -> str:
    """``1,234`` (``—`` for None)."""
    return "—" if value is None else f"{value:,}"


def fmt_float(value: float | None, digits: int = 2) -> str:
    """A float with ``digits`` decimals and thousands separators (``—`` for None)."""
    return "—" if value is None else f"{value:,.{digits}f}"


def fmt_mb(num_bytes: int | float | None) -> str:
    """Bytes as MB with two decimals (``—`` for None)."""
    return "—" if num_bytes is None else f"{num_bytes / 1e6:,.2f}"
