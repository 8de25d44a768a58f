"""Every ``crdtsync-relay`` flag is also read from the environment: ``--max-frame``
from ``CRDTSYNC_MAX_FRAME``, ``--require-auth`` from ``CRDTSYNC_REQUIRE_AUTH``, and
so on (``CRDTSYNC_`` + the flag's name in capitals, ``-`` as ``_``).

The command line wins over the environment, which wins over the default.
Switches (``--require-auth``) take ``1/true/yes/on`` or ``0/false/no/off``;
repeatable flags (``--origin``, ``--public-key``) take several values separated
by commas. A value the flag would refuse is an error naming the variable.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence

__all__ = ["ENV_PREFIX", "env_name", "parse_args", "read_environment"]

ENV_PREFIX = "CRDTSYNC_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_name(action: argparse.Action) -> str | None:
    """The environment variable of a flag (None for positionals, --help, --version)."""
    longs = [option for option in action.option_strings if option.startswith("--")]
    if not longs or isinstance(action, argparse._HelpAction | argparse._VersionAction):
        return None
    return ENV_PREFIX + longs[0][2:].upper().replace("-", "_")


def read_environment(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Set the defaults of ``parser``'s flags from ``environ``; name every such
    variable in the flag's help. Raises ``ValueError`` for a value the flag refuses."""
    for action in parser._actions:
        name = env_name(action)
        if name is None:
            continue
        action.help = f"{action.help or ''} [env {name}]".strip()
        raw = environ.get(name)
        if raw is None:
            continue
        action.default = _convert(action, name, raw)


def _convert(action: argparse.Action, name: str, raw: str) -> object:
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        value = raw.strip().lower()
        if value not in _TRUE | _FALSE:
            raise ValueError(f"{name}={raw!r}: use 1/true/yes/on or 0/false/no/off")
        on = value in _TRUE
        return on if isinstance(action, argparse._StoreTrueAction) else not on
    if isinstance(action, argparse._AppendAction):
        return [_one(action, name, part.strip()) for part in raw.split(",") if part.strip()]
    return _one(action, name, raw)


def _one(action: argparse.Action, name: str, raw: str) -> object:
    convert = action.type if callable(action.type) else str
    try:
        value = convert(raw)
    except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
        raise ValueError(f"{name}={raw!r}: {exc}") from exc
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ValueError(f"{name}={raw!r}: use one of {choices}")
    return value


def parse_args(
    parser: argparse.ArgumentParser,
    argv: Sequence[str],
    environ: Mapping[str, str] = os.environ,
) -> argparse.Namespace:
    """``parser.parse_args(argv)`` over defaults read from ``environ``; a bad variable
    is a usage error (exit status 2) naming it, as a bad flag is."""
    try:
        read_environment(parser, environ)
    except ValueError as exc:
        parser.error(str(exc))
    return parser.parse_args(list(argv))
