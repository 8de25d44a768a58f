"""Set-up of the peer servers the benchmark compares crdtsync with.

Everything is installed into ``benchmarks/.peers/`` (git-ignored), never into
the project's environment, and pinned by files committed in
``benchmarks/peer_servers/``:

- ``.peers/pycrdt-websocket/``: a virtual environment with pycrdt-websocket and
  ``websockets`` (``requirements-pycrdt-websocket.txt``, every package pinned);
  the server is ``peer_servers/pycrdt_ws_server.py``.
- ``.peers/node/``: ``@y/websocket-server`` and ``@hocuspocus/server`` from npm
  (``package.json`` + ``package-lock.json``, installed with ``npm ci``), and the
  three server scripts ``peer_servers/*.mjs`` copied beside their ``node_modules``.

:func:`ensure` is idempotent: a stamp file in each folder holds a digest of the
files it was installed from, and nothing is reinstalled while it matches.
``python -m benchmarks`` calls it before the groups that need peers;
``python -m benchmarks.peers`` runs it alone (``--check`` only reports).
A peer that cannot be installed (no ``node`` on the machine, no network) is
reported as unavailable with the reason, and its rows say so; the rest runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import PACKAGE_DIR
from .harness.processes import output_tail, run_command

__all__ = [
    "NODE_DIR",
    "PEERS_DIR",
    "PYCRDT_WS_DIR",
    "SOURCES_DIR",
    "PeerStatus",
    "ensure",
    "main",
    "node_versions",
    "pycrdt_websocket_python",
    "pycrdt_websocket_versions",
    "versions",
]

PEERS_DIR = PACKAGE_DIR / ".peers"
SOURCES_DIR = PACKAGE_DIR / "peer_servers"
PYCRDT_WS_DIR = PEERS_DIR / "pycrdt-websocket"
NODE_DIR = PEERS_DIR / "node"
STAMP = ".installed"
INSTALL_TIMEOUT_S = 900

PYTHON_FILES = ("requirements-pycrdt-websocket.txt",)
NODE_FILES = (
    "package.json",
    "package-lock.json",
    "y_websocket_server.mjs",
    "hocuspocus_server.mjs",
    "hocuspocus_redis_server.mjs",
)
NODE_PACKAGES = (
    "@y/websocket-server",
    "@hocuspocus/server",
    "@hocuspocus/extension-redis",
    "yjs",
    "y-protocols",
    "ws",
)


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """Whether one installation is usable, and why not."""

    name: str
    ok: bool
    detail: str
    versions: dict[str, str]


def _digest(files: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def _stamped(folder: Path, digest: str) -> bool:
    stamp = folder / STAMP
    return stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == digest


def _run(command: list[str], cwd: Path | None = None) -> None:
    done = run_command(command, cwd=cwd, timeout=INSTALL_TIMEOUT_S)
    if done.returncode != 0:
        tail = output_tail(done.stderr or done.stdout)
        raise RuntimeError(f"{' '.join(command[:3])} ... failed ({done.returncode}): {tail}")


def pycrdt_websocket_python() -> Path:
    """The interpreter of the pycrdt-websocket environment."""
    return PYCRDT_WS_DIR / "bin" / "python"


def pycrdt_websocket_versions() -> dict[str, str]:
    """Package versions pinned for the pycrdt-websocket peer (from the requirements file)."""
    versions = {}
    for line in (SOURCES_DIR / PYTHON_FILES[0]).read_text(encoding="utf-8").splitlines():
        name, sep, version = line.partition("==")
        if sep and not name.startswith("#"):
            versions[name.strip()] = version.strip()
    return versions


def node_versions() -> dict[str, str]:
    """Versions of the Node peers and their CRDT libraries (from the lock file) and Node's."""
    lock = json.loads((SOURCES_DIR / "package-lock.json").read_text(encoding="utf-8"))
    packages = lock.get("packages", {})
    versions = {
        name: packages[f"node_modules/{name}"]["version"]
        for name in NODE_PACKAGES
        if f"node_modules/{name}" in packages
    }
    node = shutil.which("node")
    if node is not None:
        done = run_command([node, "--version"], cwd=None)
        versions["node"] = done.stdout.strip()
    return versions


def versions() -> dict[str, dict[str, str]]:
    """The pinned versions of the peers (from the committed lock files) and Node's."""
    return {"pycrdt-websocket": pycrdt_websocket_versions(), "node": node_versions()}


def _ensure_pycrdt_websocket(install: bool) -> PeerStatus:
    name = "pycrdt-websocket"
    versions = pycrdt_websocket_versions()
    sources = [SOURCES_DIR / file for file in PYTHON_FILES]
    digest = _digest(sources)
    if _stamped(PYCRDT_WS_DIR, digest) and pycrdt_websocket_python().exists():
        return PeerStatus(name, True, f"installed in {PYCRDT_WS_DIR}", versions)
    if not install:
        return PeerStatus(name, False, "not installed (python -m benchmarks.peers)", versions)
    print(f"setting up {name} in {PYCRDT_WS_DIR} ...", file=sys.stderr, flush=True)
    try:
        if PYCRDT_WS_DIR.exists():
            shutil.rmtree(PYCRDT_WS_DIR)
        _run([sys.executable, "-m", "venv", str(PYCRDT_WS_DIR)])
        pip = [str(pycrdt_websocket_python()), "-m", "pip", "install", "--quiet"]
        _run([*pip, "--disable-pip-version-check", "-r", str(sources[0])])
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return PeerStatus(name, False, f"set-up failed: {exc}", versions)
    (PYCRDT_WS_DIR / STAMP).write_text(digest + "\n", encoding="utf-8")
    return PeerStatus(name, True, f"installed in {PYCRDT_WS_DIR}", versions)


def _ensure_node(install: bool) -> PeerStatus:
    name = "node peers"
    versions = node_versions()
    sources = [SOURCES_DIR / file for file in NODE_FILES]
    digest = _digest(sources)
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return PeerStatus(name, False, "node and npm are needed (not found on PATH)", versions)
    if _stamped(NODE_DIR, digest) and (NODE_DIR / "node_modules").is_dir():
        return PeerStatus(name, True, f"installed in {NODE_DIR}", versions)
    if not install:
        return PeerStatus(name, False, "not installed (python -m benchmarks.peers)", versions)
    print(f"setting up the Node peers in {NODE_DIR} (npm ci) ...", file=sys.stderr, flush=True)
    try:
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        for source in sources:
            shutil.copyfile(source, NODE_DIR / source.name)
        # The lock file pins every package; install scripts are not needed (the optional
        # leveldown of y-leveldb ships prebuilt binaries and is unused: memory only).
        _run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=NODE_DIR)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return PeerStatus(name, False, f"set-up failed: {exc}", versions)
    (NODE_DIR / STAMP).write_text(digest + "\n", encoding="utf-8")
    return PeerStatus(name, True, f"installed in {NODE_DIR}", versions)


def ensure(install: bool = True) -> dict[str, PeerStatus]:
    """Install what is missing (``install=False``: only check). Keys: ``pycrdt-websocket``
    and ``node`` (both Node servers)."""
    return {"pycrdt-websocket": _ensure_pycrdt_websocket(install), "node": _ensure_node(install)}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.peers [--check]``: set up the peers; status 1 if one failed."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers",
        description="Install the benchmark's peer servers into benchmarks/.peers (idempotent).",
    )
    parser.add_argument("--check", action="store_true", help="only report, install nothing")
    args = parser.parse_args(argv)
    statuses = ensure(install=not args.check)
    for status in statuses.values():
        versions = ", ".join(f"{k} {v}" for k, v in status.versions.items())
        print(
            f"{status.name}: {'ok' if status.ok else 'UNAVAILABLE'}: {status.detail} ({versions})"
        )
    return 0 if all(status.ok for status in statuses.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
