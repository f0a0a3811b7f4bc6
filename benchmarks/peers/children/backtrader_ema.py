"""EMA 10/50 cross, market orders, in a backtrader Cerebro (run by the backtrader venv).

    python backtrader_ema.py TRADES.parquet OUT.json

Standalone (backtrader, pandas, pyarrow; not ticktape). Each trade is one bar with
open = high = low = close = price. The decisions are ticktape's `ema_cross` arithmetic written
out (see nautilus_ema.py). The broker fills market orders at the close of the bar that placed
them (`cheat-on-close`), i.e. at the trade that caused the cross, in full: ticktape's `naive`
venue. Without it backtrader would fill at the next bar's open, one trade later.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from typing import Any

import backtrader as bt
import pandas as pd
import pyarrow.parquet as pq

SEGMENT = 100_000


class EmaCross(bt.Strategy):  # type: ignore[misc]
    """ticktape's `ema_cross` decisions on one-trade bars."""

    def __init__(self) -> None:
        self.af, self.as_, self.warmup = 2.0 / 11, 2.0 / 51, 50
        self.fast = self.slow = 0.0
        self.seen = 0
        self.above = 0
        self.position_size = 0.0
        self.pending = False
        self.marks: list[float] = []
        self.fills: list[list[Any]] = []

    def next(self) -> None:
        price = self.data.close[0]
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
        if sign > 0 >= prev and self.position_size <= 0:
            self.pending = True
            self.buy(size=1.0)
        elif sign < 0 <= prev and self.position_size > 0:
            self.pending = True
            self.sell(size=self.position_size)

    def notify_order(self, order: Any) -> None:
        if order.status == order.Completed:
            size = order.executed.size  # signed: negative for a sell
            self.position_size = round(self.position_size + size, 9)
            self.fills.append([bt.num2date(order.executed.dt).timestamp(), "BUY" if size > 0 else "SELL",
                               order.executed.price, abs(size)])
            self.pending = False
        elif order.status in (order.Canceled, order.Margin, order.Rejected):
            self.pending = False


def main() -> None:
    """Load the trades, run Cerebro, write the figures."""
    src, out = sys.argv[1], sys.argv[2]
    table = pq.read_table(src)
    price = table.column("price").to_numpy()
    df = pd.DataFrame({"open": price, "high": price, "low": price, "close": price,
                       "volume": table.column("qty").to_numpy()},
                      index=pd.to_datetime(table.column("time_ms").to_numpy(), unit="ms"))
    t_load = time.perf_counter()
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=df))
    cerebro.addstrategy(EmaCross)
    cerebro.broker.setcash(1e12)  # never short of cash: the comparison is about decisions
    cerebro.broker.set_coc(True)
    load_s = time.perf_counter() - t_load
    t0 = time.perf_counter()
    strategy = cerebro.run()[0]
    run_s = time.perf_counter() - t0
    marks = [t0, *strategy.marks]
    with open(out, "w") as f:
        json.dump({"engine": "backtrader", "version": bt.__version__, "events": len(df), "load_s": load_s,
                   "run_s": run_s, "segments_s": [b - a for a, b in itertools.pairwise(marks)],
                   "fills": strategy.fills}, f)


if __name__ == "__main__":
    main()
