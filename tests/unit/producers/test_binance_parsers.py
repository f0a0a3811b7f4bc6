"""Binance websocket payloads (documented formats, tests/fixtures/binance) -> ticktape events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from producers.binance.parsers import BinanceParseError, parse_payload, to_ns
from ticktape.codec import default_codec
from ticktape.events import (
    Balance,
    Bar,
    BookDelta,
    CustomData,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PriceSize,
    Quote,
    Trade,
)

FIX = Path(__file__).parents[2] / "fixtures" / "binance"
RECV = 1_700_000_100_000_000_000
MS = 1_000_000


def _messages(name: str) -> list[str]:
    return (FIX / name).read_text().splitlines()


def test_every_documented_payload_kind_parses_into_the_right_event() -> None:
    out = [pe for line in _messages("ws_messages.jsonl") for pe in parse_payload(line, RECV)]
    assert out[0] == ("md.binance.trade", Trade("binance", "BTCUSDT", 1700000000120 * MS, RECV, 37012.34, 0.012,
                                                  "SELL", "3245678901", is_best_match=True))
    assert out[1] == ("md.binance.aggtrade", Trade("binance", "BTCUSDT", 1700000000121 * MS, RECV, 37012.35, 0.5,
                                                     "BUY", "2876543210", first_trade_id=3245678902,
                                                     last_trade_id=3245678905, is_best_match=True))
    # Spot bookTicker carries no venue time: ts_event is the receive time.
    assert out[2] == ("md.binance.quote", Quote("binance", "BTCUSDT", RECV, RECV, 37012.34, 1.234, 37012.35, 0.567))
    assert out[3] == ("md.binance.book", BookDelta("binance", "BTCUSDT", 1700000000200 * MS, RECV, 1001, 1003,
                                                    (PriceSize(37012.34, 1.5), PriceSize(37011.0, 0.0)),
                                                    (PriceSize(37012.35, 0.4),)))
    # The closed kline becomes a bar stamped at its close boundary; the open one is not a bar.
    assert out[4] == ("md.binance.bar", Bar("binance", "BTCUSDT", 1700000040000 * MS, RECV, "1m", 37000.0, 37020.0,
                                            36990.5, 37012.34, 12.345, quote_volume=456789.123, trades=101,
                                            taker_buy_base_volume=6.0, taker_buy_quote_volume=222000.0))
    orders = [e for t, e in out if t == "orders.event"]
    assert orders == [
        OrderAccepted("", "rb1-000042", "4293153", "binance", "ETHUSDT", 1700000000999 * MS, RECV),
        OrderFilled("", "rb1-000042", "4293153", "binance", "ETHUSDT", 1700000001998 * MS, RECV, "77001", "BUY",
                    1999.5, 0.5, 0.0005, "MAKER", 1.5),
        OrderCancelled("", "rb1-000042", "4293153", "binance", "ETHUSDT", 1700000002999 * MS, RECV, "NONE"),
        OrderRejected("", "rb1-000043", "-1", "binance", "ETHUSDT", 1700000003999 * MS, RECV, "INSUFFICIENT_BALANCE"),
        OrderExpired("", "rb1-000044", "4293160", "binance", "ETHUSDT", 1700000004999 * MS, RECV, "expired (IOC)"),
    ]
    balances = [e for t, e in out if t == "account.balance"]
    assert balances == [Balance("binance", "spot", "ETH", 1700000001999 * MS, RECV, 10.5, 0.0),
                        Balance("binance", "spot", "USDT", 1700000001999 * MS, RECV, 1000.25, 3000.0)]
    assert len(out) == 5 + 5 + 2
    codec = default_codec()
    for _, ev in out:  # every event is valid for its schema
        assert codec.decode(codec.encode(ev)) == ev


def test_robot_attribution_hook_and_futures_fields() -> None:
    line = _messages("ws_messages.jsonl")[6]
    [(_, ev)] = parse_payload(line, RECV, robot_of=lambda cid: cid.split("-")[0])
    assert isinstance(ev, OrderAccepted) and ev.robot == "rb1"
    # By default the robot comes from ticktape's own client order ids: {robot_id}-{seq}-{k}.
    [(_, ev)] = parse_payload(line.replace('"rb1-000042"', '"ema-cross-17-0"'), RECV)
    assert isinstance(ev, OrderAccepted) and (ev.robot, ev.client_order_id) == ("ema-cross", "ema-cross-17-0")
    futures_depth = {"e": "depthUpdate", "E": 1700000000500, "T": 1700000000498, "s": "BTCUSDT", "U": 7, "u": 9,
                     "pu": 6, "b": [], "a": [["1.5", "2"]]}
    [(_, delta)] = parse_payload(futures_depth, RECV)
    assert isinstance(delta, BookDelta) and delta.ts_event == 1700000000498 * MS
    futures_ticker = {"e": "bookTicker", "u": 1, "E": 1700000000600, "T": 1700000000599, "s": "BTCUSDT",
                      "b": "1", "B": "2", "a": "3", "A": "4"}
    [(_, q)] = parse_payload(futures_ticker, RECV)
    assert q == Quote("binance", "BTCUSDT", 1700000000599 * MS, RECV, 1.0, 2.0, 3.0, 4.0)


def test_an_amended_order_is_accepted_again_and_a_balance_update_is_kept_as_custom_data() -> None:
    new = json.loads(_messages("ws_messages.jsonl")[6])
    inner = new.get("event", new)
    amended = {**inner, "x": "REPLACED", "X": "NEW", "q": "0.25", "E": inner["E"] + 5, "T": inner["T"] + 5}
    [(topic, ev)] = parse_payload(amended, RECV)
    assert topic == "orders.event" and isinstance(ev, OrderAccepted)
    assert (ev.client_order_id, ev.venue_order_id, ev.ts_event) == (inner["c"], str(inner["i"]), (inner["T"] + 5) * MS)
    update = {"e": "balanceUpdate", "E": 1573200697110, "a": "BTC", "d": "100.00000000", "T": 1573200697068}
    [(topic, ev)] = parse_payload(update, RECV)
    assert (topic, ev) == ("account.balance_update", CustomData(
        "binance.balance_update", "BTC", 1573200697068 * MS, RECV, '{"asset":"BTC","delta":"100.00000000"}',
        "application/json"))
    with pytest.raises(BinanceParseError, match="balanceUpdate: field 'd'='lots'"):
        parse_payload({**update, "d": "lots"}, RECV)
    with pytest.raises(BinanceParseError, match="execution type x='PENDING_NEW'"):
        parse_payload({**inner, "x": "PENDING_NEW"}, RECV)


def test_time_units() -> None:
    assert to_ns(1700000000123) == 1700000000123 * MS
    assert to_ns(1700000000123456) == 1700000000123456 * 1000
    assert to_ns(1700000000123456789) == 1700000000123456789
    kline = json.loads(_messages("ws_messages.jsonl")[4])["data"]
    kline["k"]["T"] = 1700000039999999  # microsecond streams: close + 1 µs is the boundary
    [(_, bar)] = parse_payload(kline, RECV)
    assert bar.ts_event == 1700000040000000 * 1000


@pytest.mark.parametrize(("index", "message"), [
    (0, "field 'p'='abc'"),
    (1, "missing field 'p'"),
    (2, "unsupported Binance payload type e='24hrTicker'"),
    (3, "not JSON"),
])
def test_bad_payloads_raise_errors_naming_the_field(index: int, message: str) -> None:
    with pytest.raises(BinanceParseError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_payload(_messages("ws_bad.jsonl")[index], RECV)
