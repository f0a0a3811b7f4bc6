"""Money for people and for pandas: `0` not `0E-9`; float frames by default, exact Decimal on request;
the report's fees line adds up."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from html import unescape
from pathlib import Path

import pytest
from click.testing import CliRunner

from analyzer.api import Analyzer
from analyzer.money import money_text
from analyzer.report import build_report
from ticktape.cli import _register_plugins, cli
from ticktape.events import OrderFilled, RunFinished, Trade
from ticktape.tape.file import FileTape

_register_plugins()
S = 1_000_000_000


def _fill(t: int, side: str, price: float, size: float, fee: float, n: int) -> OrderFilled:
    return OrderFilled(robot="bot", client_order_id=f"c{n}", venue_order_id=f"v{n}", venue="sim", instrument="X",
                       ts_event=t * S, ts_recv=t * S, fill_id=f"f{n}", side=side, price=price, size=size, fee=fee,
                       liquidity="TAKER")


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A run with a fee-free fill (fees 0), a paid one, and a mark after them."""
    path = str(tmp_path / "m.duckdb")
    with FileTape(tmp_path / "tape") as tape:
        tape.append("md.trade", [Trade("sim", "X", 5 * S, 5 * S, 104.0, 1.0, "BUY", "t1")])
        tape.append("orders.event", [_fill(1, "BUY", 100.0, 2.0, 0.0, 1), _fill(3, "SELL", 103.0, 1.0, 0.25, 2)],
                    keys=["r"] * 2)
        tape.append("runs", [RunFinished("r", 5 * S, 0, 3, 2, "", "{}")], keys=["r"])
        a = Analyzer(path)
        a.load(tape)
        a.close()
    return path


@pytest.mark.parametrize(("value", "text"), [
    ("0E-9", "0"), ("-0E-9", "0"), ("0.000000000", "0"), ("1.500000000", "1.5"), ("-20.200000000", "-20.2"),
    ("1.5E+3", "1500"), ("1E-9", "0.000000001"), ("12", "12")])
def test_money_text(value: str, text: str) -> None:
    assert money_text(Decimal(value)) == text


def test_frames_give_floats_unless_exact(db: str) -> None:
    a = Analyzer(db)
    fills = a.fills("r")
    assert str(fills["fee"].dtype) == "float64" and str(fills["price"].dtype) == "float64"
    assert fills["fee"].tolist() == [0.0, 0.25]
    pnl = a.pnl_summary("r")
    assert str(pnl["total_pnl"].dtype) == "float64"
    # cash -200 + 103 - 0.25 = -97.25; position 1 marked at 104: 6.75
    assert pnl["total_pnl"].tolist() == [6.75]
    exact = a.pnl_summary("r", exact=True)
    assert exact["total_pnl"].tolist() == [Decimal("6.75")] and isinstance(exact["total_pnl"][0], Decimal)
    assert isinstance(a.sql("SELECT fee FROM fills", exact=True)["fee"][0], Decimal)
    assert a.run_metrics("r")["max_drawdown"].dtype.kind == "f"
    a.close()
    b = Analyzer(db, exact=True)  # exact as the default, a call may still ask for floats
    assert isinstance(b.fills("r")["fee"][0], Decimal)
    assert str(b.fills("r", exact=False)["fee"].dtype) == "float64"
    b.close()


def test_sql_prints_zero_not_0e9(db: str) -> None:
    query = "SELECT fee, fee * 0 AS none, price FROM fills ORDER BY ts_event"
    table = CliRunner().invoke(cli, ["sql", db, query])
    assert table.exit_code == 0, table.output
    assert "0E-9" not in table.output and "100.000000000" not in table.output
    rows = [line.split() for line in table.output.splitlines()[2:4]]
    assert rows == [["0", "0", "100"], ["0.25", "0", "103"]]
    out = CliRunner().invoke(cli, ["sql", db, query, "--format", "json"])
    first = json.loads(out.output.splitlines()[0])
    assert first == {"fee": "0", "none": "0", "price": "100"}


def test_report_shows_how_fees_add_up(db: str) -> None:
    a = Analyzer(db)
    html = build_report(a, "r")
    a.close()
    line = unescape(re.search(r"<p class='identity'>(.*?)</p>", html)[1])  # type: ignore[index]
    # realized (FIFO) 1 x (103 - 100) = 3; unrealized 1 x (104 - 100) = 4; fees 0.25; total 6.75
    assert line == "Realized 3 + unrealized 4 − fees 0.25 = total PnL 6.75"
    nums = [Decimal(x) for x in re.findall(r"-?\d+(?:\.\d+)?", line)]
    assert nums[0] + nums[1] - nums[2] == nums[3]
    assert "0E-9" not in html
