"""The bar rules every layer shares (ticktape.bars), without a server."""

from __future__ import annotations

from ticktape.bars import BarSelection, bar_problem, bar_topic, interval_ns
from ticktape.events import Bar


def _bar(ts: int, venue: str = "sim", instrument: str = "BTCUSDT", interval: str = "1m") -> Bar:
    return Bar(venue=venue, instrument=instrument, ts_event=ts, ts_recv=ts, interval=interval, open=1.0, high=2.0,
               low=0.5, close=1.5, volume=0.0)


def test_selection_is_half_open_and_its_query_says_the_same() -> None:
    sel = BarSelection(venue="sim", instrument="BTCUSDT", start=10, end=20)
    assert [ts for ts in (9, 10, 19, 20) if sel.matches(_bar(ts))] == [10, 19]
    assert not sel.matches(_bar(10, venue="other")) and not sel.matches(_bar(10, instrument="ETHUSDT"))
    assert sel.query() == {"venue": "sim", "instrument": "BTCUSDT", "ts_event": {"$gte": 10, "$lt": 20}}
    assert BarSelection().query() == {} and BarSelection().describe() == "all bars"
    hourly = BarSelection(interval="1h")
    assert hourly.matches(_bar(1, interval="1h")) and not hourly.matches(_bar(1))
    assert BarSelection().topics(["md.sim.bar", "md.sim.trade", "md.b.bar", "dlq.bars"]) == ["md.b.bar", "md.sim.bar"]
    assert BarSelection(venue="x").topics([]) == [bar_topic("x")] == ["md.x.bar"]


def test_bar_problem_names_the_field() -> None:
    assert bar_problem(1.0, 2.0, 0.5, 1.5, 0.0) is None
    assert bar_problem(1.0, 0.4, 0.5, 1.5, 0.0) == ("high", "high 0.4 below low 0.5")
    assert bar_problem(0.0, 2.0, 0.5, 1.5, 0.0) == ("open", "open 0.0 must be > 0")
    assert bar_problem(1.0, 2.0, 0.5, 1.5, -1.0) == ("volume", "volume -1.0 must be >= 0")
    assert interval_ns("1m") == 60 * 10**9 and interval_ns("1mo") is None
