"""Settings: frozen, keyword-only; defaults < config file < environment < explicit arguments.

The config file is TOML: `$TICKTAPE_CONFIG`, else `./ticktape.toml` if present. Secrets
(venue keys) are never read from here into logs: see `Secret`.
"""

from __future__ import annotations

import difflib
import os
import subprocess
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ticktape.errors import ConfigError

DEFAULT_TAPE = "file:./tape"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("auto", "json", "text")


class Secret:
    """A string that never prints itself (repr and str are masked)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """The secret itself: call only where it is handed to the venue's client."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


def inside_git_repo(path: Path) -> bool:
    """Whether `path` (a file) lies inside a git working tree: secrets files must not (one `git add .` away
    from being published). False when git is not installed."""
    try:
        top = subprocess.run(["git", "-C", str(path.parent), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return False
    return top.returncode == 0 and bool(top.stdout.strip())


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Process-wide settings of the CLI."""

    tape: str = DEFAULT_TAPE
    log_level: str = "info"
    log_format: str = "auto"  # json | text | auto


MOVED_SETTINGS = {"partitions": "partitions is set per tape: --tape 'file:PATH?partitions=N'"}
"""Settings that are not (or no longer) settings, and where they belong instead."""


def read_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The one TOML reader: a dict, or a `ConfigError` naming the file and the problem in one line
    (missing, unreadable, or not TOML, with its line and column)."""
    p = Path(path).expanduser()
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{what} {p} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {p} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{what} {p} cannot be read: {exc.strerror or exc}") from None


def load_settings(config_file: str | None = None, **overrides: Any) -> Settings:
    """Resolve settings: defaults < TOML file < TICKTAPE_* environment < non-None overrides.

    A malformed file, a value of the wrong type or out of range raises `ConfigError` naming where
    the value came from (the file, the variable or the flag). A file named by `config_file` or
    `$TICKTAPE_CONFIG` must exist; `./ticktape.toml` is read only when present.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    named = config_file or os.environ.get("TICKTAPE_CONFIG")
    path = Path(named or "ticktape.toml")
    if named and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.is_file():
        data = read_toml(path)
        table = data.get("ticktape", data)
        if not isinstance(table, dict):
            raise ConfigError(f"config file {path}: [ticktape] must be a table")
        names = {f.name: f for f in fields(Settings)}
        for key, value in table.items():  # a misspelt setting is an error, not a default
            if key in MOVED_SETTINGS:
                raise ConfigError(f"config file {path}: {MOVED_SETTINGS[key]}")
            if key not in names and not isinstance(value, dict):  # other tables are other tools' sections
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(names))})"
                raise ConfigError(f"config file {path}: unknown setting {key!r}{hint}")
        values.update({k: v for k, v in table.items() if k in names})
        sources.update({k: f"config file {path}" for k in table})
    names = {f.name: f for f in fields(Settings)}
    for name, field in names.items():
        var = f"TICKTAPE_{name.upper()}"
        env = os.environ.get(var)
        if env is not None:
            sources[name] = f"${var}"
            try:
                values[name] = int(env) if field.type in ("int", int) else env
            except ValueError:
                raise ConfigError(f"${var} must be a whole number, not {env!r}") from None
    for k, v in overrides.items():
        if v is not None:
            values[k] = v
            sources[k] = f"--{k.replace('_', '-')}"
    for name, value in values.items():
        want = int if names[name].type in ("int", int) else str
        if type(value) is not want:
            raise ConfigError(f"{sources[name]}: {name} must be a {'whole number' if want is int else 'string'}, "
                              f"not {value!r}")
    if "log_level" in values:
        values["log_level"] = values["log_level"].lower()
    for name, allowed in (("log_level", LOG_LEVELS), ("log_format", LOG_FORMATS)):
        if name in values and values[name] not in allowed:
            raise ConfigError(f"{sources[name]}: {name} must be one of {', '.join(allowed)}, not {values[name]!r}")
    return replace(Settings(), **values)
