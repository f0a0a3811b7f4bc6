"""One number per metric: `ticktape backtest`, `ticktape sql` and `ticktape report` print the same
total PnL, max drawdown, Sharpe and Sortino for a run, and the drawdown is the brute-force one.

Real runs end to end: synthetic trades over several days (a losing ema_cross run, another
parameter set, and two instruments at once), and recorded Betfair markets. The backtest summary
comes from the in-process ledger (`robots.performance`), SQL and the report from the analyzer's
`run_metrics` view: the test holds the two paths equal.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from html import unescape
from itertools import accumulate
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from analyzer.api import Analyzer
from analyzer.report import build_report
from robots.performance import ratio_text
from tests.shared_data import BETFAIR
from ticktape.cli import _register_plugins, cli
from ticktape.demo import synthetic_trades
from ticktape.events import Bar, OrderFilled, Quote, Trade
from ticktape.tape import open_tape

_register_plugins()

TOPIC = "md.sim.trade"
STEP_NS = 30_000_000_000  # a trade every 30 s: 30,000 trades span about 10 days


@dataclass
class Run:
    """One backtest seen three ways."""

    run_id: str
    cli_json: dict[str, Any]
    cli_text: str
    sql: dict[str, Any]
    report: dict[str, str]
    analyzer: Analyzer
    tape_uri: str
    db: str
    report_identity: str


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, ["--log-level", "error", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def report_cards(html: str) -> dict[str, str]:
    """The report's headline cards, label -> printed value."""
    return {unescape(k): unescape(v) for k, v in
            re.findall(r'<div class="k">(.*?)</div><div class="v[^"]*">(.*?)</div>', html)}


def cli_line(text: str, label: str) -> str:
    """The value printed after `label` in the human backtest summary (before any parenthesised note)."""
    m = re.search(rf"^  {label}\s+(.*?)(?:  \(.*)?$", text, re.M)
    assert m, f"no {label!r} line in:\n{text}"
    return m[1]


def see_runs(root: Path, tape_uri: str, runs: dict[str, tuple[str, ...]]) -> dict[str, Run]:
    """Backtest each run id through the CLI (JSON, and the human text with --no-out), load the tape
    once, then read each run through `ticktape sql` and the report."""
    printed = {}
    for run_id, (robot, *args) in runs.items():
        common = ["backtest", robot, "--tape", tape_uri, "--no-progress", *args, "--run-id", run_id]
        printed[run_id] = (json.loads(invoke(*common, "--json")), invoke(*common, "--no-out"))
    db = str(root / f"{Path(tape_uri).name}.duckdb")
    invoke("load", "--tape", tape_uri, "--db", db, "--no-progress")
    a = Analyzer(db, exact=True)
    out = {}
    for run_id, (cli_json, cli_text) in printed.items():
        sql = json.loads(invoke("sql", db, f"SELECT * FROM run_stats('{run_id}')", "--format", "json").strip())
        html = build_report(a, run_id)
        identity = unescape(re.findall(r"<p class='identity'>(.*?)</p>", html)[0])
        out[run_id] = Run(run_id, cli_json, cli_text, sql, report_cards(html), a, tape_uri, db, identity)
    return out


def brute_force_drawdown(equity: list[Decimal]) -> Decimal:
    """The largest fall from the highest earlier point (the run starts at 0), in plain Python."""
    highs = list(accumulate([Decimal(0), *equity], max))[1:]
    return max((h - e for h, e in zip(highs, equity, strict=True)), default=Decimal(0))


def test_brute_force_drawdown_itself() -> None:
    # a fall before any gain counts from 0; a later, deeper fall from a higher peak wins
    assert brute_force_drawdown([Decimal(v) for v in ("-1", "3", "2", "5", "1.5", "4")]) == Decimal("3.5")
    assert brute_force_drawdown([Decimal(v) for v in ("1", "2")]) == 0


def linear_equity(tape_uri: str, run_id: str, start: int, end: int) -> list[Decimal]:
    """Equity at every fill and mark, recomputed in Python from the tape: cash + position x last price."""
    tape = open_tape(tape_uri)
    try:
        points: list[tuple[int, int, int, str, Decimal, Decimal, Decimal]] = []
        traded: set[str] = set()
        for r in tape.read("orders.event"):
            e = r.event
            if r.key == run_id and isinstance(e, OrderFilled):
                traded.add(e.instrument)
                qty = Decimal(repr(e.size)) * (1 if e.side == "BUY" else -1)
                points.append((e.ts_event, 0, r.offset, e.instrument, qty, Decimal(repr(e.price)),
                               Decimal(repr(e.fee))))
        for r in tape.read(TOPIC):
            t = r.event
            if isinstance(t, Trade) and t.instrument in traded and start <= t.ts_event <= end:
                points.append((t.ts_event, 1, r.offset, t.instrument, Decimal(0), Decimal(repr(t.price)), Decimal(0)))
    finally:
        tape.close()
    cash: dict[str, Decimal] = {}
    pos: dict[str, Decimal] = {}
    mark: dict[str, Decimal] = {}
    out = []
    for _, _, _, inst, qty, price, fee in sorted(points, key=lambda p: (p[0], p[1], p[2], p[3])):
        cash[inst] = cash.get(inst, Decimal(0)) - qty * price - fee
        pos[inst] = pos.get(inst, Decimal(0)) + qty
        mark[inst] = price
        out.append(sum((cash[i] + pos[i] * mark[i] for i in cash), Decimal(0)))
    return out


def assert_one_number(run: Run) -> None:
    """CLI summary (JSON and text), `ticktape sql` and the report agree on every metric."""
    s, q, rep, text = run.cli_json, run.sql, run.report, run.cli_text
    total_label = "Betfair net (settled, after commission)" if "Betfair net (settled, after commission)" in rep \
        else "Total PnL"
    # total PnL and max drawdown: exact decimals, printed the same everywhere
    assert Decimal(s["pnl_exact"]) == Decimal(q["total_pnl"]) == Decimal(rep[total_label])
    assert cli_line(text, "PnL") == s["pnl_exact"] == rep[total_label] == q["total_pnl"]
    assert Decimal(s["max_drawdown_exact"]) == Decimal(q["max_drawdown"]) == Decimal(rep["Max drawdown"])
    assert cli_line(text, "max drawdown") == s["max_drawdown_exact"] == rep["Max drawdown"] == q["max_drawdown"]
    # Sharpe and Sortino: the same doubles (summed in another order), the same text, the same reason if undefined
    assert s["days"] == q["days"]
    for name, card in (("sharpe", "Sharpe (daily, x sqrt(365))"), ("sortino", "Sortino (daily, x sqrt(365))")):
        if q[name] is None:
            assert s[name] is None and s[f"{name}_note"] == q[f"{name}_note"]
        else:
            assert s[name] == pytest.approx(q[name], rel=1e-9) and s[f"{name}_note"] is None
        expected = ratio_text(q[name], q[f"{name}_note"])
        assert rep[card] == expected
        assert cli_line(text, name.capitalize()) == ratio_text(s[name], s[f"{name}_note"]) == expected
    # the report's fees line adds up, and (but for Betfair, marked to the last traded price) to the headline
    nums = [Decimal(x) for x in re.findall(r"-?\d+(?:\.\d+)?", run.report_identity)]
    assert nums[0] + nums[1] - nums[2] == nums[3]
    if total_label == "Total PnL":
        assert nums[3] == Decimal(q["total_pnl"])
    # the drawdown is the brute-force one over the run's own equity points
    pts = run.analyzer.equity_points(run.run_id)
    assert len(pts) == q["points"] > 0
    assert brute_force_drawdown(list(pts["equity"])) == Decimal(q["max_drawdown"])


@pytest.fixture(scope="module")
def crypto(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    root = tmp_path_factory.mktemp("crypto")
    one = f"file:{root / 'one'}"
    tape = open_tape(one)
    tape.append(TOPIC, synthetic_trades(30_000, step_ns=STEP_NS))
    tape.close()
    two = f"file:{root / 'two'}"
    tape = open_tape(two)  # two instruments at once: the ledger's several-open-instruments path
    # (fewer, sparser trades: loading alternating instruments is slow, ~0.3 ms a trade)
    merged = sorted(synthetic_trades(12_000, step_ns=2 * STEP_NS) +
                    synthetic_trades(12_000, instrument="ETHUSDT", step_ns=2 * STEP_NS, seed=11,
                                     ts0=1_700_000_000_000_000_000 + 7_000_000_000), key=lambda t: t.ts_event)
    tape.append(TOPIC, merged)
    tape.close()
    three = f"file:{root / 'three'}"
    tape = open_tape(three)  # quotes beside the trades on another topic: a run reading trades never sees them
    trades = synthetic_trades(30_000, step_ns=STEP_NS)
    tape.append(TOPIC, trades)
    tape.append("md.sim.quote", [Quote("sim", t.instrument, t.ts_event + 1_000_000, t.ts_event + 1_000_000,
                                       round(t.price * 0.99, 2), 1.0, round(t.price * 1.02, 2), 1.0)
                                 for t in trades[::3]])
    # five-minute bars of the same market: the ledger marks at each bar's close
    tape.append("md.sim.bar", [Bar("sim", "BTCUSDT", c[-1].ts_event, c[-1].ts_event, "5m", c[0].price,
                                   max(t.price for t in c), min(t.price for t in c), c[-1].price, 1.0)
                               for c in (trades[i:i + 10] for i in range(0, len(trades), 10))])
    tape.close()
    ema = ("ema_cross", "--param", "fast=10", "--param", "slow=50")
    runs = {**see_runs(root, one, {"losing": ema, "other": ("ema_cross", "--param", "fast=3", "--param", "slow=20")}),
            **see_runs(root, two, {"two": ema}),
            **see_runs(root, three, {"beside-quotes": ("ema_cross", "--topics", TOPIC),
                                     "bars": ("ema_cross", "--topics", "md.sim.bar")})}
    return runs


@pytest.mark.parametrize("name", ["losing", "other", "two", "beside-quotes", "bars"])
def test_cli_sql_and_report_agree_on_synthetic_runs(crypto: dict[str, Run], name: str) -> None:
    run = crypto[name]
    assert run.cli_json["fills"] > 50 and run.sql["days"] >= 7  # enough trading and days for real ratios
    assert run.sql["sharpe"] is not None and run.sql["sortino"] is not None
    assert_one_number(run)
    if name == "losing":  # the sign of the ratios follows the money
        assert Decimal(run.sql["total_pnl"]) < 0 and run.sql["sharpe"] < 0 and run.sql["sortino"] < 0


@pytest.mark.parametrize("name", ["losing", "two"])
def test_equity_points_are_every_fill_and_mark_recomputed_from_the_tape(crypto: dict[str, Run], name: str) -> None:
    run = crypto[name]
    b = run.analyzer.sql("SELECT start_ts, end_ts FROM run_bounds WHERE run = ?", [run.run_id]).iloc[0]
    expected = linear_equity(run.tape_uri, run.run_id, int(b["start_ts"]), int(b["end_ts"]))
    got = list(run.analyzer.equity_points(run.run_id)["equity"])
    assert len(got) == len(expected)
    # the views round each fill's notional and fee to 1e-9, the recomputation does not
    assert max(abs(g - e) for g, e in zip(got, expected, strict=True)) < Decimal("1e-6")
    assert abs(brute_force_drawdown(expected) - Decimal(run.sql["max_drawdown"])) < Decimal("1e-6")


def test_daily_ratios_follow_their_stated_definition(crypto: dict[str, Run]) -> None:
    run = crypto["losing"]
    days = run.analyzer.daily_equity(run.run_id)
    rets = [float(r) for r in days["ret"]]
    closes = list(days["close"])
    assert sum(days["ret"], Decimal(0)) == closes[-1] == Decimal(run.sql["total_pnl"])
    n = len(rets)
    mean = sum(rets) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in rets) / (n - 1))
    down = math.sqrt(sum(min(r, 0.0) ** 2 for r in rets) / n)
    assert run.sql["sharpe"] == pytest.approx(mean / std * math.sqrt(365), rel=1e-9)
    assert run.sql["sortino"] == pytest.approx(mean / down * math.sqrt(365), rel=1e-9)


def test_large_and_small_intervals_no_longer_give_wrong_numbers(crypto: dict[str, Run]) -> None:
    run = crypto["losing"]
    for interval in ("1", "3600000000000"):
        result = CliRunner().invoke(cli, ["sql", run.db, f"SELECT * FROM run_stats('{run.run_id}', {interval})"])
        assert result.exit_code != 0 and "takes no interval" in result.output


@pytest.mark.shared_data("betfair/1.197931750", "betfair/1.197931751")
def test_cli_sql_and_report_agree_on_a_recorded_betfair_run(tmp_path: Path) -> None:
    from producers.betfair.historical import import_file

    uri = f"file:{tmp_path / 'tape'}"
    tape = open_tape(uri)
    for m in ("1.197931750", "1.197931751"):
        import_file(tape, BETFAIR / m)
    tape.close()
    run = see_runs(tmp_path, uri, {"bf": ("betfair_back_favourite",)})["bf"]
    assert run.cli_json["fills"] >= 1 and run.sql["points"] == run.cli_json["markets_settled"]
    assert_one_number(run)
    # equity is settled profit after commission: the sum of the venue's MarketSettled, as in the ledger
    settled = run.analyzer.sql("SELECT sum(net_profit::DECIMAL(38, 9)) AS s FROM market_settled WHERE _key = 'bf'")
    assert settled["s"][0] == Decimal(run.sql["total_pnl"])
    # the report says how the commission comes off, and the numbers add up to the headline
    html = build_report(run.analyzer, "bf")
    line = unescape(re.findall(r"<p class='identity'>(.*?)</p>", html)[1])
    assert line.startswith("Settled gross ") and " − commission " in line and " = Betfair net " in line
    gross, commission, net = (Decimal(x) for x in re.findall(r"-?\d+(?:\.\d+)?", line))
    assert gross - commission == net == Decimal(run.sql["total_pnl"])
