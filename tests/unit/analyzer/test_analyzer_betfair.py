"""Real recorded Betfair markets end to end: import -> backtest -> load -> Betfair PnL views -> report.

The analyzer settles the run's bets itself (from the fills and the last market definitions)
and must agree to the cent with the simulated venue's own settlement (`MarketSettled`).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from analyzer.api import Analyzer
from analyzer.report import build_report
from producers.betfair.historical import import_file
from robots.backtest import backtest
from tests.shared_data import BETFAIR
from ticktape.tape.file import FileTape

SHARED = BETFAIR
MARKETS = ["1.197931750", "1.197931751"]

pytestmark = pytest.mark.shared_data(*(f"betfair/{m}" for m in MARKETS))


def test_betfair_run_settles_like_the_venue(tmp_path: Path) -> None:
    with FileTape(tmp_path / "tape") as tape:
        for m in MARKETS:
            import_file(tape, SHARED / m)
    uri = f"file:{tmp_path / 'tape'}"
    res = backtest("betfair_back_favourite", tape=uri, out_tape=uri, run_id="bf1")
    assert res.summary["fills"] >= 1
    a = Analyzer(str(tmp_path / "a.duckdb"), exact=True)
    a.load(uri)
    with FileTape(tmp_path / "tape") as tape:
        on_tape = [type(r.event).__name__ for r in tape.read("md.betfair.market")]
    for type_name, table in (("MarketBook", "market_book"), ("MarketDefinition", "market_definition")):
        loaded = a.sql(f"SELECT count(*) AS n FROM {table} WHERE _topic = 'md.betfair.market'")["n"][0]
        assert loaded == on_tape.count(type_name) > 0
    markets = a.betfair_markets("bf1")
    settled = a.sql("SELECT market_id, profit, commission, net_profit FROM market_settled WHERE _key = 'bf1' "
                    "ORDER BY market_id")
    assert len(settled) == len(markets) == len(MARKETS)
    mine = markets.sort_values("market_id")
    for (_, v), (_, m) in zip(settled.iterrows(), mine.iterrows(), strict=True):
        assert v["market_id"] == m["market_id"] and bool(m["settled"])
        assert m["gross_profit"] == Decimal(str(v["profit"]))
        assert m["commission"] == Decimal(str(v["commission"]))
        assert m["net_profit"] == Decimal(str(v["net_profit"]))
    assert sum(mine["net_profit"]) == Decimal(str(res.summary["pnl_exact"]))
    # pnl_summary values settled selections at their settled profit, not as linear positions
    summary = a.pnl_summary("bf1")
    assert set(summary["pnl_basis"]) == {"settled"}
    assert sum(summary["total_pnl"]) == sum(mine["gross_profit"])
    assert all(summary["unrealized"] == 0)
    html = build_report(a, "bf1")
    assert "Betfair net profit by market" in html and all(m in html for m in MARKETS)
    # nested real ladders are queryable
    best = a.sql("SELECT max(r.available_to_back[1].price) AS p FROM market_book, UNNEST(runners) AS u(r) "
                 "WHERE len(r.available_to_back) > 0")["p"][0]
    assert 1.01 <= best <= 1000
    a.close()
