"""The crypto venue on Binance payloads (documented formats) parsed by the live path's own parsers."""

from __future__ import annotations

import json

from producers.binance.parsers import parse_depth_snapshot, parse_payload
from robots.sim.crypto import CryptoVenue, CryptoVenueConfig
from ticktape.events import Event, OrderFilled, PlaceOrder

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z in ms, as Binance sends times
RECV = T0 * 1_000_000 + 5_000_000

# GET /api/v3/depth?symbol=BTCUSDT&limit=5 (spot: no time; the recorder stamps ts_recv)
SNAPSHOT = {"lastUpdateId": 1000,
            "bids": [["42000.00", "0.50000000"], ["41999.50", "1.20000000"]],
            "asks": [["42000.10", "0.30000000"], ["42000.50", "0.70000000"], ["42001.00", "2.00000000"]]}
DEPTH_UPDATE = {"e": "depthUpdate", "E": T0 + 10, "s": "BTCUSDT", "U": 1001, "u": 1003,
                "b": [["42000.00", "0.80000000"]], "a": [["42000.10", "0.00000000"], ["42000.20", "0.40000000"]]}
TRADE_AT_BID = {"e": "trade", "E": T0 + 20, "s": "BTCUSDT", "t": 5001, "p": "42000.00", "q": "0.60000000",
                "T": T0 + 20, "m": True, "M": True}  # buyer is maker: a seller hit the bid
TRADE_THROUGH = {"e": "trade", "E": T0 + 30, "s": "BTCUSDT", "t": 5002, "p": "41999.90", "q": "0.05000000",
                 "T": T0 + 30, "m": True, "M": True}


def events(payload: dict[str, object]) -> list[Event]:
    return [ev for _, ev in parse_payload(json.dumps(payload), RECV)]


def order(cid: str, side: str, size: float, price: float = 0.0, order_type: str = "MARKET", ts: int = 0) -> PlaceOrder:
    return PlaceOrder("r1", cid, "binance", "BTCUSDT", ts, ts, side, order_type, price, size, "GTC")  # type: ignore[arg-type]


def test_binance_book_and_trades_drive_taker_and_maker_fills() -> None:
    venue = CryptoVenue(CryptoVenueConfig(maker_fee="0.0002", taker_fee="0.0004"))
    assert venue.on_market(parse_depth_snapshot(SNAPSHOT, RECV, "BTCUSDT")) == ()
    # join the bid at 42000.00 behind the 0.5 displayed
    venue.on_intent(order("bid", "BUY", 0.4, 42000.0, "LIMIT"), RECV)
    (delta,) = events(DEPTH_UPDATE)
    assert venue.on_market(delta) == ()  # 0.5 -> 0.8 at our level: newcomers behind us, still 0.5 ahead
    # market buy of 0.5 after the update: the 42000.10 ask is gone; 0.4 @ 42000.20, 0.1 @ 42000.50
    out = venue.on_intent(order("mkt", "BUY", 0.5), delta.ts_event)
    taker = [(f.price, f.size, f.fee) for f in out if isinstance(f, OrderFilled)]
    # fees at 0.04%: 0.4 x 42000.2 x 0.0004 = 6.720032, 0.1 x 42000.5 x 0.0004 = 1.68002
    assert taker == [(42000.2, 0.4, 6.720032), (42000.5, 0.1, 1.68002)]
    # a seller hits the bid for 0.6: 0.5 ahead of us, 0.1 to us
    (t1,) = events(TRADE_AT_BID)
    out = venue.on_market(t1)
    maker = [(f.price, f.size, f.fee, f.liquidity, f.leaves_size) for f in out if isinstance(f, OrderFilled)]
    assert maker == [(42000.0, 0.1, 0.84, "MAKER", 0.3)]  # 0.1 x 42000 x 0.0002
    assert out[0].ts_event == (T0 + 20) * 1_000_000
    # a print below our price: the level was emptied, the rest fills from its 0.05
    (t2,) = events(TRADE_THROUGH)
    out = venue.on_market(t2)
    maker = [(f.price, f.size, f.fee, f.leaves_size) for f in out if isinstance(f, OrderFilled)]
    assert maker == [(42000.0, 0.05, 0.42, 0.25)]
    assert [o.client_order_id for o in venue.open_orders()] == ["bid"]
