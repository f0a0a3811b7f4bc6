"""History through Binance's REST API (python-binance `Client`), paged so memory stays flat.

`get_historical_klines` pages the same `GET /api/v3/klines` endpoint but returns the whole
range as one list; paging here streams each page to the tape instead. Aggregate trades are
found by time (a window of at most one hour, the API's limit) and then paged by id
(`fromId`), as python-binance's `aggregate_trade_iter` does.

The client only needs `get_klines(**params)` and `get_aggregate_trades(**params)`; tests
pass an object that returns recorded pages, which tests this paging, not Binance's parser.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from producers.binance.parsers import TOPIC_AGGTRADE, TOPIC_BAR, VENUE, parse_agg_trade, to_ns
from producers.common import ImportRun
from ticktape.codec import finite
from ticktape.errors import TicktapeError
from ticktape.events import Bar

PAGE = 1000
HOUR_MS = 3_600_000


class HistoryClient(Protocol):
    """The two python-binance `Client` methods used here."""

    def get_klines(self, **params: Any) -> list[list[Any]]: ...

    def get_aggregate_trades(self, **params: Any) -> list[dict[str, Any]]: ...


def kline_pages(client: HistoryClient, symbol: str, interval: str, start_ms: int, end_ms: int,
                limit: int = PAGE) -> Iterator[list[list[Any]]]:
    """Pages of kline rows opening in [start_ms, end_ms), in time order, no row twice."""
    cursor = start_ms
    while cursor < end_ms:
        page = client.get_klines(symbol=symbol, interval=interval, startTime=cursor, endTime=end_ms - 1, limit=limit)
        if not page:
            return
        yield page
        nxt = int(page[-1][6]) + 1  # close time + 1 ms = the next kline's open
        if nxt <= cursor:
            raise RuntimeError(f"klines paging made no progress at {cursor} (last close {page[-1][6]})")
        cursor = nxt
        if len(page) < limit:
            return


def agg_trade_pages(client: HistoryClient, symbol: str, start_ms: int, end_ms: int,
                    limit: int = PAGE) -> Iterator[list[dict[str, Any]]]:
    """Pages of aggregate trades with start_ms <= T < end_ms, by id, no trade twice."""
    window = start_ms
    first: list[dict[str, Any]] = []
    while window < end_ms and not first:  # the first trade: search hour windows (the API's maximum span)
        first = client.get_aggregate_trades(symbol=symbol, startTime=window,
                                            endTime=min(window + HOUR_MS, end_ms) - 1)
        window += HOUR_MS
    page, by_id = first, False
    while page:
        keep = [t for t in page if int(t["T"]) < end_ms]
        if keep:
            yield keep
        if len(keep) < len(page) or (by_id and len(page) < limit):
            return  # past the end of the range, or no newer trades exist yet
        page = client.get_aggregate_trades(symbol=symbol, fromId=int(page[-1]["a"]) + 1, limit=limit)
        by_id = True


def kline_row_bar(row: Sequence[Any], symbol: str, interval: str) -> Bar:
    """A REST kline row (the same 12 fields as the data files) -> Bar at its close boundary."""
    close = to_ns(row[6]) + (to_ns(1) if int(row[6]) < 100_000_000_000_000 else 1_000)
    o, h, lo, c, v = (finite(float(row[i])) for i in (1, 2, 3, 4, 5))
    if h < lo:
        raise ValueError(f"high {h} below low {lo}")
    # quote volume, number of trades, taker buy base and quote volume: the files' columns 7-10
    q, taker_base, taker_quote = (finite(float(row[i])) if len(row) > i and row[i] is not None else None
                                  for i in (7, 9, 10))
    count = int(row[8]) if len(row) > 8 and row[8] is not None else None
    return Bar(venue=VENUE, instrument=symbol, ts_event=close, ts_recv=close, interval=interval, open=o, high=h,
               low=lo, close=c, volume=v, quote_volume=q, trades=count, taker_buy_base_volume=taker_base,
               taker_buy_quote_volume=taker_quote)


def import_klines(run: ImportRun, client: HistoryClient, symbol: str, interval: str, start_ms: int,
                  end_ms: int) -> int:
    """Klines of [start, end) into `run`; bars not yet closed at `end` are left out."""
    n = 0
    for p, page in enumerate(kline_pages(client, symbol, interval, start_ms, end_ms), 1):
        for i, row in enumerate(page, 1):
            try:
                if int(row[6]) + 1 > end_ms:
                    continue  # still open at the end of the range
                bar = kline_row_bar(row, symbol, interval)
            except (ValueError, TypeError, IndexError) as exc:
                run.dead_letter(f"page {p} row {i}", f"kline row: {exc}", json.dumps(row, default=str))
                continue
            run.emit(TOPIC_BAR, bar)
            n += 1
    return n


def import_agg_trades(run: ImportRun, client: HistoryClient, symbol: str, start_ms: int, end_ms: int) -> int:
    """Aggregate trades of [start, end) into `run` (topic md.binance.aggtrade, like the files)."""
    n = 0
    for p, page in enumerate(agg_trade_pages(client, symbol, start_ms, end_ms), 1):
        for i, t in enumerate(page, 1):
            try:
                [(_, ev)] = parse_agg_trade({**t, "s": symbol}, 0)
            except (ValueError, TicktapeError) as exc:
                run.dead_letter(f"page {p} row {i}", str(exc), json.dumps(t, default=str))
                continue
            run.emit(TOPIC_AGGTRADE, ev._replace(ts_recv=ev.ts_event))
            n += 1
    return n
