"""relay.config and relay.logs: every relay flag from a CRDTSYNC_* variable (the
command line wins), clear errors for bad values, and JSON log lines."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from relay.__main__ import _parser
from relay.admin import _parser as admin_parser
from relay.config import env_name, read_environment
from relay.logs import JsonFormatter

from .relay_helpers import ROOT, RelayProcess


def parse(environ: dict[str, str], *argv: str) -> object:
    parser = _parser()
    read_environment(parser, environ)
    return parser.parse_args(list(argv))


def test_every_flag_has_a_variable_named_in_its_help() -> None:
    for parser in (_parser(), admin_parser()):
        read_environment(parser, {})
        for action in parser._actions:
            name = env_name(action)
            if action.option_strings and action.dest not in ("help", "version"):
                assert name is not None and name.startswith("CRDTSYNC_"), action.option_strings
                assert name in (action.help or "")


def test_environment_then_command_line() -> None:
    args = parse(
        {
            "CRDTSYNC_PORT": "9100",
            "CRDTSYNC_STORE": "redis://127.0.0.1:6379/0",
            "CRDTSYNC_REQUIRE_AUTH": "yes",
            "CRDTSYNC_REDIS_VOLATILE": "0",
            "CRDTSYNC_ORIGIN": "https://a.example, https://b.example",
            "CRDTSYNC_MAX_UPDATES_PER_SECOND": "12.5",
            "CRDTSYNC_LOG_FORMAT": "json",
        }
    )
    assert args.port == 9100  # type: ignore[attr-defined]
    assert args.store == "redis://127.0.0.1:6379/0"  # type: ignore[attr-defined]
    assert args.require_auth is True  # type: ignore[attr-defined]
    assert args.redis_volatile is False  # type: ignore[attr-defined]
    assert args.origin == ["https://a.example", "https://b.example"]  # type: ignore[attr-defined]
    assert args.max_updates_per_second == 12.5  # type: ignore[attr-defined]
    assert args.log_format == "json"  # type: ignore[attr-defined]
    assert parse({"CRDTSYNC_PORT": "9100"}, "--port", "9200").port == 9200  # type: ignore[attr-defined]
    assert parse({}).port == 8765  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("CRDTSYNC_PORT", "eighty", "CRDTSYNC_PORT='eighty'"),
        ("CRDTSYNC_LOG_LEVEL", "LOUD", "use one of DEBUG"),
        ("CRDTSYNC_REQUIRE_AUTH", "maybe", "1/true/yes/on"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse({variable: value})
    done = subprocess.run(
        [sys.executable, "-m", "relay", "--port", "0"],
        env={"PATH": "", variable: value},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and variable in done.stderr


def test_json_log_lines() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("relay.server", logging.WARNING, __file__, 1, "hi %s", ("é",), None)
    line = json.loads(formatter.format(record))
    assert line["level"] == "WARNING" and line["logger"] == "relay.server"
    assert line["message"] == "hi é" and line["time"].endswith("+00:00")


async def test_a_relay_configured_from_the_environment_logs_json(tmp_path: Path) -> None:
    relay = RelayProcess(
        "memory://",
        tmp_path / "relay.log",
        env={"CRDTSYNC_LOG_FORMAT": "json", "CRDTSYNC_RELAY_ID": "from-env"},
    )
    try:
        await relay.start()
        assert await relay.terminate() == 0
    finally:
        await relay.ensure_stopped()
    lines = [json.loads(line) for line in relay.log.read_text().splitlines()]
    assert any("relay from-env listening" in line["message"] for line in lines)
    assert {line["level"] for line in lines} >= {"INFO"}
