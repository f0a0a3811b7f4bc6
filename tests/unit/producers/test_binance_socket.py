"""The live Binance recorder over real sockets: python-binance's websocket manager and REST client,
unchanged, against a local Binance (tests/.../binance_venue_server.py) that cuts the connection.

What is not Binance here: the endpoints (python-binance's base URLs point at 127.0.0.1). From
`record_live` through python-binance's reconnecting websocket, its REST calls, our depth sync and
trade-id checks to the tape, everything runs as it does against Binance.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from binance.base_client import BaseClient
from binance.ws.streams import BinanceSocketManager
from binance_venue_server import LocalBinance

from producers.binance.book import OrderBook
from producers.binance.parsers import TOPIC_AGGTRADE, TOPIC_BOOK
from producers.binance.recorder import RecorderStats, record_live
from ticktape.events import BookDelta, BookSnapshot, FeedGap, Trade
from ticktape.tape.file import FileTape


def test_recorder_resyncs_the_book_and_refills_trades_after_the_socket_is_cut(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venue = LocalBinance("BTCUSDT", cuts=[(90, 30)], final=90)
    monkeypatch.setattr(BaseClient, "API_URL", venue.rest_url)
    monkeypatch.setattr(BinanceSocketManager, "STREAM_URL", venue.ws_url)
    tape = FileTape(tmp_path / "tape")
    stop = threading.Event()
    result: list[RecorderStats | BaseException] = []

    def record() -> None:
        try:
            result.append(record_live(tape, ["BTCUSDT"], ["depth", "aggTrade"], keys=None,
                                      stop=stop))
        except BaseException as exc:  # reported below
            result.append(exc)

    recorder = threading.Thread(target=record, name="recorder")
    recorder.start()
    reader = FileTape(tmp_path / "tape")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not result:
        if venue.all_sent.is_set() and TOPIC_AGGTRADE in reader.topic_names():
            trades = [r.event for r in reader.read(TOPIC_AGGTRADE) if isinstance(r.event, Trade)]
            book_ids = [r.event.last_update_id for r in reader.read(TOPIC_BOOK) if isinstance(r.event, BookDelta)]
            if len(trades) >= len(venue.trades) and book_ids and book_ids[-1] == venue.update_id:
                break
        time.sleep(0.1)
    stop.set()
    recorder.join(timeout=60)
    venue.close()
    assert not recorder.is_alive() and result and isinstance(result[0], RecorderStats), result
    stats = result[0]

    assert venue.connections == 2, "python-binance reconnected once"
    assert all("btcusdt@depth@100ms" in p and "btcusdt@aggTrade" in p for p in venue.ws_paths)
    reader = FileTape(tmp_path / "tape")

    # Every aggregate trade once, in id order: the 10 lost while away were fetched over REST.
    agg = [r.event for r in reader.read(TOPIC_AGGTRADE)]
    trades = [e for e in agg if isinstance(e, Trade)]
    assert [int(t.trade_id) for t in trades] == [int(row["a"]) for row in venue.trades]
    (trade_gap,) = [e for e in agg if isinstance(e, FeedGap)]
    assert trade_gap.repaired and trade_gap.expected is not None and trade_gap.received is not None
    assert trade_gap.received - trade_gap.expected == 10  # a third of the 30 missed messages were trades
    assert "/api/v3/aggTrades" in venue.rest_paths

    # The book rebuilt from the tape is the venue's book: a fresh snapshot bridged the lost updates.
    book_events = [r.event for r in reader.read(TOPIC_BOOK)]
    last_id, bids, asks = venue.book()
    book = OrderBook.rebuilt("BTCUSDT", book_events)
    assert (book.last_id, book.bids, book.asks) == (last_id, bids, asks)
    assert sum(isinstance(e, BookSnapshot) for e in book_events) == 2  # at the start, after the cut
    gaps = [(g.stream, g.repaired) for g in book_events if isinstance(g, FeedGap)]
    assert gaps == [("connection", False), ("depth", False), ("depth", True)]  # one cut, one resync
    assert (stats.snapshots, stats.gaps, stats.dead_letters) == (2, 2, 0)
