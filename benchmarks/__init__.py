"""Reproducible benchmarks for crdtsync.

Run ``python -m benchmarks --help``. Each benchmark group is a package of this
package (``relay``, ``sync``, ``memory``, ``local``, ``store``) exporting a
``run(options: RunOptions) -> bool`` function (True when every run passed its
checks); ``benchmarks/__main__.py`` lists the groups. What they share is in
:mod:`benchmarks.harness` (every group) and, for the groups comparing servers,
:mod:`benchmarks.comparison`; ``benchmarks/README.md`` maps every file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["DATA_DIR", "PACKAGE_DIR", "PROJECT_DIR", "RESULTS_DIR", "Mode", "RunOptions"]

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
DATA_DIR = PACKAGE_DIR / "data"
RESULTS_DIR = PACKAGE_DIR / "results"

Mode = Literal["quick", "full"]


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What the command line asked for, handed to every benchmark group."""

    mode: Mode
    results_dir: Path = RESULTS_DIR
    tmpdir: Path | None = None
    """Where store files are created (None: the system temporary directory)."""
    servers: tuple[str, ...] | None = None
    """The servers to compare (None: all of :data:`benchmarks.servers.SERVERS`)."""
    install_peers: bool = True
    """Install missing peers into ``benchmarks/.peers`` (False: skip those not installed)."""
