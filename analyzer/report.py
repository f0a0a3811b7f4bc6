"""`ticktape report RUN_ID --db FILE --out report.html`: one self-contained HTML file per run.

Inline SVG charts (no CDN, no JavaScript; opens from disk): equity and drawdown, positions,
price with buy/sell markers, PnL by instrument (and by Betfair market), plus the headline
numbers, the run's manifest and tables of PnL, round-trip statistics and latency. Every number
comes from the metric views (`analyzer.metrics`), so the report and `ticktape sql` agree.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from analyzer.money import money_text
from analyzer.svg import Chart, Markers, Series, bar_chart, line_chart
from robots.performance import ratio_text
from ticktape.errors import TicktapeError

if TYPE_CHECKING:  # duckdb and pandas load when a report is written, not with the CLI
    from analyzer.api import Analyzer

_NICE_BUCKETS = [10**6 * m for m in (1, 10, 100)] + [10**9 * s for s in (1, 5, 10, 30, 60, 300, 900, 1800, 3600,
                                                                          4 * 3600, 86_400)]
MAX_PRICE_CHARTS = 4
MAX_MARKERS = 4000

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:920px;color:#222}
h1{font-size:22px;margin-bottom:4px} h2{font-size:16px;margin-top:28px;border-bottom:1px solid #ddd}
.sub{color:#666;font-size:12px} .cards{display:flex;flex-wrap:wrap;gap:10px;margin:16px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:120px}
.card .k{font-size:11px;color:#666} .card .v{font-size:17px;font-weight:600}
.pos{color:#1a7f37} .neg{color:#c62828}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f6f6f6} td.l,th.l{text-align:left} pre{font-size:11px;background:#f6f6f6;padding:8px;overflow-x:auto}
svg{display:block;margin:10px 0}
"""


def money(value: Any) -> str:
    """Exact decimals without trailing zeros; floats to 6 significant digits; None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        return money_text(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _duration(ns: Any) -> str:
    if ns is None or ns != ns:  # None or NaN
        return "-"
    s = float(ns) / 1e9
    if s < 1:
        return f"{s * 1000:.3g} ms"
    if s < 120:
        return f"{s:.3g} s"
    if s < 7200:
        return f"{s / 60:.3g} min"
    return f"{s / 3600:.3g} h"


def _time(ns: Any) -> str:
    if ns is None or ns != ns:
        return "-"
    return datetime.fromtimestamp(int(ns) / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def choose_bucket(span_ns: int, points: int = 400) -> int:
    """A round bucket giving about `points` equity points over the run."""
    target = max(span_ns // points, 1)
    return next((b for b in _NICE_BUCKETS if b >= target), _NICE_BUCKETS[-1])


def _table(df: Any, columns: list[tuple[str, str]], left: tuple[str, ...] = ()) -> str:
    if df is None or len(df) == 0:
        return '<p class="sub">none</p>'
    head = "".join(f'<th class="{"l" if c in left else ""}">{escape(label)}</th>' for c, label in columns)
    rows = []
    for rec in df.to_dict("records"):
        cells = []
        for c, _ in columns:
            v = rec.get(c)
            text = _duration(v) if c.endswith("_ns") else money(v)
            cells.append(f'<td class="{"l" if c in left else ""}">{escape(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _card(label: str, value: Any, signed: bool = False) -> str:
    text = money(value)
    cls = ""
    if signed and value is not None:
        try:
            cls = "pos" if float(value) > 0 else "neg" if float(value) < 0 else ""
        except (TypeError, ValueError):
            cls = ""
    return f'<div class="card"><div class="k">{escape(label)}</div><div class="v {cls}">{escape(text)}</div></div>'


def _ratio(v: Any) -> float | None:
    """A ratio column's value, None for NULL (which pandas may give as None or NaN)."""
    return None if v is None or v != v else float(v)


def _f(v: Any) -> float:
    return float(v) if v is not None else 0.0


def build_report(a: Analyzer, run: str) -> str:
    """The report's HTML for one run (raises click.ClickException when the run has no rows)."""
    bounds = a.sql("SELECT start_ts, end_ts FROM run_bounds WHERE run = ?", [run])
    if len(bounds) == 0:
        known = ", ".join(a.sql("SELECT run FROM run_bounds ORDER BY run")["run"].tolist()[:20]) or "none"
        raise click.ClickException(f"no run {run!r} in the database (runs: {known}); load its tape first")
    start, end = int(bounds["start_ts"][0]), int(bounds["end_ts"][0])
    bucket = choose_bucket(max(end - start, 1), 1000)
    manifest = a.sql("SELECT * FROM run_started WHERE run_id = ?", [run])
    finished = a.sql("SELECT * FROM run_finished WHERE run_id = ?", [run])
    # exact=True: the report sums and prints money to the last unit
    pnl = a.pnl_summary(run, exact=True)
    stats = a.trade_stats(run, exact=True)
    # The chart keeps, per bucket, the deepest point and the last one, so the drawn drawdown
    # reaches the figure on the card (every point would make the file too large on a long run).
    eq = a.sql("""SELECT ts_event, equity, drawdown FROM equity_points WHERE run = ?
                  QUALIFY ROW_NUMBER() OVER (PARTITION BY ts_event // ? ORDER BY drawdown DESC, seq DESC) = 1
                       OR ROW_NUMBER() OVER (PARTITION BY ts_event // ? ORDER BY seq DESC) = 1
                  ORDER BY seq""", [run, bucket, bucket], exact=True)
    rm = a.run_metrics(run, exact=True).iloc[0]  # the one definition of total PnL, drawdown, Sharpe, Sortino
    fills = a.fills(run, exact=True)
    lat = a.sql("""SELECT count(*) AS orders, count(accepted_ts) AS accepted, count(rejected_ts) AS rejected,
                          count(first_fill_ts) AS filled,
                          median(intent_to_accepted_ns) AS median_intent_to_accepted_ns,
                          quantile_cont(intent_to_accepted_ns, 0.99) AS p99_intent_to_accepted_ns,
                          median(intent_to_fill_ns) AS median_intent_to_fill_ns,
                          quantile_cont(intent_to_fill_ns, 0.99) AS p99_intent_to_fill_ns
                   FROM order_latency WHERE run = ?""", [run])
    markets = a.betfair_markets(run, exact=True)
    robots = ", ".join(sorted(set(pnl["robot"]))) if len(pnl) else "-"

    total = sum((v for v in pnl["total_pnl"]), Decimal(0)) if len(pnl) else Decimal(0)
    fees = sum((v for v in pnl["fees"]), Decimal(0)) if len(pnl) else Decimal(0)
    realized = sum((v for v in pnl["realized"]), Decimal(0)) if len(pnl) else Decimal(0)
    unrealized = sum((v for v in pnl["unrealized"]), Decimal(0)) if len(pnl) else Decimal(0)
    trips = int(stats["round_trips"].sum()) if len(stats) else 0
    wins = int(stats["wins"].sum()) if len(stats) else 0
    betfair = len(markets) > 0
    cards = []
    if betfair:  # the settled result is the headline; marking to the last traded price is only an estimate
        cards.append(_card("Betfair net (settled, after commission)", rm["total_pnl"], signed=True))
        cards.append(_card("Commission", sum((v for v in markets["commission"]), Decimal(0))))
        cards.append(_card("Mark-to-market PnL (before settlement)", total, signed=True))
    else:
        cards.append(_card("Total PnL", rm["total_pnl"], signed=True))
    cards += [
        _card("Realized (FIFO, before fees)", realized, signed=True),
        _card("Unrealized (before fees)", unrealized, signed=True), _card("Fees", fees),
        _card("Max drawdown", rm["max_drawdown"]),
        _card("Sharpe (daily, x sqrt(365))", ratio_text(_ratio(rm["sharpe"]), rm["sharpe_note"])),
        _card("Sortino (daily, x sqrt(365))", ratio_text(_ratio(rm["sortino"]), rm["sortino_note"])),
        _card("Fills", len(fills)), _card("Round trips", trips),
        _card("Win rate", f"{wins / trips:.1%}" if trips else None),
    ]
    # How the money adds up, in one line (a settled Betfair selection's fees are its market's commission)
    identity = (f"Realized {money(realized)} + unrealized {money(unrealized)} − fees {money(fees)} = "
                f"{'mark-to-market PnL' if betfair else 'total PnL'} {money(total)}")
    identities = [identity]
    if betfair:  # Betfair's fee is the commission on each market's net winnings, charged at settlement
        gross = sum((v for v in markets["gross_profit"]), Decimal(0))
        commission = sum((v for v in markets["commission"]), Decimal(0))
        identities.append(f"Settled gross {money(gross)} − commission {money(commission)} = "
                          f"Betfair net {money(rm['total_pnl'])}")

    charts = []
    ex = [float(t) for t in eq["ts_event"]]
    title = ("Equity marked to last traded prices (before settlement) and drawdown" if betfair
             else "Equity (total PnL) and drawdown")
    charts.append(line_chart(Chart(title, [
        Series("equity", ex, [_f(v) for v in eq["equity"]], color="#1f77b4"),
        Series("drawdown", ex, [-_f(v) for v in eq["drawdown"]], color="#d62728", fill=True),
    ], y_label="quote currency")))
    pos_series = []
    for i, (inst, grp) in enumerate(fills.groupby("instrument", sort=True) if len(fills) else []):
        if i >= 8:
            break
        p = a.sql("SELECT ts_event, position FROM positions WHERE run = ? AND instrument = ? "
                  "ORDER BY ts_event, _offset", [run, inst])
        xs = [float(start)] + [float(t) for t in p["ts_event"]] + [float(end)]
        ys = [0.0] + [_f(v) for v in p["position"]] + [_f(p["position"].iloc[-1])]
        pos_series.append(Series(f"{inst}", xs, ys, step=True))
        del grp
    charts.append(line_chart(Chart("Position", pos_series, y_label="quantity")))
    top = (fills.groupby("instrument").size().sort_values(ascending=False).index.tolist()[:MAX_PRICE_CHARTS]
           if len(fills) else [])
    price_bucket = max((end - start) // 1500, 1)
    for inst in top:
        px = a.sql("SELECT max(ts_event) AS t, last(mark ORDER BY ts_event)::DOUBLE AS p FROM marks "
                   "WHERE instrument = ? AND ts_event BETWEEN ? AND ? GROUP BY ts_event // ? ORDER BY 1",
                   [inst, start, end, price_bucket])
        f = fills[fills["instrument"] == inst].head(MAX_MARKERS)
        buys, sells = f[f["side"] == "BUY"], f[f["side"] == "SELL"]
        charts.append(line_chart(Chart(f"{inst}: price with fills", [
            Series("mark (last trade / mid)", [float(t) for t in px["t"]], [float(v) for v in px["p"]],
                   color="#555")],
            [Markers("buy", [float(t) for t in buys["ts_event"]], [_f(v) for v in buys["price"]], True, "#2ca02c"),
             Markers("sell", [float(t) for t in sells["ts_event"]], [_f(v) for v in sells["price"]], False,
                     "#d62728")], y_label="price")))
    if betfair:
        sel = a.betfair_selections(run)
        charts.append(bar_chart("Betfair profit by selection (settled, before commission)",
                                [f"{r_.market_id}:{r_.selection_id} {r_.result}" for r_ in sel.itertuples()],
                                [_f(v) for v in sel["profit"]]))
    elif len(pnl):
        charts.append(bar_chart("PnL by instrument", [f"{r_.robot} {r_.instrument}" for r_ in pnl.itertuples()],
                                [_f(v) for v in pnl["total_pnl"]]))
    if betfair:
        charts.append(bar_chart("Betfair net profit by market", markets["market_id"].tolist(),
                                [_f(v) for v in markets["net_profit"]]))

    info = []
    if len(manifest):
        m = manifest.iloc[0]
        info = [("robot", f"{m['robot']} (id {m['robot_id']})"), ("mode", m["mode"]), ("params", m["params"]),
                ("source", f"{m['source']} topics {', '.join(m['topics'])}"), ("venue", m["venue"]),
                ("controls", m["controls"])]
    if len(finished):
        fz = finished.iloc[0]
        info += [("input events", str(fz["events"])), ("intents", str(fz["intents"])),
                 ("intents_sha256", fz["intents_sha256"])]
    info += [("period", f"{_time(start)} .. {_time(end)}"),
             ("equity points", f"{rm['points']:,} (fills and marks; the chart keeps the deepest and last per "
                               f"{_duration(bucket)})"),
             ("daily returns", f"{rm['days']} UTC day{'' if rm['days'] == 1 else 's'}")]
    info_html = "".join(f'<tr><th class="l">{escape(k)}</th><td class="l">{escape(str(v))}</td></tr>'
                        for k, v in info)
    summary_json = ""
    if len(finished) and finished.iloc[0]["summary"]:
        try:
            summary_json = json.dumps(json.loads(finished.iloc[0]["summary"]), indent=1, sort_keys=True)
        except ValueError:
            summary_json = str(finished.iloc[0]["summary"])

    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>ticktape report: {escape(run)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Run {escape(run)}</h1><div class='sub'>robots: {escape(robots)} &middot; "
        f"{escape(_time(start))} .. {escape(_time(end))}</div>",
        f"<div class='cards'>{''.join(cards)}</div>",
        *(f"<p class='identity'>{escape(line)}</p>" for line in identities),
        *charts,
        "<h2>PnL by robot and instrument</h2>",
        _table(pnl, [("robot", "robot"), ("instrument", "instrument"), ("fills", "fills"), ("volume", "volume"),
                     ("fees", "fees"), ("position", "position"), ("mark", "mark"), ("realized", "realized"),
                     ("unrealized", "unrealized"), ("total_pnl", "total PnL")], left=("robot", "instrument")),
        "<h2>Round trips (FIFO)</h2>",
        _table(stats, [("instrument", "instrument"), ("round_trips", "round trips"), ("wins", "wins"),
                       ("losses", "losses"), ("win_rate", "win rate"), ("avg_win", "avg win"),
                       ("avg_loss", "avg loss"), ("avg_holding_ns", "avg holding"),
                       ("max_holding_ns", "max holding")], left=("instrument",)),
        "<h2>Order latency (event time)</h2>",
        _table(lat, [("orders", "orders"), ("accepted", "accepted"), ("rejected", "rejected"), ("filled", "filled"),
                     ("median_intent_to_accepted_ns", "median intent→accepted"),
                     ("p99_intent_to_accepted_ns", "p99 intent→accepted"),
                     ("median_intent_to_fill_ns", "median intent→fill"),
                     ("p99_intent_to_fill_ns", "p99 intent→fill")]),
    ]
    if len(markets):
        parts += ["<h2>Betfair markets</h2>",
                  _table(markets, [("market_id", "market"), ("bets", "bets"), ("gross_profit", "gross"),
                                   ("commission", "commission"), ("net_profit", "net"), ("settled", "settled")],
                         left=("market_id",))]
    parts += ["<h2>Run</h2>", f"<table>{info_html}</table>"]
    if summary_json:
        parts += ["<h2>Runner summary</h2>", f"<pre>{escape(summary_json)}</pre>"]
    parts.append("<p class='sub'>Money columns are exact decimals (DECIMAL(38,9)); generated by ticktape report."
                 "</p></body></html>")
    return "\n".join(parts)


@click.command("report")
@click.argument("run_id", required=False)
@click.option("--db", required=True, help="Analyzer database (after `ticktape load`).")
@click.option("--out", "out", default=None, help="HTML file to write (default: report-RUN_ID.html or sweep-ID.html).")
@click.option("--sweep", "sweep_id", default=None, help="Report a sweep instead: heat map and best runs.")
@click.option("--objective", default="pnl", show_default=True, help="With --sweep: summary field to rank by.")
def report_cmd(run_id: str | None, db: str, out: str | None, sweep_id: str | None, objective: str) -> None:
    """Write a self-contained HTML report of RUN_ID: equity, drawdown, positions, prices with fills, PnL.

    With --sweep ID: the sweep's runs instead, best first (also printed), and a heat map of the
    objective over the first two parameters that vary."""
    from analyzer.api import Analyzer
    from analyzer.cli import open_database

    if (run_id is None) == (sweep_id is None):
        raise click.UsageError("give a RUN_ID or --sweep ID")
    a = open_database(Analyzer, db)
    try:
        if sweep_id is not None:
            from analyzer.sweep_report import build_sweep_report, sweep_rows, test_rows, text_table

            try:
                rows, varying = sweep_rows(a, sweep_id, objective)
                tested = test_rows(a, sweep_id, objective)
                html = build_sweep_report(a, sweep_id, objective)
            except TicktapeError as exc:
                raise click.ClickException(str(exc)) from exc
            click.echo(text_table(rows, varying, objective))
            if tested:
                click.echo(f"\nwalk-forward, on the test window ({objective} there; train_{objective} where "
                           "they were chosen):")
                click.echo(text_table(tested, varying, f"train_{objective}"))
        else:
            assert run_id is not None
            html = build_report(a, run_id)
    finally:
        a.close()
    path = Path(out or (f"sweep-{sweep_id}.html" if sweep_id else f"report-{run_id}.html"))
    path.write_text(html, encoding="utf-8")
    click.echo(f"wrote {path} ({len(html) / 1024:.0f} KiB)")
