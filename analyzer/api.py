"""Python API for notebooks: the analyzer's tables and metrics as pandas DataFrames.

    from analyzer.api import Analyzer
    a = Analyzer("runs.duckdb")
    a.load("file:./tape")                       # incremental, like `ticktape load`
    a.pnl_summary("ema-1a2b")                   # per robot and instrument
    a.equity_curve("ema-1a2b", "1min")          # cash, position value, equity, drawdown
    a.sql("SELECT * FROM fills WHERE side = 'SELL'")
    a.run_metrics("ema-1a2b")                   # total PnL, max drawdown, daily Sharpe and Sortino

Money columns (exact DECIMAL(38, 9) in the database) arrive as floats, so frames plot and
aggregate without `astype`; `exact=True` (per call, or `Analyzer(..., exact=True)` for all)
keeps them as `decimal.Decimal`, for sums that must reconcile to the last unit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import duckdb

from analyzer.load import LoadSummary, connect, load
from analyzer.metrics import install_metrics
from analyzer.money import decimals_to_float
from ticktape.tape import Tape

_UNITS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "min": 60_000_000_000,
          "h": 3_600_000_000_000, "d": 86_400_000_000_000}


def bucket_ns(value: int | str) -> int:
    """`60_000_000_000`, `"1min"`, `"5s"`, `"1h"`, `"1d"` -> nanoseconds."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+)\s*(ns|us|ms|s|min|h|d)\s*", value)
    if not m:
        raise ValueError(f"not a duration: {value!r} (use e.g. 500ms, 1s, 1min, 1h, 1d)")
    return int(m[1]) * _UNITS[m[2]]


class Analyzer:
    """An analyzer database (DuckDB file or ':memory:') with the metric views installed.

    `exact`: the default for every frame this returns: False gives float money columns, True
    keeps exact `decimal.Decimal` (each method's own `exact=` wins)."""

    def __init__(self, db: str | duckdb.DuckDBPyConnection = ":memory:", *, exact: bool = False) -> None:
        self.con = connect(db) if isinstance(db, str) else db
        self.exact = exact
        install_metrics(self.con)

    def load(self, tape: Tape | str, *, topics: Sequence[str] | None = None, skip_bad: bool = False) -> LoadSummary:
        """Load what is new on a tape (see `analyzer.load.load`), then refresh the views."""
        summary = load(tape, self.con, topics=topics, skip_bad=skip_bad)
        install_metrics(self.con)
        return summary

    def sql(self, query: str, params: Sequence[Any] | None = None, *, exact: bool | None = None) -> Any:
        """Any query as a pandas DataFrame: DECIMAL money columns as float64, or `decimal.Decimal` with exact=True."""
        # Through Arrow: it keeps DECIMAL exact when asked, and casts to float64 in one step when not.
        table = self.con.sql(query, params=list(params or [])).to_arrow_table()
        if not (self.exact if exact is None else exact):
            table = decimals_to_float(table)
        return table.to_pandas()

    def runs(self) -> Any:
        """Every run on the database: id, robot, mode, start/end, input events, intents."""
        return self.sql("""SELECT s.run_id AS run, s.robot, s.robot_id, s.mode, s.ts_event AS start_ts,
                                  f.ts_event AS end_ts, f.events, f.intents, f.intents_sha256
                           FROM run_started s LEFT JOIN run_finished f USING (run_id) ORDER BY s.ts_event""")

    def _by_run(self, view: str, run: str | None, exact: bool | None) -> Any:
        if run is None:
            return self.sql(f"SELECT * FROM {view}", exact=exact)
        return self.sql(f"SELECT * FROM {view} WHERE run = ?", [run], exact=exact)

    def fills(self, run: str | None = None, *, exact: bool | None = None) -> Any:
        """Fills with signed quantity, notional and cash flow (exact DECIMAL columns)."""
        return self._by_run("fills", run, exact)

    def positions(self, run: str | None = None, *, exact: bool | None = None) -> Any:
        """Position, cash and fees after every fill."""
        return self._by_run("positions", run, exact)

    def pnl_summary(self, run: str | None = None, *, exact: bool | None = None) -> Any:
        """Per run, robot and instrument: fills, volume, fees, position, realized/unrealized/total PnL."""
        return self._by_run("pnl_summary", run, exact)

    def round_trips(self, run: str | None = None, *, exact: bool | None = None) -> Any:
        """FIFO round trips (entry, exit, quantity, gross PnL, holding time)."""
        return self._by_run("round_trips", run, exact)

    def trade_stats(self, run: str | None = None, *, exact: bool | None = None) -> Any:
        """Round-trip count, win rate, average win/loss, holding times."""
        return self._by_run("trade_stats", run, exact)

    def order_latency(self, run: str | None = None, *, exact: bool | None = None) -> Any:
        """Per order: intent -> accepted -> filled times."""
        return self._by_run("order_latency", run, exact)

    def betfair_markets(self, run: str | None = None, *, exact: bool | None = None) -> Any:
        """Betfair profit per market with commission."""
        return self._by_run("betfair_market_pnl", run, exact)

    def betfair_selections(self, run: str | None = None, *, exact: bool | None = None) -> Any:
        """Betfair profit per selection."""
        return self._by_run("betfair_selection_pnl", run, exact)

    def equity_curve(self, run: str, bucket: int | str = "1min", *, exact: bool | None = None) -> Any:
        """Equity (total PnL), cash, position value, peak and drawdown at every bucket end (for charts)."""
        return self.sql("SELECT * FROM equity_curve(?, ?)", [run, bucket_ns(bucket)], exact=exact)

    def equity_points(self, run: str, *, exact: bool | None = None) -> Any:
        """Equity, peak and drawdown after every fill and at every mark (Betfair: every settlement)."""
        return self.sql("SELECT * FROM equity_points WHERE run = ? ORDER BY seq", [run], exact=exact)

    def daily_equity(self, run: str, *, exact: bool | None = None) -> Any:
        """Equity at the end of each UTC day of the run, and the day's return (change)."""
        return self.sql("SELECT * FROM daily_equity WHERE run = ? ORDER BY day", [run], exact=exact)

    def run_metrics(self, run: str | None = None, *, exact: bool | None = None) -> Any:
        """Total PnL, max drawdown, daily Sharpe and Sortino (NULL with a reason when undefined)."""
        return self._by_run("run_metrics", run, exact)

    def run_stats(self, run: str, bucket: int | str | None = None, *, exact: bool | None = None) -> Any:
        """`run_metrics` of one run. `bucket` is no longer used: passing one raises ValueError."""
        if bucket is not None:
            raise ValueError(f"run_stats takes no interval any more (got {bucket!r}): Sharpe and Sortino are on "
                             "daily returns; see run_metrics / robots.performance")
        return self.sql("SELECT * FROM run_stats(?)", [run], exact=exact)

    def close(self) -> None:
        """Close the database."""
        self.con.close()
