"""Build small Betfair `MarketBook`s by hand: for tests, examples and notebooks.

    book("1.1", ts, [runner(11, back=[(3.0, 10)], lay=[(3.1, 5)], traded=[(3.0, 40)])])

Ladders may be given in any order; they are sorted the way the schema (and the importer) lists
them: `available_to_back` best (highest) first, `available_to_lay` best (lowest) first, traded
volume by ascending price.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ticktape.events import MarketBook, PriceSize, RunnerBook

Levels = Iterable[tuple[float, float]]


def runner(selection_id: int, *, back: Levels = (), lay: Levels = (), traded: Levels = (), status: str = "ACTIVE",
           last_price_traded: float | None = None, handicap: float = 0.0) -> RunnerBook:
    """One runner's book; `back`/`lay`/`traded` are (price, size) levels."""
    atb = tuple(sorted((PriceSize(p, s) for p, s in back), key=lambda x: -x.price))
    atl = tuple(sorted((PriceSize(p, s) for p, s in lay), key=lambda x: x.price))
    trd = tuple(sorted((PriceSize(p, s) for p, s in traded), key=lambda x: x.price))
    total = round(sum(x.size for x in trd), 2)
    return RunnerBook(selection_id, handicap, status, last_price_traded, total, atb, atl, trd)


def book(market_id: str, ts: int, runners: Sequence[RunnerBook], *, status: str = "OPEN", in_play: bool = False,
         bet_delay: int = 0, version: int = 1) -> MarketBook:
    """A market book at `ts` (ns) with the given runners."""
    total = round(sum(r.total_matched for r in runners), 2)
    active = sum(1 for r in runners if r.status == "ACTIVE")
    return MarketBook(market_id, ts, ts, status, in_play, bet_delay, total, version, True, True, active,
                      tuple(runners))
