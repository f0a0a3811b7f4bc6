"""Binance API keys: from a TOML file outside any git repository, else the environment; never printed.

Both the recorder (`record binance --user-data`) and the trading gateway (`gateway --venue binance`)
read them here. The keys are `Secret`s: their repr and str are masked, so a log line, a traceback
or an error message cannot show them; `.get()` is called only where they are handed to python-binance.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ticktape.config import Secret, inside_git_repo, read_toml
from ticktape.errors import ConfigError

__all__ = ["BinanceKeys", "load_binance_keys"]


@dataclass(frozen=True)
class BinanceKeys:
    """An API key and its secret (both masked when printed)."""

    api_key: Secret
    api_secret: Secret


def load_binance_keys(credentials_file: str | None = None, env: Mapping[str, str] | None = None, *,
                      required: bool = True) -> BinanceKeys | None:
    """The keys from `credentials_file` (TOML, `[binance] api_key/api_secret`), else BINANCE_API_KEY /
    BINANCE_API_SECRET in `env` (default: the process environment).

    A file inside a git repository is refused (keys must not be committed by accident). Missing keys
    raise `ConfigError` naming the variables when `required`, else give None.
    """
    env = os.environ if env is None else env
    values: dict[str, str] = {}
    if credentials_file:
        path = Path(credentials_file).expanduser().resolve()
        if inside_git_repo(path):
            raise ConfigError(f"{path} is inside a git repository: keep credentials outside it")
        data = read_toml(path, "credentials file")
        table = data.get("binance", data)
        values = {k: str(v) for k, v in table.items() if k in ("api_key", "api_secret")}
    key = values.get("api_key") or env.get("BINANCE_API_KEY")
    secret = values.get("api_secret") or env.get("BINANCE_API_SECRET")
    if not key or not secret:
        if not required:
            return None
        raise ConfigError("Binance credentials missing: BINANCE_API_KEY and BINANCE_API_SECRET (environment) "
                          "or api_key/api_secret under [binance] in the credentials file")
    return BinanceKeys(Secret(key), Secret(secret))
