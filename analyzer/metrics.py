"""Trading metrics as DuckDB views and table macros over the loaded event tables.

Money is exact: prices, sizes and fees are cast to DECIMAL(38, 9) (the double's value rounded
to 1e-9, like `robots.positions.to_units`) and every sum and product stays DECIMAL; only
ratios (win rate, Sharpe, averages of prices) are doubles. Grain: run (the `_key` of the
`orders.*` records, which the runner sets to the run id), robot and instrument.

Views (all time columns BIGINT ns):
- `fills`: every fill with signed `qty`, `notional`, `cash_flow` (after fees), `latency_ns`.
- `positions`: after each fill: `position`, `cash`, `fees`, `buy_volume`, `sell_volume`.
- `marks`: mark prices per instrument: trade prices, quote mids, bar closes, Betfair runners' last
  traded price (with the `_topic` and `_offset` they came from).
- `round_trips`: FIFO lot matching (the k-th unit bought closes against the k-th unit sold,
  which is FIFO for longs and shorts alike): qty, entry/exit prices and times, `pnl` (gross).
- `realized_pnl`: cumulative realized (FIFO) PnL per round-trip close.
- `pnl_summary`: per run/robot/instrument: fills, volume, fees, position, realized,
  unrealized (marked to the last trade or quote mid at the run's end, or the last fill if later),
  total = cash + position x mark; for a settled Betfair selection, its settled profit
  (`pnl_basis` says which: mark or settled).
- `trade_stats`: per run/robot/instrument: round trips, win rate, average win and loss,
  average and max holding time.
- `order_latency`: per order: intent -> accepted -> first fill -> last fill (ns).
- `betfair_selection_pnl` / `betfair_market_pnl`: settled profit per selection and per
  market (BUY = back, SELL = lay; result from the last MarketDefinition's runner status: a
  WINNER's back wins stake x (price - 1), a LOSER's back loses the stake, lays the mirror image,
  any other status voids the bet; each bet settled to the cent); the market view takes
  commission, to the cent, on a positive net market profit at the run's venue
  `commission_rate` (from `RunStarted.venue`), else `betfair_commission()` (5%).

Table macros:
- `equity_curve(run, bucket_ns)`: per bucket end: cash, position value at the mark, equity
  (= total PnL), running peak, drawdown.
  For charts only: the run's metrics (drawdown at every fill and mark, daily Sharpe and Sortino)
  are `analyzer.run_metrics` (`equity_points`, `daily_equity`, `run_metrics`, `run_stats(run)`).
"""

from __future__ import annotations

import duckdb

from analyzer.load import ensure_table, upgrade_tables
from analyzer.run_metrics import RUN_METRIC_VIEWS
from ticktape.domain import betfair_instrument_sql

NEEDED_TYPES = ("Trade", "Quote", "Bar", "MarketBook", "OrderFilled", "PlaceOrder", "OrderAccepted", "OrderRejected",
                "MarketDefinition", "MarketSettled", "RunStarted", "RunFinished")
"""Tables the metrics read: created empty when the tape had none, so every view exists."""

D = "DECIMAL(38, 9)"
MAX_CURVE_BUCKETS = 10_000_000
"""`equity_curve` refuses a finer grid (a clear error instead of DuckDB running out of list size)."""
BETFAIR_RUNNER = betfair_instrument_sql("market_id", "r.selection_id", "r.handicap")

_VIEWS = [
    f"""CREATE OR REPLACE VIEW fills AS
    SELECT _key AS run, robot, venue, instrument, ts_event, ts_recv, _offset, client_order_id, fill_id, side,
           liquidity, price::{D} AS price, size::{D} AS size, fee::{D} AS fee,
           CASE side WHEN 'BUY' THEN size::{D} ELSE -size::{D} END AS qty,
           (price::{D} * size::{D})::{D} AS notional,
           (CASE side WHEN 'BUY' THEN -1 ELSE 1 END * price::{D} * size::{D} - fee::{D})::{D} AS cash_flow,
           ts_recv - ts_event AS latency_ns
    FROM order_filled""",
    f"""CREATE OR REPLACE VIEW positions AS
    SELECT *, SUM(qty) OVER w AS position, SUM(cash_flow) OVER w AS cash, SUM(fee) OVER w AS fees,
           SUM(CASE WHEN side = 'BUY' THEN size ELSE 0::{D} END) OVER w AS buy_volume,
           SUM(CASE WHEN side = 'SELL' THEN size ELSE 0::{D} END) OVER w AS sell_volume
    FROM fills
    WINDOW w AS (PARTITION BY run, robot, instrument ORDER BY ts_event, _offset ROWS UNBOUNDED PRECEDING)""",
    f"""CREATE OR REPLACE VIEW marks AS
    SELECT instrument, ts_event, price::{D} AS mark, 'trade' AS source, _offset, _topic FROM trade
    UNION ALL
    SELECT instrument, ts_event, ((bid_price::{D} + ask_price::{D}) / 2)::{D}, 'mid', _offset, _topic FROM quote
    WHERE bid_price > 0 AND ask_price > 0
    UNION ALL  -- a bar's close at its close time, as the backtest's ledger marks it
    SELECT instrument, ts_event, close::{D}, 'bar', _offset, _topic FROM bar
    UNION ALL  -- Betfair: each runner's last traded price, instrument '<market_id>:<selection_id>[:<handicap>]'
    SELECT {BETFAIR_RUNNER}, ts_event, r.last_price_traded::{D}, 'ltp', _offset, _topic
    FROM market_book, UNNEST(runners) AS u(r) WHERE r.last_price_traded IS NOT NULL""",
    f"""CREATE OR REPLACE VIEW round_trips AS
    WITH legs AS (
        SELECT run, robot, instrument, side, ts_event, _offset, price, size,
               SUM(size) OVER (PARTITION BY run, robot, instrument, side ORDER BY ts_event, _offset
                               ROWS UNBOUNDED PRECEDING) AS hi
        FROM fills),
    b AS (SELECT *, hi - size AS lo FROM legs WHERE side = 'BUY'),
    s AS (SELECT *, hi - size AS lo FROM legs WHERE side = 'SELL')
    SELECT b.run, b.robot, b.instrument,
           CASE WHEN b.ts_event < s.ts_event OR (b.ts_event = s.ts_event AND b._offset <= s._offset)
                THEN 'LONG' ELSE 'SHORT' END AS direction,
           (LEAST(b.hi, s.hi) - GREATEST(b.lo, s.lo))::{D} AS qty,
           b.price AS buy_price, s.price AS sell_price,
           LEAST(b.ts_event, s.ts_event) AS open_ts, GREATEST(b.ts_event, s.ts_event) AS close_ts,
           GREATEST(b.ts_event, s.ts_event) - LEAST(b.ts_event, s.ts_event) AS holding_ns,
           ((s.price - b.price) * (LEAST(b.hi, s.hi) - GREATEST(b.lo, s.lo)))::{D} AS pnl
    FROM b JOIN s ON b.run = s.run AND b.robot = s.robot AND b.instrument = s.instrument
                 AND b.lo < s.hi AND s.lo < b.hi""",
    """CREATE OR REPLACE VIEW realized_pnl AS
    SELECT run, robot, instrument, close_ts AS ts_event, pnl,
           SUM(pnl) OVER (PARTITION BY run, robot, instrument ORDER BY close_ts, open_ts
                          ROWS UNBOUNDED PRECEDING) AS realized
    FROM round_trips""",
    """CREATE OR REPLACE VIEW run_bounds AS
    SELECT run, MIN(t0) AS start_ts, MAX(t1) AS end_ts FROM (
        SELECT _key AS run, MIN(ts_event) AS t0, MAX(ts_event) AS t1 FROM order_filled GROUP BY _key
        UNION ALL SELECT _key, MIN(ts_event), MAX(ts_event) FROM place_order GROUP BY _key
        UNION ALL SELECT run_id, MIN(ts_event), MAX(ts_event) FROM run_started GROUP BY run_id
        UNION ALL SELECT run_id, MIN(ts_event), MAX(ts_event) FROM run_finished GROUP BY run_id
        UNION ALL SELECT _key, MIN(ts_event), MAX(ts_event) FROM market_settled GROUP BY _key)
    GROUP BY run""",
    """CREATE OR REPLACE MACRO betfair_commission() AS 0.05""",
    f"""CREATE OR REPLACE VIEW betfair_selection_pnl AS
    WITH result AS (
        SELECT market_id, r.selection_id, coalesce(r.handicap, 0) AS handicap, r.status AS result
        FROM (SELECT * FROM market_definition
              QUALIFY ROW_NUMBER() OVER (PARTITION BY market_id ORDER BY ts_event DESC, _offset DESC) = 1) d,
             UNNEST(d.runners) AS u(r)),
    bets AS (  -- one row per bet (order): Betfair settles each bet to the cent
        SELECT run, robot, client_order_id, split_part(instrument, ':', 1) AS market_id,
               TRY_CAST(split_part(instrument, ':', 2) AS BIGINT) AS selection_id,
               coalesce(TRY_CAST(NULLIF(split_part(instrument, ':', 3), '') AS DOUBLE), 0) AS handicap, side,
               SUM(size) AS size, SUM(price * size) AS price_x_size
        FROM fills WHERE venue = 'betfair' GROUP BY ALL)
    SELECT b.run, b.robot, b.market_id, b.selection_id,
           CASE WHEN r.result IS NULL OR r.result = 'ACTIVE' THEN 'UNSETTLED' ELSE r.result END AS result,
           COUNT(*) AS bets,
           SUM(CASE WHEN b.side = 'BUY' THEN b.size ELSE 0::{D} END) AS back_stake,
           SUM(CASE WHEN b.side = 'SELL' THEN b.size ELSE 0::{D} END) AS lay_stake,
           SUM(CASE r.result
                 WHEN 'WINNER' THEN ROUND(CASE WHEN b.side = 'BUY' THEN 1 ELSE -1 END * (b.price_x_size - b.size), 2)
                 WHEN 'LOSER' THEN CASE WHEN b.side = 'BUY' THEN -b.size ELSE b.size END
                 ELSE 0 END)::{D} AS profit  -- REMOVED (and anything else) voids the bet
    FROM bets b LEFT JOIN result r USING (market_id, selection_id, handicap)
    GROUP BY ALL""",
    f"""CREATE OR REPLACE VIEW pnl_summary AS
    WITH last AS (
        SELECT * FROM positions
        QUALIFY ROW_NUMBER() OVER (PARTITION BY run, robot, instrument ORDER BY ts_event DESC, _offset DESC) = 1),
    agg AS (
        SELECT run, robot, instrument, COUNT(*) AS fills, SUM(size) AS volume, SUM(notional) AS notional,
               SUM(fee) AS fees
        FROM fills GROUP BY ALL),
    rt AS (SELECT run, robot, instrument, SUM(pnl) AS realized FROM round_trips GROUP BY ALL),
    mk AS (  -- the latest price at the run's end: a fill after the last market mark marks at its price, as
             -- the ledger and equity_points do (at one instant the market mark wins, as there)
        SELECT l.run, l.robot, l.instrument,
               CASE WHEN m.ts_event IS NULL OR l.ts_event > m.ts_event THEN l.price ELSE m.mark END AS mark
        FROM (SELECT l.*, rb.end_ts FROM last l JOIN run_bounds rb USING (run)) l
        ASOF LEFT JOIN marks m ON l.instrument = m.instrument AND l.end_ts >= m.ts_event),
    -- Betfair bets are not linear positions: once the market has settled, a selection's PnL is its
    -- settled profit (betfair_selection_pnl); before that it is marked to the last traded price.
    settled AS (SELECT run, robot, market_id || ':' || selection_id AS instrument, profit
                FROM betfair_selection_pnl WHERE result <> 'UNSETTLED'),
    linear AS (
        SELECT a.run, a.robot, a.instrument, a.fills, a.volume, a.notional, a.fees, l.position, mk.mark,
               COALESCE(rt.realized, 0::{D}) AS realized,
               (l.cash + l.position * mk.mark)::{D} AS total_pnl
        FROM agg a JOIN last l USING (run, robot, instrument) JOIN mk USING (run, robot, instrument)
        LEFT JOIN rt USING (run, robot, instrument))
    SELECT x.run, x.robot, x.instrument, x.fills, x.volume, x.notional, x.fees, x.position, x.mark,
           COALESCE(s.profit, x.realized)::{D} AS realized,
           COALESCE(s.profit, x.total_pnl)::{D} AS total_pnl,
           CASE WHEN s.profit IS NULL THEN (x.total_pnl + x.fees - x.realized)::{D} ELSE 0::{D} END AS unrealized,
           CASE WHEN s.profit IS NULL THEN 'mark' ELSE 'settled' END AS pnl_basis
    FROM linear x LEFT JOIN settled s USING (run, robot, instrument)""",
    """CREATE OR REPLACE VIEW trade_stats AS
    SELECT run, robot, instrument, COUNT(*) AS round_trips,
           COUNT(*) FILTER (WHERE pnl > 0) AS wins, COUNT(*) FILTER (WHERE pnl < 0) AS losses,
           COUNT(*) FILTER (WHERE pnl > 0)::DOUBLE / COUNT(*) AS win_rate,
           AVG(pnl) FILTER (WHERE pnl > 0)::DOUBLE AS avg_win, AVG(pnl) FILTER (WHERE pnl < 0)::DOUBLE AS avg_loss,
           SUM(pnl) AS gross_pnl, AVG(holding_ns)::DOUBLE AS avg_holding_ns, MAX(holding_ns) AS max_holding_ns
    FROM round_trips GROUP BY ALL""",
    """CREATE OR REPLACE VIEW order_latency AS
    WITH f AS (SELECT robot, client_order_id, MIN(ts_event) AS first_fill_ts, MAX(ts_event) AS last_fill_ts,
                      COUNT(*) AS fills FROM order_filled GROUP BY ALL),
         a AS (SELECT robot, client_order_id, MIN(ts_event) AS accepted_ts FROM order_accepted GROUP BY ALL),
         r AS (SELECT robot, client_order_id, MIN(ts_event) AS rejected_ts, ANY_VALUE(reason) AS reject_reason
               FROM order_rejected GROUP BY ALL)
    SELECT p._key AS run, p.robot, p.client_order_id, p.instrument, p.side, p.ts_event AS intent_ts,
           a.accepted_ts, r.rejected_ts, r.reject_reason, f.first_fill_ts, f.last_fill_ts, f.fills,
           a.accepted_ts - p.ts_event AS intent_to_accepted_ns, f.first_fill_ts - p.ts_event AS intent_to_fill_ns,
           f.first_fill_ts - a.accepted_ts AS accepted_to_fill_ns
    FROM place_order p LEFT JOIN a USING (robot, client_order_id) LEFT JOIN f USING (robot, client_order_id)
    LEFT JOIN r USING (robot, client_order_id)""",
    f"""CREATE OR REPLACE VIEW betfair_market_pnl AS
    WITH rate AS (
        SELECT run_id AS run, COALESCE(TRY_CAST(json_extract_string(venue, '$.settings.commission_rate')
                                                AS {D}), betfair_commission()::{D}) AS commission_rate
        FROM run_started),
    m AS (SELECT run, robot, market_id, SUM(bets) AS bets, SUM(profit) AS gross_profit,
                 BOOL_AND(result <> 'UNSETTLED') AS settled
          FROM betfair_selection_pnl GROUP BY ALL)
    SELECT m.run, m.robot, m.market_id, m.bets, m.gross_profit,
           COALESCE(rate.commission_rate, betfair_commission()::{D}) AS commission_rate,
           ROUND(GREATEST(m.gross_profit, 0) * COALESCE(rate.commission_rate, betfair_commission()), 2)::{D}
               AS commission,
           (m.gross_profit - ROUND(GREATEST(m.gross_profit, 0)
                                   * COALESCE(rate.commission_rate, betfair_commission()), 2))::{D} AS net_profit,
           m.settled
    FROM m LEFT JOIN rate USING (run)""",
    f"""CREATE OR REPLACE MACRO equity_curve(which_run, bucket_ns) AS TABLE
    WITH rb AS (SELECT * FROM run_bounds WHERE run = which_run),
    grid AS (
        SELECT UNNEST(generate_series((rb.start_ts // bucket_ns) * bucket_ns + bucket_ns,
                                      (rb.end_ts // bucket_ns) * bucket_ns + bucket_ns, bucket_ns)) AS ts_event
        FROM rb
        -- a grid too fine for the run would fail deep inside DuckDB ("Lists larger than 2^32"); say so
        WHERE bucket_ns > 0 AND (rb.end_ts - rb.start_ts) // bucket_ns <= {MAX_CURVE_BUCKETS}
           OR error('equity_curve: ' || ((rb.end_ts - rb.start_ts) // GREATEST(bucket_ns, 1) + 1)::VARCHAR
                    || ' buckets of ' || bucket_ns::VARCHAR || ' ns over the run; use a bucket of at least '
                    || ((rb.end_ts - rb.start_ts) // {MAX_CURVE_BUCKETS} + 1)::VARCHAR
                    || ' ns (or equity_points: every fill and mark)')),
    inst AS (SELECT DISTINCT robot, instrument FROM fills WHERE run = which_run),
    pts AS (SELECT g.ts_event, i.robot, i.instrument FROM grid g CROSS JOIN inst i),
    pos AS (SELECT * FROM positions WHERE run = which_run),
    asof_pos AS (
        SELECT p.ts_event, p.robot, p.instrument, COALESCE(q.position, 0::{D}) AS position,
               COALESCE(q.cash, 0::{D}) AS cash, COALESCE(q.fees, 0::{D}) AS fees, q.price AS fill_price
        FROM pts p ASOF LEFT JOIN pos q ON p.robot = q.robot AND p.instrument = q.instrument
                                      AND p.ts_event >= q.ts_event),
    valued AS (
        SELECT a.*, COALESCE(m.mark, a.fill_price, 0::{D}) AS mark
        FROM asof_pos a ASOF LEFT JOIN marks m ON a.instrument = m.instrument AND a.ts_event >= m.ts_event),
    total AS (
        SELECT ts_event, SUM(cash)::{D} AS cash, SUM(fees)::{D} AS fees,
               SUM(position * mark)::{D} AS position_value, SUM(cash + position * mark)::{D} AS equity
        FROM valued GROUP BY ts_event)
    SELECT ts_event, cash, fees, position_value, equity,
           MAX(equity) OVER (ORDER BY ts_event ROWS UNBOUNDED PRECEDING) AS peak,
           (MAX(equity) OVER (ORDER BY ts_event ROWS UNBOUNDED PRECEDING) - equity)::{D} AS drawdown
    FROM total ORDER BY ts_event""",
]


def install_metrics(con: duckdb.DuckDBPyConnection) -> None:
    """Create (or refresh) every metric view and macro; missing source tables are created empty."""
    upgrade_tables(con)
    for type_name in NEEDED_TYPES:
        ensure_table(con, type_name)
    for sql in _VIEWS + RUN_METRIC_VIEWS:
        con.execute(sql)
