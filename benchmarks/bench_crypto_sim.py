"""Crypto simulated venue and controls throughput: `python -m benchmarks.bench_crypto_sim [N]`.

Measures the venue alone (no robot, no tape), on events built in memory beforehand:
- `trades`: N trades through `on_market` (the market-data path every backtest pays);
- `trades+market_orders`: the same with a market order every 35 trades (~29k per 1M, the
  issue's EMA workload), filled against the last trade;
- `book+trades+resting`: BookDelta (2 levels) and Trade alternating, 20 resting limit orders
  whose queues move and fill, replaced when filled;
- `controls`: `Controls.check` + `on_event` per order with every control configured.
"""

from __future__ import annotations

import random
import sys

from benchmarks.common import best_rate, machine, report
from robots.controls import ControlsConfig
from robots.sim.crypto import CryptoVenue
from ticktape.events import BookDelta, BookSnapshot, Event, OrderFilled, PlaceOrder, PriceSize, Trade

INST = "BTCUSDT"


def make_trades(n: int, seed: int = 7) -> list[Trade]:
    """A random walk of trades on a 0.01 tick."""
    rng = random.Random(seed)
    price = 60_000.0
    out = []
    for i in range(n):
        price = round(price + rng.choice((-0.01, 0.0, 0.01)), 2)
        out.append(Trade("bench", INST, i, i, price, round(rng.uniform(0.001, 0.5), 3),
                         rng.choice(("BUY", "SELL")), str(i)))
    return out


def bench_trades(trades: list[Trade]) -> float:
    def run() -> None:
        venue = CryptoVenue()
        on_market = venue.on_market
        for t in trades:
            on_market(t)

    return best_rate(len(trades), run)


def bench_market_orders(trades: list[Trade], every: int = 35) -> tuple[float, int]:
    orders = {i: PlaceOrder("bench", f"o{i}", "bench", INST, i, i, "BUY" if (i // every) % 2 else "SELL",
                            "MARKET", 0.0, 0.01, "GTC") for i in range(every, len(trades), every)}
    fills = 0

    def run() -> None:
        nonlocal fills
        venue = CryptoVenue()
        on_market, on_intent = venue.on_market, venue.on_intent
        n = 0
        for i, t in enumerate(trades):
            on_market(t)
            o = orders.get(i)
            if o is not None:
                n += sum(1 for e in on_intent(o, i) if type(e) is OrderFilled)
        fills = n

    return best_rate(len(trades), run), fills


def make_book_flow(n: int, seed: int = 11) -> list[Event]:
    """Alternating 2-level book deltas and trades around a slowly moving mid."""
    rng = random.Random(seed)
    out: list[Event] = []
    mid = 100.0
    for i in range(n // 2):
        mid = round(mid + rng.choice((-0.01, 0.0, 0.01)), 2)
        bid, ask = round(mid - 0.01 * rng.randint(1, 10), 2), round(mid + 0.01 * rng.randint(1, 10), 2)
        out.append(BookDelta("bench", INST, 2 * i, 2 * i, i, i, (PriceSize(bid, round(rng.uniform(0, 5), 3)),),
                             (PriceSize(ask, round(rng.uniform(0, 5), 3)),)))
        side = rng.choice(("BUY", "SELL"))
        price = round(mid + (0.01 if side == "BUY" else -0.01) * rng.randint(0, 10), 2)
        out.append(Trade("bench", INST, 2 * i + 1, 2 * i + 1, price, round(rng.uniform(0.01, 1), 3), side, str(i)))
    return out


def bench_book(events: list[Event], resting: int = 20) -> tuple[float, int]:
    snapshot = BookSnapshot("bench", INST, -1, -1, 0,
                            tuple(PriceSize(round(100 - 0.01 * k, 2), 2.0) for k in range(1, 11)),
                            tuple(PriceSize(round(100 + 0.01 * k, 2), 2.0) for k in range(1, 11)))
    fills = 0

    def run() -> None:
        nonlocal fills
        venue = CryptoVenue()
        venue.on_market(snapshot)
        seq = 0

        def place(side: str, price: float, ts: int) -> None:
            nonlocal seq
            seq += 1
            venue.on_intent(PlaceOrder("bench", f"l{seq}", "bench", INST, ts, ts, side, "LIMIT", price, 0.5, "GTC"), ts)

        for k in range(resting // 2):
            place("BUY", round(100 - 0.01 * (k + 1), 2), 0)
            place("SELL", round(100 + 0.01 * (k + 1), 2), 0)
        n = 0
        on_market = venue.on_market
        for ev in events:
            out = on_market(ev)
            if out:
                for e in out:
                    if type(e) is OrderFilled:
                        n += 1
                        if e.leaves_size == 0:  # keep `resting` orders live: re-place near the last trade
                            t = ev.price  # type: ignore[union-attr]
                            place(e.side, round(t - 0.05 if e.side == "BUY" else t + 0.05, 2), ev.ts_event)
        fills = n

    return best_rate(len(events), run), fills


def bench_controls(n: int) -> float:
    intents = [PlaceOrder("bench", f"c{i}", "bench", INST, i * 1000, i * 1000, "BUY" if i % 2 else "SELL", "LIMIT",
                          100.0 + (i % 7) * 0.01, 0.01, "GTC") for i in range(n)]
    trade = Trade("bench", INST, 0, 0, 100.0, 1.0, "BUY", "t")

    def run() -> None:
        controls = ControlsConfig(max_order_size=1.0, max_position=100.0, max_exposure=1e6, max_robot_exposure=1e7,
                                  max_orders=1_000_000, price_band_pct=5.0).build()
        controls.on_event(trade)
        for intent in intents:
            if controls.check(intent) is None:
                controls.on_event(OrderFilled("bench", intent.client_order_id, None, "bench", INST, intent.ts_event,
                                              intent.ts_event, "f", intent.side, intent.price, intent.size, 0.0,
                                              "TAKER", 0.0))

    return best_rate(n, run)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    print(f"# machine: {machine()}")
    trades = make_trades(n)
    report("crypto_sim.trades", events=n, events_per_s=round(bench_trades(trades)))
    rate, fills = bench_market_orders(trades)
    report("crypto_sim.trades+market_orders", events=n, orders=n // 35, fills=fills, events_per_s=round(rate))
    flow = make_book_flow(n)
    rate, fills = bench_book(flow)
    report("crypto_sim.book+trades+resting", events=len(flow), maker_fills=fills, events_per_s=round(rate))
    m = min(n, 200_000)
    report("controls.check+fill", orders=m, orders_per_s=round(bench_controls(m)))


if __name__ == "__main__":
    main()
