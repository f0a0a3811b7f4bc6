"""Metric views on hand-made fills, checked against numbers worked out by hand (see comments)."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from analyzer.api import Analyzer, bucket_ns
from ticktape.events import (
    MarketDefinition,
    OrderAccepted,
    OrderFilled,
    PlaceOrder,
    RunFinished,
    RunnerDefinition,
    Trade,
)
from ticktape.tape.file import FileTape

S = 1_000_000_000
MS = 1_000_000


def fill(run_robot: str, t: float, side: str, price: float, size: float, fee: float, instrument: str = "X",
         venue: str = "sim", n: int = 0) -> OrderFilled:
    ts = int(t * S)
    return OrderFilled(run_robot, f"{run_robot}-{n}-0", f"v{n}", venue, instrument, ts, ts + 7, f"f{n}", side,
                       price, size, fee, "TAKER", 0.0)


def intent(f: OrderFilled) -> PlaceOrder:
    return PlaceOrder(f.robot, f.client_order_id, f.venue, f.instrument, f.ts_event - 10 * MS, f.ts_event - 10 * MS,
                      f.side, "LIMIT", f.price, f.size, "GTC")


def accepted(f: OrderFilled) -> OrderAccepted:
    return OrderAccepted(f.robot, f.client_order_id, f.venue_order_id, f.venue, f.instrument, f.ts_event - 5 * MS,
                         f.ts_event - 5 * MS)


R1_FILLS = [
    fill("bot", 1, "BUY", 100.0, 2.0, 0.1, n=1),
    fill("bot", 2, "BUY", 103.0, 1.0, 0.05, n=2),
    fill("bot", 3, "SELL", 105.0, 2.5, 0.2, n=3),
    fill("bot", 4, "SELL", 101.0, 1.0, 0.1, n=4),
]


def market_def(market_id: str, winner: int, loser: int) -> MarketDefinition:
    runners = (RunnerDefinition(winner, 0.0, "WINNER", 1), RunnerDefinition(loser, 0.0, "LOSER", 2))
    return MarketDefinition(market_id, 9 * S, 9 * S, "e1", "7", "race", "R1 1m", "WIN", "GB", "Ascot", 5 * S, None,
                            9 * S, "CLOSED", False, 0, True, "ODDS", 1, 3, "Europe/London", runners)


@pytest.fixture
def analyzer(tmp_path: Path) -> Analyzer:
    with FileTape(tmp_path / "tape") as tape:
        tape.append("md.trade", [Trade("sim", "X", int(t * S), int(t * S), p, 1.0, "BUY", str(i))
                                 for i, (t, p) in enumerate([(1.5, 102.0), (3.5, 104.0), (5, 99.0)])])
        tape.append("orders.intent", [intent(f) for f in R1_FILLS], keys=["r1"] * 4)
        tape.append("orders.event", [e for f in R1_FILLS for e in (accepted(f), f)], keys=["r1"] * 8)
        tape.append("runs", [RunFinished("r1", 5 * S, 0, 10, 4, "", "{}")], keys=["r1"])
        # another run on the same instrument must not mix in
        tape.append("orders.event", [fill("bot", 2.5, "BUY", 50.0, 9.0, 0.0, n=9)], keys=["r2"])
        bets = [fill("bf", 1, "BUY", 3.0, 10.0, 0.0, "1.1:11", "betfair", 1),   # back 10 @ 3 on the winner: +20
                fill("bf", 2, "SELL", 2.0, 5.0, 0.0, "1.1:11", "betfair", 2),   # lay 5 @ 2 on the winner: -5
                fill("bf", 3, "BUY", 5.0, 4.0, 0.0, "1.1:22", "betfair", 3),    # back 4 @ 5 on a loser: -4
                fill("bf", 4, "SELL", 4.0, 6.0, 0.0, "1.1:22", "betfair", 4),   # lay 6 @ 4 on a loser: +6
                fill("bf", 5, "BUY", 2.0, 3.0, 0.0, "1.2:33", "betfair", 5)]    # market not settled yet
        tape.append("orders.event", bets, keys=["bf-run"] * 5)
        tape.append("md.betfair.def", [market_def("1.1", 11, 22)])
        a = Analyzer(str(tmp_path / "a.duckdb"), exact=True)
        a.load(tape)
    yield a
    a.close()


def test_positions_cash_and_pnl_summary(analyzer: Analyzer) -> None:
    pos = analyzer.positions("r1")
    assert [Decimal(str(p)) for p in pos["position"]] == [Decimal(2), Decimal(3), Decimal("0.5"), Decimal("-0.5")]
    # cash: -200.1, -303.15, +262.5-0.2 -> -40.85, +101-0.1 -> 60.05
    assert [str(c) for c in pos["cash"]] == ["-200.100000000", "-303.150000000", "-40.850000000", "60.050000000"]
    s = analyzer.pnl_summary("r1").iloc[0]
    assert (s["robot"], s["instrument"], s["fills"]) == ("bot", "X", 4)
    assert str(s["fees"]) == "0.450000000" and str(s["volume"]) == "6.500000000"
    assert str(s["mark"]) == "99.000000000"  # the last trade at or before the run's end (5 s)
    # realized (FIFO): 2 x (105-100) + 0.5 x (105-103) + 0.5 x (101-103) = 10
    assert str(s["realized"]) == "10.000000000"
    # total = cash + position x mark = 60.05 - 0.5 x 99 = 10.55 ; unrealized: short 0.5 @ 101 marked at 99 = +1
    assert str(s["total_pnl"]) == "10.550000000" and str(s["unrealized"]) == "1.000000000"
    other = analyzer.pnl_summary("r2").iloc[0]
    assert other["fills"] == 1 and str(other["position"]) == "9.000000000"


def test_round_trips_and_trade_stats(analyzer: Analyzer) -> None:
    trips = analyzer.sql("SELECT direction, qty::VARCHAR AS q, pnl::VARCHAR AS pnl, open_ts, close_ts, holding_ns "
                         "FROM round_trips WHERE run = 'r1' ORDER BY close_ts, open_ts")
    assert trips.values.tolist() == [
        ["LONG", "2.000000000", "10.000000000", 1 * S, 3 * S, 2 * S],
        ["LONG", "0.500000000", "1.000000000", 2 * S, 3 * S, 1 * S],
        ["LONG", "0.500000000", "-1.000000000", 2 * S, 4 * S, 2 * S],
    ]
    st = analyzer.trade_stats("r1").iloc[0]
    assert (st["round_trips"], st["wins"], st["losses"]) == (3, 2, 1)
    assert st["win_rate"] == pytest.approx(2 / 3)
    assert st["avg_win"] == pytest.approx(5.5) and st["avg_loss"] == pytest.approx(-1.0)
    assert st["avg_holding_ns"] == pytest.approx(5 * S / 3) and st["max_holding_ns"] == 2 * S
    realized = analyzer.sql("SELECT realized::VARCHAR FROM realized_pnl WHERE run = 'r1' ORDER BY ts_event, pnl")
    assert realized.iloc[:, 0].tolist()[-1] == "10.000000000"


def test_short_first_round_trip_is_fifo(tmp_path: Path) -> None:
    with FileTape(tmp_path / "t") as tape:
        tape.append("orders.event", [fill("b", 1, "SELL", 10.0, 1.0, 0.0, n=1), fill("b", 2, "BUY", 8.0, 3.0, 0.0, n=2),
                                     fill("b", 3, "SELL", 9.0, 2.0, 0.0, n=3)], keys=["s"] * 3)
        a = Analyzer()
        a.load(tape)
    trips = a.sql("SELECT direction, qty::DOUBLE, pnl::DOUBLE FROM round_trips ORDER BY close_ts")
    # sell 1 @10 closed by buying @8 (+2, short); 2 bought @8 closed selling @9 (+2, long)
    assert trips.values.tolist() == [["SHORT", 1.0, 2.0], ["LONG", 2.0, 2.0]]


def test_equity_curve_drawdown_sharpe_sortino(analyzer: Analyzer) -> None:
    eq = analyzer.equity_curve("r1", "1s")
    # the run starts with the first intent (0.99 s): bucket ends 1..6 s; marks 102 (1.5 s), 104 (3.5 s), 99 (5 s);
    # at 1 s no trade yet, so the position is marked at its fill price: -200.1 + 2 x 100 = -0.1
    assert eq["ts_event"].tolist() == [1 * S, 2 * S, 3 * S, 4 * S, 5 * S, 6 * S]
    assert [str(v) for v in eq["equity"]] == ["-0.100000000", "2.850000000", "10.150000000", "8.050000000",
                                              "10.550000000", "10.550000000"]
    assert [str(v) for v in eq["drawdown"]] == ["0E-9", "0E-9", "0E-9", "2.100000000", "0E-9", "0E-9"]


def test_equity_points_drawdown_and_run_stats(analyzer: Analyzer) -> None:
    pts = analyzer.equity_points("r1")
    # every fill (marked at its price) and every trade of X within the run (0.99 s .. 5 s):
    # 1 s buy 2 @100: -200.1 + 2 x 100 = -0.1; 1.5 s mark 102: 3.9; 2 s buy 1 @103: -303.15 + 3 x 103 = 5.85;
    # 3 s sell 2.5 @105: -40.85 + 0.5 x 105 = 11.65; 3.5 s mark 104: 11.15; 4 s sell 1 @101: 60.05 - 0.5 x 101
    # = 9.55; 5 s mark 99: 10.55. The peak starts at 0, so the first point is already 0.1 down.
    assert pts["point"].tolist() == ["fill", "mark", "fill", "fill", "mark", "fill", "mark"]
    assert [str(v) for v in pts["equity"]] == ["-0.100000000", "3.900000000", "5.850000000", "11.650000000",
                                               "11.150000000", "9.550000000", "10.550000000"]
    assert [str(v) for v in pts["drawdown"]] == ["0.100000000", "0E-9", "0E-9", "0E-9", "0.500000000",
                                                 "2.100000000", "1.100000000"]
    stats = analyzer.run_stats("r1").iloc[0]
    assert str(stats["max_drawdown"]) == "2.100000000" and str(stats["total_pnl"]) == "10.550000000"
    # the whole run is on one day: one daily return, so no ratio, and the reason says so
    assert stats["days"] == 1 and math.isnan(stats["sharpe"]) and math.isnan(stats["sortino"])  # NULL
    assert stats["sharpe_note"] == stats["sortino_note"] == "fewer than 7 daily returns (1 day)"
    with pytest.raises(ValueError, match="no interval"):
        analyzer.run_stats("r1", "1s")
    with pytest.raises(duckdb.InvalidInputException, match="takes no interval"):
        analyzer.sql("SELECT * FROM run_stats('r1', 3600000000000)")


def test_equity_curve_refuses_a_grid_too_fine_for_the_run(analyzer: Analyzer) -> None:
    # r1 spans 0.99 .. 5 s: 1 ns buckets would be 4e9 grid points, past DuckDB's list limit
    with pytest.raises(duckdb.InvalidInputException, match="use a bucket of at least"):
        analyzer.equity_curve("r1", 1)
    assert len(analyzer.equity_curve("r1", "1ms")) == 4011  # bucket ends 0.991 s .. 5.001 s


def test_latency(analyzer: Analyzer) -> None:
    lat = analyzer.order_latency("r1")
    assert len(lat) == 4
    assert set(lat["intent_to_accepted_ns"]) == {5 * MS} and set(lat["intent_to_fill_ns"]) == {10 * MS}
    assert set(lat["accepted_to_fill_ns"]) == {5 * MS} and set(lat["fills"]) == {1}
    assert set(analyzer.fills("r1")["latency_ns"]) == {7}


def test_betfair_profit_per_selection_and_market_with_commission(analyzer: Analyzer) -> None:
    sel = analyzer.sql("SELECT market_id, selection_id, result, profit::VARCHAR FROM betfair_selection_pnl "
                       "ORDER BY market_id, selection_id")
    assert sel.values.tolist() == [["1.1", 11, "WINNER", "15.000000000"], ["1.1", 22, "LOSER", "2.000000000"],
                                   ["1.2", 33, "UNSETTLED", "0.000000000"]]
    m = analyzer.sql("SELECT market_id, gross_profit::VARCHAR, commission::VARCHAR, net_profit::VARCHAR, settled "
                     "FROM betfair_market_pnl ORDER BY market_id")
    assert m.values.tolist()[0] == ["1.1", "17.000000000", "0.850000000", "16.150000000", True]
    assert m.values.tolist()[1] == ["1.2", "0.000000000", "0.000000000", "0.000000000", False]


def test_bucket_parsing() -> None:
    assert bucket_ns("1min") == 60 * S and bucket_ns("500ms") == 500 * MS and bucket_ns(7) == 7
    with pytest.raises(ValueError, match="not a duration"):
        bucket_ns("soon")
