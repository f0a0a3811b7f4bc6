"""Settings: frozen, keyword-only; defaults < config file < environment < explicit arguments.

The config file is TOML: `$TICKTAPE_CONFIG`, else `./ticktape.toml` if present. Secrets
(venue keys) are never read from here into logs: see `Secret`.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_TAPE = "file:./tape"


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


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Process-wide settings of the CLI."""

    tape: str = DEFAULT_TAPE
    log_level: str = "info"
    log_format: str = "auto"  # json | text | auto
    partitions: int = 1


def load_settings(config_file: str | None = None, **overrides: Any) -> Settings:
    """Resolve settings: defaults < TOML file < TICKTAPE_* environment < non-None overrides."""
    values: dict[str, Any] = {}
    path = Path(config_file or os.environ.get("TICKTAPE_CONFIG", "ticktape.toml"))
    if path.is_file():
        with open(path, "rb") as f:
            data = tomllib.load(f)
        values.update(data.get("ticktape", data))
    names = {f.name: f for f in fields(Settings)}
    for name, field in names.items():
        env = os.environ.get(f"TICKTAPE_{name.upper()}")
        if env is not None:
            values[name] = int(env) if field.type in ("int", int) else env
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - set(names)
    for k in unknown:
        values.pop(k)
    return replace(Settings(), **values)
