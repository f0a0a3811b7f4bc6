"""Simulated venues by name, built from plain settings, and recorded so a replay rebuilds them.

`make_venue("crypto", {"taker_fee": "0.0005", "place_latency_ns": "1000000"})`; names: `crypto`
(`robots.sim.crypto`), `betfair` (`robots.sim.betfair`), `naive` (`robots.sim.naive`, tests).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from robots.api import Robot, RobotError
from robots.ledger import Ledger, LedgerLike, SettlementLedger
from robots.sim.base import SimVenue

VENUES = ("crypto", "betfair", "naive")


def coerce_setting(value: object) -> object:
    """`--venue-param` strings -> int / bool / float when they look like one, else the string."""
    if not isinstance(value, str):
        return value
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def make_venue(name: str, settings: Mapping[str, object] | None = None) -> SimVenue:
    """A fresh venue of kind `name` configured by `settings` (strings are coerced)."""
    table = {k: coerce_setting(v) for k, v in (settings or {}).items()}
    try:
        if name == "crypto":
            from robots.sim.crypto import CryptoVenue, CryptoVenueConfig

            return CryptoVenue(CryptoVenueConfig.from_mapping(table))
        if name == "betfair":
            from robots.sim.betfair import BetfairSimConfig, BetfairSimVenue

            return BetfairSimVenue(BetfairSimConfig(**table))  # type: ignore[arg-type]
        if name == "naive":
            from robots.sim.naive import NaiveVenue

            return NaiveVenue(**table)  # type: ignore[arg-type]
    except ImportError as exc:
        raise RobotError(f"venue {name!r} is not available: {exc}") from exc
    except TypeError as exc:
        raise RobotError(f"venue {name!r}: bad settings {sorted(table)}: {exc}") from exc
    raise RobotError(f"unknown venue {name!r}; known: {', '.join(VENUES)}")


def default_venue(robot: Robot[Any, Any]) -> str:
    """The venue kind a robot trades on by default: betfair for Betfair robots, else crypto."""
    if robot.venue == "betfair":
        return "betfair"
    try:
        import robots.sim.crypto  # noqa: F401
    except ImportError:
        return "naive"
    return "crypto"


def venue_spec(venue: object, name: str | None = None, settings: Mapping[str, object] | None = None) -> str:
    """Canonical JSON `{"name": ..., "settings": {...}}` for the run manifest."""
    if settings is None:
        config = getattr(venue, "config", None)
        if callable(config):
            config = config()
        if dataclasses.is_dataclass(config) and not isinstance(config, type):
            settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        elif isinstance(config, Mapping):
            settings = dict(config)
        else:
            settings = {}
    if name is None:
        module = type(venue).__module__
        name = next((v for v in VENUES if module.endswith(f".{v}")), type(venue).__name__)
    return json.dumps({"name": name, "settings": {k: _jsonable(v) for k, v in settings.items()}},
                      sort_keys=True, separators=(",", ":"))


def _jsonable(v: object) -> object:
    if isinstance(v, bool | int | float | str) or v is None:
        return v
    return str(v)  # Fractions / Decimals keep their exact text


def ledger_for(venue: object) -> LedgerLike:
    """The money model for a venue: settlement-based for Betfair, linear (cash + position x mark) else."""
    own = getattr(venue, "ledger", None)
    if own is not None:
        return own  # type: ignore[no-any-return]
    if type(venue).__module__.endswith(".betfair") or getattr(venue, "venue", None) == "betfair":
        return SettlementLedger()
    return Ledger()
