"""One definition per run metric, as DuckDB views: equity points, daily equity, run metrics.

The definitions are in `robots.performance` (which mirrors them in-process for the backtest
summary). The report, `ticktape sql` and the Python API all read `run_metrics`.

Views (time columns BIGINT ns, money DECIMAL(38, 9)):
- `equity_points`: per run, equity after every fill and at every mark (trade price, quote mid,
  bar close) of an instrument the run traded, on the topics the run read (`RunStarted.topics`;
  all topics for a run without a manifest), between the run's first and last event; at a fill
  the instrument is marked at the fill price. Equity = cash + position x mark (after fees),
  summed over the run's robots and instruments. A Betfair run (fills on venue `betfair`) books
  money when a market settles, so its points are its `MarketSettled` events and equity is the
  settled profit after commission, like the backtest's settlement ledger. `peak` (running
  maximum, starting at 0) and `drawdown` = peak - equity.
- `daily_equity`: per run and UTC day from its first to its last day: `close` (equity at the
  day's last point, carried over quiet days, 0 before the first point), `ret` (change from the
  previous close), the day's `points` and their largest `max_drawdown`.
- `run_metrics`: per run: `total_pnl` (last equity), `max_drawdown`, `points`, `days`, `sharpe`,
  `sortino` (daily, x sqrt(365); NULL below `MIN_DAILY_RETURNS` days or with a zero denominator,
  `sharpe_note` / `sortino_note` say why).

Table macro `run_stats(run)`: that run's `run_metrics` row. The interval argument it used to take
(`run_stats(run, bucket_ns)`) now fails with a message saying so, since the ratios are daily.
"""

from __future__ import annotations

from robots.performance import DAY_NS, MIN_DAILY_RETURNS, PERIODS_PER_YEAR

D = "DECIMAL(38, 9)"

RUN_METRIC_VIEWS = [
    """CREATE OR REPLACE VIEW settlement_runs AS
    SELECT DISTINCT run FROM fills WHERE venue = 'betfair'""",
    f"""CREATE OR REPLACE VIEW equity_points AS
    WITH lin AS (SELECT * FROM fills WHERE run NOT IN (SELECT run FROM settlement_runs)),
    inst AS (SELECT DISTINCT run, robot, instrument FROM lin),
    -- marks only from the topics the run read (its manifest), as its ledger saw them; no manifest: all
    seen AS (SELECT run_id AS run, UNNEST(topics) AS topic FROM run_started),
    src AS (SELECT i.*, rb.start_ts, rb.end_ts, s.topic
            FROM inst i JOIN run_bounds rb USING (run) LEFT JOIN seen s USING (run)),
    ev AS (  -- at one instant a fill comes before the mark of the market event that caused it, as in the runner
        SELECT run, robot, instrument, ts_event, 0 AS kind, _offset AS ord, qty, cash_flow, price FROM lin
        UNION ALL
        SELECT i.run, i.robot, i.instrument, m.ts_event, 1, m._offset, 0::{D}, 0::{D}, m.mark
        FROM src i JOIN marks m ON m.instrument = i.instrument AND m.ts_event BETWEEN i.start_ts AND i.end_ts
                                AND (i.topic IS NULL OR m._topic = i.topic)),
    valued AS (
        SELECT *, SUM(cash_flow) OVER w + SUM(qty) OVER w * price AS value
        FROM ev WINDOW w AS (PARTITION BY run, robot, instrument ORDER BY ts_event, kind, ord
                             ROWS UNBOUNDED PRECEDING)),
    -- the run's equity moves by each instrument's change of value, so it needs no grid of all instruments
    delta AS (
        SELECT run, ts_event, kind, ord, robot, instrument,
               value - LAG(value, 1, 0::{D}) OVER (PARTITION BY run, robot, instrument
                                                  ORDER BY ts_event, kind, ord) AS change
        FROM valued),
    linear AS (
        SELECT run, ts_event, kind, ord, robot, instrument,
               SUM(change) OVER (PARTITION BY run ORDER BY ts_event, kind, ord, robot, instrument
                                 ROWS UNBOUNDED PRECEDING)::{D} AS equity
        FROM delta),
    settled AS (
        SELECT _key AS run, ts_event, 2 AS kind, _offset AS ord, robot, market_id AS instrument,
               SUM(net_profit::{D}) OVER (PARTITION BY _key ORDER BY ts_event, _offset
                                          ROWS UNBOUNDED PRECEDING)::{D} AS equity
        FROM market_settled WHERE _key IN (SELECT run FROM settlement_runs)),
    pts AS (SELECT * FROM linear UNION ALL SELECT * FROM settled)
    SELECT run, ROW_NUMBER() OVER w AS seq, ts_event, robot, instrument,
           CASE kind WHEN 0 THEN 'fill' WHEN 1 THEN 'mark' ELSE 'settlement' END AS point, equity,
           GREATEST(MAX(equity) OVER w, 0::{D}) AS peak,
           (GREATEST(MAX(equity) OVER w, 0::{D}) - equity)::{D} AS drawdown
    FROM pts
    WINDOW w AS (PARTITION BY run ORDER BY ts_event, kind, ord, robot, instrument ROWS UNBOUNDED PRECEDING)""",
    f"""CREATE OR REPLACE VIEW daily_equity AS
    WITH days AS (
        SELECT run, UNNEST(range(start_ts // {DAY_NS}, GREATEST(end_ts, start_ts) // {DAY_NS} + 1)) AS day
        FROM run_bounds),
    closes AS (
        SELECT run, ts_event // {DAY_NS} AS day, LAST(equity ORDER BY seq) AS close, COUNT(*) AS points,
               MAX(drawdown) AS max_drawdown
        FROM equity_points GROUP BY ALL),
    filled AS (
        SELECT d.run, d.day, COALESCE(c.close, 0::{D}) AS close,
               CASE WHEN c.day = d.day THEN c.points ELSE 0 END AS points,
               CASE WHEN c.day = d.day THEN c.max_drawdown ELSE 0::{D} END AS max_drawdown
        FROM days d ASOF LEFT JOIN closes c ON d.run = c.run AND d.day >= c.day)
    SELECT run, day, day * {DAY_NS} AS day_start_ts, close,
           (close - LAG(close, 1, 0::{D}) OVER (PARTITION BY run ORDER BY day))::{D} AS ret, points, max_drawdown
    FROM filled""",
    # One pass over equity_points (through daily_equity): every figure of a run comes from its days.
    f"""CREATE OR REPLACE VIEW run_metrics AS
    WITH r AS (
        SELECT run, LAST(close ORDER BY day) AS total_pnl, MAX(max_drawdown) AS max_drawdown,
               SUM(points)::BIGINT AS points, COUNT(*) AS days, AVG(ret::DOUBLE) AS mean_ret,
               STDDEV_SAMP(ret::DOUBLE) AS std_ret, SQRT(AVG(POW(LEAST(ret::DOUBLE, 0), 2))) AS downside_ret,
               'fewer than {MIN_DAILY_RETURNS} daily returns (' || COUNT(*) || ' day'
                   || CASE WHEN COUNT(*) = 1 THEN '' ELSE 's' END || ')' AS short_note
        FROM daily_equity GROUP BY run)
    SELECT run, total_pnl, max_drawdown, points, days,
           CASE WHEN days >= {MIN_DAILY_RETURNS} AND std_ret > 0
                THEN mean_ret / std_ret * SQRT({PERIODS_PER_YEAR}) END AS sharpe,
           CASE WHEN days >= {MIN_DAILY_RETURNS} AND downside_ret > 0
                THEN mean_ret / downside_ret * SQRT({PERIODS_PER_YEAR}) END AS sortino,
           CASE WHEN days < {MIN_DAILY_RETURNS} THEN short_note
                WHEN NOT std_ret > 0 THEN 'daily returns do not vary' END AS sharpe_note,
           CASE WHEN days < {MIN_DAILY_RETURNS} THEN short_note
                WHEN NOT downside_ret > 0 THEN 'no losing day' END AS sortino_note
    FROM r""",
    """CREATE OR REPLACE MACRO run_stats(which_run, bucket_ns := NULL) AS TABLE
    SELECT * FROM run_metrics
    WHERE run = which_run
      AND (bucket_ns IS NULL OR error('run_stats(run) takes no interval any more: Sharpe and Sortino are on '
                                      || 'daily returns (see run_metrics); got ' || bucket_ns::VARCHAR))""",
]
"""Installed after the metric views they read (`fills`, `marks`, `run_bounds`)."""
