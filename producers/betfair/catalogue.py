"""Betfair market catalogue: poll `listMarketCatalogue` (like flumine's worker) into `MarketDefinition` events.

The logic is pure (`CatalogueTracker.update`: which catalogue entries are new or changed); the
poller around it calls betfairlightweight's betting endpoint with `lightweight=True` (dicts).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from producers.betfair.definition import from_catalogue
from producers.betfair.parse import MARKET_TOPIC
from ticktape.events import Event, MarketDefinition
from ticktape.timeutil import Clock

log = logging.getLogger(__name__)

PROJECTION = ["EVENT", "EVENT_TYPE", "MARKET_DESCRIPTION", "MARKET_START_TIME", "RUNNER_DESCRIPTION",
              "RUNNER_METADATA", "COMPETITION"]

# Streaming filter keys -> listMarketCatalogue MarketFilter keys (the two APIs name them differently).
_FILTER_KEYS = {"marketIds": "marketIds", "eventTypeIds": "eventTypeIds", "eventIds": "eventIds",
                "countryCodes": "marketCountries", "marketTypes": "marketTypeCodes", "venues": "venues",
                "turnInPlayEnabled": "turnInPlayEnabled", "bspMarket": "bspOnly", "competitionIds": "competitionIds"}


def betting_filter(stream_filter: dict[str, Any]) -> dict[str, Any]:
    """The betting API's MarketFilter equivalent to a streaming market filter."""
    return {_FILTER_KEYS[k]: v for k, v in stream_filter.items() if k in _FILTER_KEYS}


class CatalogueTracker:
    """Remembers each market's last catalogue; `update` yields events only for new or changed ones."""

    def __init__(self) -> None:
        self._seen: dict[str, bytes] = {}

    def update(self, catalogues: Iterable[dict[str, Any]], ts_recv: int) -> list[MarketDefinition]:
        """MarketDefinition events (status 'CATALOGUE', ts_event = ts_recv) for what changed."""
        out: list[MarketDefinition] = []
        for cat in catalogues:
            market_id = str(cat["marketId"])
            # Fields that change every poll carry no definition change.
            stable = {k: v for k, v in cat.items() if k not in ("totalMatched",)}
            digest = orjson.dumps(stable, option=orjson.OPT_SORT_KEYS)
            if self._seen.get(market_id) == digest:
                continue
            self._seen[market_id] = digest
            out.append(from_catalogue(cat, ts_recv, ts_recv))
        return out


class CataloguePoller:
    """Polls the catalogue of the recorded markets every `interval` seconds."""

    def __init__(self, stream_filter: dict[str, Any], max_results: int = 1000) -> None:
        self.filter = betting_filter(stream_filter)
        self.max_results = max_results
        self.tracker = CatalogueTracker()

    def poll(self, client: Any, clock: Clock) -> list[MarketDefinition]:
        """One poll: fetch (betfairlightweight, dicts) and return the changed definitions."""
        cats = client.betting.list_market_catalogue(filter=self.filter, market_projection=PROJECTION,
                                                    max_results=self.max_results, lightweight=True)
        return self.tracker.update(cats, clock.now())

    def run(self, client: Any, clock: Clock, emit: Callable[[list[tuple[str, Event]]], None],
            stop: threading.Event, interval: float) -> None:
        """Poll until `stop`; a failed poll is logged and retried at the next interval."""
        while not stop.is_set():
            try:
                events = self.poll(client, clock)
            except Exception as exc:  # network / API errors: keep recording the streams
                log.warning("betfair catalogue poll failed: %s: %s", type(exc).__name__, exc)
            else:
                if events:
                    emit([(MARKET_TOPIC, e) for e in events])
            stop.wait(interval)
