"""The real venues a gateway can send to (`ticktape gateway --venue binance|betfair`), by name.

Their adapters live with the venue's other code (`producers.binance.trading`,
`producers.betfair.trading`) and are imported only when a gateway opens one. A live run names
its venue in its manifest; a run on a real venue is served by a standalone gateway (credentials
stay in one process), never inline.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from typing import Any

from robots.live.exchange import LiveVenue
from ticktape.errors import TicktapeError
from ticktape.events import CustomData

__all__ = ["REAL_VENUES", "RULES_KIND", "is_real_venue", "open_real_venue", "rules_event"]

REAL_VENUES: dict[str, str] = {
    "binance": "producers.binance.trading:BinanceVenue",
    "betfair": "producers.betfair.trading:BetfairVenue",
}
"""Venue name -> "module:Class" of its `LiveVenue` adapter (with a `from_settings` constructor)."""

RULES_KIND = "gateway.rules"
"""`CustomData.kind` of the venue's trading rules, journaled by the gateway when it starts."""


def is_real_venue(name: str) -> bool:
    """Whether `name` is a real venue (not the paper simulator)."""
    return name in REAL_VENUES


def open_real_venue(name: str, settings: Mapping[str, object] | None = None,
                    credentials_file: str | None = None) -> LiveVenue:
    """The adapter of venue `name`, configured by `settings` (`--venue-param`), credentials from the
    environment or `credentials_file`."""
    path = REAL_VENUES.get(name)
    if path is None:
        raise TicktapeError(f"no real venue {name!r}: {', '.join(sorted(REAL_VENUES))}")
    module, _, cls = path.partition(":")
    venue_class: Any = getattr(importlib.import_module(module), cls)
    from robots.venues import coerce_setting

    values = {k: coerce_setting(v) for k, v in (settings or {}).items()}  # `--venue-param` gives strings
    venue: LiveVenue = venue_class.from_settings(values, credentials_file=credentials_file)
    return venue


def rules_event(venue: str, rules: Mapping[str, Any], ts: int) -> CustomData:
    """The venue's rules as the gateway journals them."""
    return CustomData(RULES_KIND, venue, ts, ts, json.dumps(rules, sort_keys=True, separators=(",", ":")),
                      "application/json")
