"""`betfair_back_favourite` in flumine's simulated backtest (run by the flumine venv).

    python flumine_back_favourite.py MARKETS_DIR OUT.json

Standalone (flumine, betfairlightweight; not ticktape). `BackFavourite` is also the flumine side of
`benchmarks.bench_betfair_backtest` and of `tests/unit/robots/test_betfair_sim_recorded.py` (which
set `stake`). The strategy of ticktape's robot with its defaults: from 60 s before the scheduled
off, while the market is OPEN and not in play, back the active runner with the lowest best back
price, at that price, stake 2, once per market. flumine's `FlumineSimulation` with its default
latency and matching. One stream per file.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import flumine
from flumine import BaseStrategy, FlumineSimulation, clients
from flumine.order.ordertype import LimitOrder
from flumine.order.trade import Trade
from flumine.streams.betfairhistoricalstream import BetfairHistoricalStream

STAKE = 2.0
WINDOW_S = 60.0


class BackFavourite(BaseStrategy):  # type: ignore[misc]
    """Back the favourite once per market shortly before the off, for `stake`."""

    stake = STAKE

    def start(self, flumine: Any = None) -> None:
        self.done: set[str] = set()
        self.updates = 0

    def check_market_book(self, market: Any, market_book: Any) -> bool:
        self.updates += 1
        return bool(market_book.status == "OPEN" and not market_book.inplay
                    and market.market_id not in self.done and market.seconds_to_start <= WINDOW_S)

    def process_market_book(self, market: Any, market_book: Any) -> None:
        best = None
        best_price = 0.0
        for r in market_book.runners:
            if r.status == "ACTIVE" and r.ex.available_to_back:
                price = r.ex.available_to_back[0]["price"]
                if best is None or price < best_price:
                    best, best_price = r, price
        if best is None:
            return
        trade = Trade(market.market_id, best.selection_id, best.handicap, self)
        market.place_order(trade.create_order(side="BACK", order_type=LimitOrder(price=best_price, size=self.stake)))
        self.done.add(market.market_id)


def main() -> None:
    """Run the simulation over every file of MARKETS_DIR; write the figures and the bets."""
    logging.disable(logging.CRITICAL)
    src, out = sys.argv[1], sys.argv[2]
    files = sorted(str(p) for p in Path(src).iterdir())
    t_load = time.perf_counter()
    framework = FlumineSimulation(client=clients.SimulatedClient())
    strategy = BackFavourite(streams=[BetfairHistoricalStream(file_path=f) for f in files],
                             max_order_exposure=1000, max_selection_exposure=1000)
    framework.add_strategy(strategy)
    load_s = time.perf_counter() - t_load
    t0 = time.perf_counter()
    framework.run()
    run_s = time.perf_counter() - t0
    bets = [{"market_id": o.market_id, "selection_id": o.selection_id, "price": o.order_type.price,
             "size": o.order_type.size, "matched": o.size_matched,
             "average_price": round(o.average_price_matched or 0.0, 2)}
            for market in framework.markets for o in market.blotter]
    with open(out, "w") as f:
        json.dump({"engine": "flumine", "version": flumine.__version__, "events": strategy.updates,
                   "load_s": load_s, "run_s": run_s, "segments_s": [],
                   "bets": sorted(bets, key=lambda b: b["market_id"])}, f)


if __name__ == "__main__":
    main()
