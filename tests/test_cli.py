"""The crdtsync command, run as a real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crdtsync", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "info" in result.stdout and "demo" in result.stdout


def test_demo_survives_restarts_and_info_shows_it(tmp_path: Path) -> None:
    store = tmp_path / "app.db"
    first = run("demo", "--store", str(store))
    assert first.returncode == 0, first.stderr
    assert "session 1" in first.stdout
    second = run("demo", "--store", str(store))
    assert "session 2" in second.stdout
    assert "visit 1: checked the site offline." in second.stdout
    # Three changes a session (visits, status, notes), none acknowledged: no relay.
    assert "pending upload: 6 change(s)" in second.stdout
    info = run("info", str(store))
    assert info.returncode == 0, info.stderr
    assert "inspection-42:" in info.stdout
    assert "documents:  1" in info.stdout
    assert "inspection-42: 6 pending" in info.stdout


def test_info_on_a_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database" * 10)
    result = run("info", str(bad))
    assert result.returncode == 2
    assert "not a crdtsync store" in result.stderr
    assert bad.read_bytes() == b"this is not a database" * 10


def test_info_on_a_missing_file(tmp_path: Path) -> None:
    result = run("info", str(tmp_path / "none.db"))
    assert result.returncode == 1
    assert "no store" in result.stderr
