"""EMA 10/50 cross, market orders, in NautilusTrader's BacktestEngine (run by the nautilus venv).

    python nautilus_ema.py TRADES.parquet OUT.json

Standalone: it imports only NautilusTrader and pyarrow (not ticktape). The strategy is the
arithmetic of ticktape's `ema_cross` written out (alpha = 2/(n+1), seeded with the first price, no
signal before 50 prices, a cross judged on the sign of fast - slow, buy 1 when flat, sell the
position), rather than Nautilus' own EMA indicator, whose warm-up differs: equal decisions first.
`BestPriceFillModel` fills a market order in full at the best price, which trade ticks set to
the last trade: ticktape's `naive` venue's model.
Writes the run-phase seconds, the seconds of each 100k trades, and every fill to OUT.json.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from decimal import Decimal
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.backtest.models import BestPriceFillModel
from nautilus_trader.config import LoggingConfig, StrategyConfig
from nautilus_trader.model.currencies import USDT
from nautilus_trader.model.data import TradeTick
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
from nautilus_trader.model.events import OrderFilled
from nautilus_trader.model.identifiers import InstrumentId, Venue
from nautilus_trader.model.objects import Money, Quantity
from nautilus_trader.persistence.wranglers import TradeTickDataWrangler
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.trading.strategy import Strategy

SEGMENT = 100_000


class EmaCrossConfig(StrategyConfig, frozen=True):  # type: ignore[call-arg,misc]
    """Instrument and periods (Nautilus wants a config object per strategy)."""

    instrument_id: InstrumentId
    fast: int = 10
    slow: int = 50


class EmaCross(Strategy):  # type: ignore[misc]
    """ticktape's `ema_cross` decisions on Nautilus trade ticks."""

    def __init__(self, config: EmaCrossConfig) -> None:
        super().__init__(config)
        self.iid = config.instrument_id
        self.af = 2.0 / (config.fast + 1)
        self.as_ = 2.0 / (config.slow + 1)
        self.warmup = config.slow
        self.fast = self.slow = 0.0
        self.seen = 0
        self.above = 0
        self.position = 0.0
        self.pending = False
        self.marks: list[float] = []
        self.fills: list[list[Any]] = []

    def on_start(self) -> None:
        self.qty = Quantity.from_str("1.000000")
        self.subscribe_trade_ticks(self.iid)

    def on_trade_tick(self, tick: TradeTick) -> None:
        price = float(tick.price)
        if self.seen:
            self.fast += self.af * (price - self.fast)
            self.slow += self.as_ * (price - self.slow)
        else:
            self.fast = self.slow = price
        self.seen += 1
        if self.seen % SEGMENT == 0:
            self.marks.append(time.perf_counter())
        sign = 1 if self.fast > self.slow else (-1 if self.fast < self.slow else 0)
        if sign == self.above:
            return
        prev, self.above = self.above, sign
        if self.seen < self.warmup or self.pending:
            return
        if sign > 0 >= prev and self.position <= 0:
            self._market(OrderSide.BUY, self.qty)
        elif sign < 0 <= prev and self.position > 0:
            self._market(OrderSide.SELL, Quantity.from_str(f"{self.position:.6f}"))

    def _market(self, side: OrderSide, qty: Quantity) -> None:
        self.pending = True
        self.submit_order(self.order_factory.market(instrument_id=self.iid, order_side=side, quantity=qty))

    def on_order_filled(self, event: OrderFilled) -> None:
        size = float(event.last_qty)
        self.position = round(self.position + (size if event.order_side == OrderSide.BUY else -size), 9)
        self.fills.append([event.ts_event, "BUY" if event.order_side == OrderSide.BUY else "SELL",
                           float(event.last_px), size])
        order = self.cache.order(event.client_order_id)
        if order is None or order.is_closed:  # in flight until filled in full, as in ticktape
            self.pending = False


def main() -> None:
    """Load the trades, run the engine, write the figures."""
    src, out = sys.argv[1], sys.argv[2]
    instrument = TestInstrumentProvider.btcusdt_binance()
    table = pq.read_table(src)
    df = pd.DataFrame({
        "price": table.column("price").to_numpy(),
        "quantity": table.column("qty").to_numpy(),
        "buyer_maker": table.column("is_buyer_maker").to_numpy(),
        "trade_id": table.column("id").to_numpy().astype(str),
    }, index=pd.to_datetime(table.column("time_ms").to_numpy(), unit="ms", utc=True))
    t_load = time.perf_counter()
    ticks = TradeTickDataWrangler(instrument).process(df)
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(bypass_logging=True)))
    engine.add_venue(venue=Venue("BINANCE"), oms_type=OmsType.NETTING, account_type=AccountType.CASH,
                     base_currency=None, fill_model=BestPriceFillModel(), starting_balances=[Money(10_000_000, USDT),
                                                            Money(Decimal(1_000_000), instrument.base_currency)])
    engine.add_instrument(instrument)
    engine.add_data(ticks)
    strategy = EmaCross(EmaCrossConfig(instrument_id=instrument.id))
    engine.add_strategy(strategy)
    load_s = time.perf_counter() - t_load
    t0 = time.perf_counter()
    engine.run()
    run_s = time.perf_counter() - t0
    marks = [t0, *strategy.marks]
    import nautilus_trader

    with open(out, "w") as f:
        json.dump({"engine": "nautilus_trader", "version": nautilus_trader.__version__, "events": len(ticks),
                   "load_s": load_s, "run_s": run_s, "segments_s": [b - a for a, b in itertools.pairwise(marks)],
                   "fills": strategy.fills}, f)


if __name__ == "__main__":
    main()
