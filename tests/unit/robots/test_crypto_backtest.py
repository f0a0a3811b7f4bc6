"""A backtest through the runner with the crypto venue, latency and controls: every number by hand."""

from __future__ import annotations

from dataclasses import dataclass

from robots.api import Context, Params, Robot, Subscription
from robots.backtest import backtest
from robots.sim.crypto import CryptoVenue, CryptoVenueConfig
from ticktape.events import BookDelta, BookSnapshot, OrderFilled, OrderRejected, PriceSize, Trade

MS = 1_000_000
INST = "BTCUSDT"


@dataclass(frozen=True)
class ScriptParams(Params):
    size: float = 3.0


@dataclass
class ScriptState:
    seen: int = 0


class Script(Robot[ScriptParams, ScriptState]):
    """Acts on trades by id: `go` buys at market and offers far away, `more` buys again."""

    name, params_type = "script", ScriptParams

    def subscriptions(self) -> Subscription:
        return Subscription(topics=("md",), instruments=(INST,))

    def init_state(self) -> ScriptState:
        return ScriptState()

    def on_trade(self, state: ScriptState, event: Trade, ctx: Context) -> None:
        state.seen += 1
        if event.trade_id == "go":
            ctx.buy(INST, self.params.size)
            ctx.sell(INST, 2.0, price=110.0)  # 10% from the last trade: the price band refuses it
        elif event.trade_id == "more":
            ctx.buy(INST, 1.0)  # would make the position 4 > 3


def test_latency_fills_against_the_book_at_arrival_and_controls_refuse_by_name() -> None:
    events = [
        BookSnapshot("sim", INST, 0, 0, 1, (PriceSize(99.0, 2.0),),
                     (PriceSize(100.0, 1.0), PriceSize(101.0, 1.0), PriceSize(102.0, 5.0))),
        Trade("sim", INST, 1 * MS, 1 * MS, 100.0, 0.1, "BUY", "go"),  # orders leave at 1 ms, arrive at 3 ms
        BookDelta("sim", INST, 2 * MS, 2 * MS, 2, 2, (), (PriceSize(100.0, 0.0),)),  # the 100 offer is gone
        Trade("sim", INST, 4 * MS, 4 * MS, 103.0, 0.1, "BUY", "mark"),
        Trade("sim", INST, 5 * MS, 5 * MS, 103.0, 0.1, "BUY", "more"),
    ]
    venue = CryptoVenue(CryptoVenueConfig(place_latency_ns=2 * MS, taker_fee="0.001"))
    res = backtest(Script(), events=events, venue=venue,
                   controls={"max_position": 3, "price_band_pct": 5, "max_order_size": 10})
    fills = [e for e in res.order_events if isinstance(e, OrderFilled)]
    # at 3 ms the asks are 101 x 1, 102 x 5: 1 @ 101 and 2 @ 102 (avg 101.667), taker 0.1%
    assert [(f.price, f.size, f.fee, f.ts_event, f.liquidity) for f in fills] == [
        (101.0, 1.0, 0.101, 3 * MS, "TAKER"), (102.0, 2.0, 0.204, 3 * MS, "TAKER")]
    rejected = [e for e in res.order_events if isinstance(e, OrderRejected)]
    assert [(r.control, r.ts_event) for r in rejected] == [("price_band", 1 * MS), ("max_position", 5 * MS)]
    assert rejected[0].reason == "price 110 is more than 5% away from the last trade 100 of BTCUSDT"
    assert rejected[1].reason == "BUY 1 could take the position in BTCUSDT to 4, beyond max position 3"
    s = res.summary
    assert s["fills"] == 2
    assert s["rejected_by_controls"] == 2
    assert s["fees_exact"] == "0.305"
    # long 3 at a cost of 305, marked at 103: 309 - 305 - 0.305 fees
    assert s["pnl_exact"] == "3.695"
