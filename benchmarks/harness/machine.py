"""What the numbers were measured on: platform, versions, commit, filesystem, load."""

from __future__ import annotations

import hashlib
import os
import platform
import sqlite3
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from .. import PROJECT_DIR

__all__ = [
    "filesystem_type",
    "git_commit",
    "load_average",
    "machine_info",
    "package_versions",
    "source_digest",
]


def machine_info() -> dict[str, Any]:
    """The machine, Python, pycrdt, crdtsync and SQLite, and the code measured."""
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


def package_versions(*names: str) -> dict[str, str | None]:
    """The installed version of each package (None when it is not installed)."""
    return {name: _package_version(name) for name in names}


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


def load_average() -> float | None:
    """The 1-minute load average (None where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None
