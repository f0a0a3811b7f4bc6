"""Futures user data (ORDER_TRADE_UPDATE, ACCOUNT_UPDATE), ticktape's venue client ids, and the exchange-filters
control: the pure halves of the Binance trading adapter, on Binance's documented payloads."""

from __future__ import annotations

from typing import Any

import pytest

from producers.binance.parsers import (
    BinanceParseError,
    original_client_order_id,
    parse_payload,
    replace_cancel_id,
    venue_client_id,
)
from producers.binance.reports import stream_reports
from producers.binance.rules import check, rules_from_exchange_info
from robots.live.exchange import AccountReport, OrderReport
from ticktape.codec import default_codec
from ticktape.events import Balance, OrderAccepted, OrderCancelled, OrderFilled, PlaceOrder, PositionSnapshot

RECV = 1_700_000_100_000_000_000
MS = 1_000_000


def otu(**o: Any) -> dict[str, Any]:
    """An ORDER_TRADE_UPDATE as the futures user-data stream documents it."""
    base = {"s": "BTCUSDT", "c": "abcdefgh-1f-0", "S": "SELL", "o": "LIMIT", "f": "GTC", "q": "0.010", "p": "37000",
            "ap": "0", "sp": "0", "x": "NEW", "X": "NEW", "i": 8886774, "l": "0", "z": "0", "L": "0", "N": "USDT",
            "n": "0", "T": 1700000000500, "t": 0, "b": "0", "a": "370", "m": False, "R": False, "ps": "BOTH",
            "rp": "0"}
    return {"e": "ORDER_TRADE_UPDATE", "E": 1700000000501, "T": 1700000000500, "o": {**base, **o}}


def test_order_trade_update_becomes_the_same_events_as_spot() -> None:
    [(topic, new)] = parse_payload(otu(), RECV)
    assert topic == "orders.event"
    assert new == OrderAccepted("", "abcdefgh-1f-0", "8886774", "binance", "BTCUSDT", 1700000000500 * MS, RECV)
    [(_, fill)] = parse_payload(otu(x="TRADE", X="PARTIALLY_FILLED", l="0.004", z="0.004", L="37000.5", n="0.0296",
                                    t=777, m=True), RECV)
    assert fill == OrderFilled("", "abcdefgh-1f-0", "8886774", "binance", "BTCUSDT", 1700000000500 * MS, RECV,
                               "777", "SELL", 37000.5, 0.004, 0.0296, "MAKER", 0.006)
    [(_, gone)] = parse_payload(otu(x="CANCELED", X="CANCELED"), RECV)
    assert isinstance(gone, OrderCancelled) and gone.client_order_id == "abcdefgh-1f-0"
    [(_, amended)] = parse_payload(otu(x="AMENDMENT", c="abcdefgh-1f-0"), RECV)
    assert isinstance(amended, OrderAccepted)
    for _, ev in parse_payload(otu(x="TRADE", X="FILLED", l="0.01", z="0.01", L="1", t=1), RECV):
        assert default_codec().decode(default_codec().encode(ev)) == ev  # the codec takes them as they are


def test_account_update_becomes_balances_and_positions() -> None:
    msg = {"e": "ACCOUNT_UPDATE", "E": 1700000000601, "T": 1700000000600, "a": {
        "m": "ORDER", "B": [{"a": "USDT", "wb": "1000.5", "cw": "1000.5", "bc": "0"}],
        "P": [{"s": "BTCUSDT", "pa": "-0.010", "ep": "37000.0", "cr": "1.5", "up": "-0.2", "mt": "cross", "iw": "0",
               "ps": "BOTH"}]}}
    out = parse_payload(msg, RECV, account="futures")
    assert out == [
        ("account.balance", Balance("binance", "futures", "USDT", 1700000000600 * MS, RECV, 1000.5, 0.0)),
        ("account.position", PositionSnapshot("futures", "binance", "BTCUSDT", 1700000000600 * MS, RECV, -0.01,
                                              37000.0, 1.5, -0.2)),
    ]
    [acct] = stream_reports(msg)
    assert acct == AccountReport(ts_event=1700000000600 * MS, positions={"BTCUSDT": -0.01},
                                 balances={"USDT": 1000.5}, source="stream")


def test_bad_futures_payloads_name_the_field() -> None:
    with pytest.raises(BinanceParseError, match="x='WHATEVER'"):
        parse_payload(otu(x="WHATEVER"), RECV)
    with pytest.raises(BinanceParseError, match="'o'"):
        parse_payload({"e": "ORDER_TRADE_UPDATE", "E": 1}, RECV)
    with pytest.raises(BinanceParseError, match=r"a.P\[0\]"):
        parse_payload({"e": "ACCOUNT_UPDATE", "T": 1, "a": {"P": [{"s": "BTCUSDT"}]}}, RECV)


def test_replacement_ids_map_back_to_the_intent_and_the_replace_cancel_is_no_event() -> None:
    assert venue_client_id("abcdefgh-1f-0", 0) == "abcdefgh-1f-0"
    assert venue_client_id("abcdefgh-1f-0", 3) == "abcdefgh-1f-0.3"
    assert original_client_order_id("abcdefgh-1f-0.3") == "abcdefgh-1f-0"
    assert original_client_order_id("web.order.1") == "web.order.1"  # not ours: kept as it is
    spot_cancel = {"e": "executionReport", "E": 1, "T": 1, "s": "BTCUSDT", "c": replace_cancel_id("abcdefgh-1f-0", 2),
                   "C": "abcdefgh-1f-0.1", "S": "BUY", "x": "CANCELED", "X": "CANCELED", "i": 5, "r": "NONE"}
    assert parse_payload(spot_cancel, RECV) == [] and stream_reports(spot_cancel) == []
    plain_cancel = {**spot_cancel, "c": "web-cancel-9"}
    [(_, ev)] = parse_payload(plain_cancel, RECV)
    assert isinstance(ev, OrderCancelled) and ev.client_order_id == "abcdefgh-1f-0"
    [rep] = stream_reports(plain_cancel)
    assert isinstance(rep, OrderReport) and rep.client_order_id == "abcdefgh-1f-0" and rep.status == "cancelled"


def test_stream_report_of_a_spot_fill_via_the_websocket_api_wrapper() -> None:
    er = {"e": "executionReport", "E": 2, "T": 1700000000123, "s": "BTCUSDT", "c": "abcdefgh-2-0.1", "S": "BUY",
          "x": "TRADE", "X": "FILLED", "i": 42, "l": "0.5", "z": "0.5", "L": "100.1", "n": "0.05", "t": 9, "m": False,
          "q": "0.5", "r": "NONE"}
    [rep] = stream_reports({"subscriptionId": 0, "event": er})
    assert isinstance(rep, OrderReport)
    assert (rep.client_order_id, rep.venue_order_id, rep.status, rep.side) == ("abcdefgh-2-0", "42", "filled", "BUY")
    assert [(f.fill_id, f.price, f.size, f.fee, f.liquidity) for f in rep.fills] == [("9", 100.1, 0.5, 0.05, "TAKER")]


# ------------------------------------------------------------------ the exchange-filters control

INFO = {"rateLimits": [{"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 50}],
        "symbols": [{"symbol": "ETHUSDT", "status": "TRADING", "baseAsset": "ETH", "quoteAsset": "USDT", "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.10", "maxPrice": "100000", "tickSize": "0.10"},
            {"filterType": "LOT_SIZE", "minQty": "0.0001", "maxQty": "9000", "stepSize": "0.0001"},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.001", "maxQty": "100", "stepSize": "0.001"},
            {"filterType": "NOTIONAL", "minNotional": "5", "applyMinToMarket": True, "maxNotional": "9000000",
             "applyMaxToMarket": False},
            {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5"}]},
                    {"symbol": "OLDUSDT", "status": "BREAK", "filters": []}]}
RULES = rules_from_exchange_info(INFO, "spot")


def intent(price: float, size: float, type_: str = "LIMIT", symbol: str = "ETHUSDT") -> PlaceOrder:
    return PlaceOrder("r", "abcdefgh-1-0", "binance", symbol, 0, 0, "BUY", type_, price, size, "GTC")  # type: ignore[arg-type]


def test_rules_keep_the_filters_and_limits_as_json() -> None:
    assert set(RULES["symbols"]["ETHUSDT"]["filters"]) == {"PRICE_FILTER", "LOT_SIZE", "MARKET_LOT_SIZE", "NOTIONAL"}
    assert RULES["rate_limits"] == [{"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 50}]


@pytest.mark.parametrize(("order", "refused"), [
    (intent(2000.3, 0.01), None),  # 2000.3 is 0.1 + a multiple of 0.1 in decimal (not in binary floats)
    (intent(0.3, 100.0), None),
    (intent(2000.35, 0.01), "PRICE_FILTER: price 2000.35 is not 0.10 plus a multiple of tickSize 0.10"),
    (intent(0.05, 200.0), "PRICE_FILTER: price 0.05 below minPrice 0.10"),
    (intent(2000.0, 0.00015), "LOT_SIZE: quantity 0.00015 is not 0.0001 plus a multiple of stepSize 0.0001"),
    (intent(2000.0, 0.0001), "NOTIONAL: notional 2000.0 x 0.0001 = 0.20000 below minNotional 5"),
    (intent(0.0, 0.0005, "MARKET"), "MARKET_LOT_SIZE: quantity 0.0005 below minQty 0.001"),
    (intent(0.0, 0.002, "MARKET"), None),  # no reference price: the venue checks a market order's notional
    (intent(1.0, 1.0, symbol="XYZUSDT"), "symbol: XYZUSDT is not listed in exchangeInfo"),
    (intent(1.0, 1.0, symbol="OLDUSDT"), "symbol: OLDUSDT is BREAK, not TRADING"),
    (intent(1.0, 1.0, "STOP_MARKET"), "order type: STOP_MARKET is not supported on Binance by ticktape"),
])
def test_check_names_the_filter_and_the_numbers(order: PlaceOrder, refused: str | None) -> None:
    got = check(RULES, order)
    if refused is None:
        assert got is None
    else:
        assert got is not None and got.control == "exchange_filters" and got.reason.startswith(refused)
