"""The Betfair order stream (`producers.betfair.orders`) on the recorded order-stream messages.

The files in `../shared/data/betfair`: `ORDER-1.177596575` (a bet placed then cancelled, whose
second line carries other customer refs; a second bet still executable when the stream closes
the market), `streaming_ocm_FULL_IMAGE.json` and `streaming_ocm_NEW_FULL_IMAGE.json` (full images
with matched-by-price ladders; one bet id on two runners) and `streaming_ocm_UPDATE.json` (a lay).
Where a case is not in them (a void after completion, fills at two prices) a recorded message is
changed by hand, and the test says how.
"""

from __future__ import annotations

import json
from typing import Any

import betfairlightweight
import pytest
from betfair_helpers import SHARED

from producers.betfair.orders import OrderCache
from producers.betfair.parse import ORDERS_TOPIC, StreamDecoder
from ticktape.events import Event, OrderAccepted, OrderCancelled, OrderFilled

pytestmark = pytest.mark.shared_data("betfair/ORDER-1.177596575")
MS = 1_000_000


def decode(lines: list[bytes]) -> list[Event]:
    dec = StreamDecoder()
    return [e for line in lines for t, e in dec.decode_line(line) if t == ORDERS_TOPIC]  # type: ignore[misc]


def lines(name: str) -> list[bytes]:
    return [line for line in (SHARED / name).read_bytes().splitlines() if line.strip()]


def test_placed_cancelled_and_lapsed_when_the_stream_closes_the_market() -> None:
    acc1, cancel1, acc2, lapse2 = decode(lines("ORDER-1.177596575"))
    assert isinstance(acc1, OrderAccepted) and isinstance(acc2, OrderAccepted)
    assert (acc1.instrument, acc1.venue_order_id, acc1.side, acc1.price, acc1.size, acc1.persistence) == (
        "1.177596575:38077860", "221073337451", "BUY", 34.0, 0.8, "LAPSE")
    assert (acc2.instrument, acc2.price, acc2.size) == ("1.177596575:37711602", 15.5, 0.8)
    # The second line of bet 221073337451 carries rfo/rfs other than the first: the bet keeps the first.
    assert isinstance(cancel1, OrderCancelled) and cancel1.reason == "cancelled 0.8"
    assert (cancel1.robot, cancel1.client_order_id) == (acc1.robot, acc1.client_order_id) == (
        "c5rytry8c2", "34rtr9df-13845490")
    # The last line closes the market with 221073362321 still executable: it lapsed at the close.
    assert isinstance(lapse2, OrderCancelled) and lapse2.venue_order_id == "221073362321"
    assert lapse2.ts_event == 1609915952074 * MS
    assert lapse2.reason == "lapsed 0.8 at market close (the stream closed the market, no final state)"


def test_a_change_after_the_close_is_not_a_new_order() -> None:
    recorded = lines("ORDER-1.177596575")
    events = decode([*recorded, recorded[2]])  # the second bet's line again, after the close
    assert [type(e).__name__ for e in events] == ["OrderAccepted", "OrderCancelled"] * 2


def _betfairlightweight_orders(name: str) -> list[dict[str, Any]]:
    """betfairlightweight's current orders after the file (lightweight: plain dicts)."""
    listener = betfairlightweight.StreamListener(max_latency=None, lightweight=True)
    listener.register_stream(0, "orderSubscription")
    for line in lines(name):
        listener.on_data(line.decode())
    return [o for cache in listener.stream._caches.values() for o in cache.create_resource(0)["currentOrders"]]


@pytest.mark.parametrize("name", ["streaming_ocm_FULL_IMAGE.json", "streaming_ocm_UPDATE.json"])
def test_orders_are_keyed_by_runner_and_bet_id_as_betfairlightweight_keeps_them(name: str) -> None:
    events = decode(lines(name))
    ours = sorted((e.instrument, e.venue_order_id, e.side, e.price, e.size, e.persistence)
                  for e in events if isinstance(e, OrderAccepted))
    theirs = sorted((f"{o['marketId']}:{o['selectionId']}" + (f":{o['handicap']:g}" if o["handicap"] else ""),
                     o["betId"], {"BACK": "BUY", "LAY": "SELL"}[o["side"]], o["priceSize"]["price"],
                     o["priceSize"]["size"], o["persistenceType"]) for o in _betfairlightweight_orders(name))
    assert ours == theirs
    matched = {(e.instrument, e.venue_order_id): e.size for e in events if isinstance(e, OrderFilled)}
    assert matched == {(f"{o['marketId']}:{o['selectionId']}" + (f":{o['handicap']:g}" if o["handicap"] else ""),
                        o["betId"]): o["sizeMatched"] for o in _betfairlightweight_orders(name) if o["sizeMatched"]}


def test_the_same_bet_id_on_two_runners_is_two_orders() -> None:
    events = decode(lines("streaming_ocm_FULL_IMAGE.json"))
    twice = [e for e in events if e.venue_order_id == "175706685828"]  # type: ignore[union-attr]
    assert [(type(e).__name__, e.instrument) for e in twice] == [  # type: ignore[union-attr]
        ("OrderAccepted", "1.161613698:7017905:5.5"), ("OrderFilled", "1.161613698:7017905:5.5"),
        ("OrderAccepted", "1.161613698:1017905"), ("OrderFilled", "1.161613698:1017905")]
    # Each fill is the runner's matched-backs ladder ([[2, 2]]): 2 at 2.0.
    assert {(e.price, e.size) for e in events if isinstance(e, OrderFilled)} == {(2.0, 2.0)}


def _changed(line: bytes, **uo: Any) -> bytes:
    """The recorded message with its (first) order's fields replaced."""
    msg = json.loads(line)
    msg["oc"][0]["orc"][0]["uo"][0].update(uo)
    return json.dumps(msg).encode()


def test_a_void_after_completion_becomes_an_event() -> None:
    # streaming_ocm_UPDATE.json's lay, completed (matched 2), then voided: the same message with
    # status EC / sm 2, then with sv 2 / sm 0, as Betfair reports a void of matched stakes.
    recorded = lines("streaming_ocm_UPDATE.json")[0]
    done = _changed(recorded, status="EC", sm=2, sr=0, avp=1.02)
    voided = _changed(recorded, status="EC", sm=0, sr=0, sv=2, avp=1.02)
    events = decode([recorded, done, voided, voided])  # the void sent twice: one event
    assert [type(e).__name__ for e in events] == ["OrderAccepted", "OrderFilled", "OrderCancelled"]
    assert events[-1].reason == "voided 2 after completion (matched 2 -> 0)"  # type: ignore[union-attr]
    lapsed = decode([recorded, _changed(recorded, status="EC", sm=0, sr=0, sc=1.5, sl=0),
                     _changed(recorded, status="EC", sm=0, sr=0, sc=1.5, sl=0.5)])
    assert [e.reason for e in lapsed if isinstance(e, OrderCancelled)] == [
        "cancelled 1.5", "lapsed 0.5 after completion"]


def test_fill_prices_come_from_the_matched_by_price_ladder() -> None:
    # ORDER-1.177596575's first bet as a back at 2.8 for 10: 2 match at 3.0, then 5 at 2.88; Betfair's
    # avp is rounded (2.91 for 20.4 / 7), so the old avp arithmetic priced the 5 at 2.874, off the ladder.
    first = lines("ORDER-1.177596575")[0]
    placed = _changed(first, p=2.8, s=10, sr=10)
    one = json.loads(_changed(first, p=2.8, s=10, sm=2, sr=8, avp=3.0))
    one["oc"][0]["orc"][0]["mb"] = [[3.0, 2]]
    two = json.loads(_changed(first, p=2.8, s=10, sm=7, sr=3, avp=2.91))
    two["oc"][0]["orc"][0]["mb"] = [[2.88, 5]]
    fills = [e for e in decode([placed, json.dumps(one).encode(), json.dumps(two).encode()])
             if isinstance(e, OrderFilled)]
    assert [(f.price, f.size, f.leaves_size, f.liquidity) for f in fills] == [
        (3.0, 2.0, 8.0, "MAKER"), (2.88, 5.0, 3.0, "MAKER")]
    # Without ladders, an avp that is not a whole cent gives the order's own price, never 2.874.
    no_ladder = decode([placed, _changed(first, p=2.8, s=10, sm=2, sr=8, avp=3.0),
                        _changed(first, p=2.8, s=10, sm=7, sr=3, avp=2.91)])
    assert [e.price for e in no_ladder if isinstance(e, OrderFilled)] == [3.0, 2.8]


def test_one_changes_matching_is_split_over_its_orders_by_limit_price() -> None:
    cache = OrderCache()

    def uo(bet: str, p: float, sm: float) -> dict[str, Any]:
        return {"id": bet, "p": p, "s": 5, "side": "B", "status": "E", "pt": "P", "ot": "L", "sm": sm, "sr": 5 - sm,
                "sl": 0, "sc": 0, "sv": 0, "rfo": bet, "rfs": "r"}

    cache.apply({"id": "1.5", "orc": [{"id": 9, "uo": [uo("lo", 2.0, 0), uo("hi", 3.0, 0)]}]}, 1, 1)
    # 5 matched at 3.0 and 5 at 2.5: the back at 3.0 can only have had the 3.0.
    out = cache.apply({"id": "1.5", "orc": [{"id": 9, "mb": [[2.5, 5], [3.0, 5]],
                                             "uo": [uo("lo", 2.0, 5), uo("hi", 3.0, 5)]}]}, 2, 2)
    assert sorted((e.client_order_id, e.price, e.size) for e in out if isinstance(e, OrderFilled)) == [
        ("hi", 3.0, 5.0), ("lo", 2.5, 5.0)]
    [acc] = [e for e in cache.apply({"id": "1.5", "orc": [{"id": 9, "uo": [uo("new", 2.0, 0)]}]}, 3, 3)]
    assert isinstance(acc, OrderAccepted) and acc.persistence == "PERSIST"
