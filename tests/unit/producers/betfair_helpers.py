"""Shared by the Betfair producer tests: fixture paths and the betfairlightweight reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.shared_data import BETFAIR

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "betfair"
SHARED = BETFAIR
"""The real recorded markets (`../shared/data/betfair` next to the repository, see tests/shared_data.py)."""

REAL_MARKETS = ("1.197931750", "1.197931751")


def reference_books(path: Path) -> list[Any]:
    """betfairlightweight's own MarketBook for every market change of a historical file, in order.

    Does what its historical generator stream (`create_historical_generator_stream`,
    `max_latency=None`) does per line -- `listener.on_data(line)` then `listener.snap(...)` --
    but snaps only the markets the line changed: the generator snaps every cached market on
    every line, heartbeats included, which is not one book per change.
    """
    import json

    import betfairlightweight

    listener = betfairlightweight.StreamListener(max_latency=None)
    listener.register_stream(0, "marketSubscription")
    books: list[Any] = []
    with open(path) as f:
        for line in f:
            listener.on_data(line)
            changed = [mc["id"] for mc in json.loads(line).get("mc") or ()]
            if changed:
                books.extend(listener.snap(changed))
    return books


def ladder(levels: Any, n: int | None = None) -> list[tuple[float, float]]:
    """(price, size) pairs of ticktape PriceSize levels or betfairlightweight PriceSize objects."""
    out = [(lv.price, lv.size) for lv in levels]
    return out if n is None else out[:n]

