"""A restarted recorder's order stream: the order cache rebuilt from `orders.betfair` (`OrderCache.restore`).

Without raw payloads nothing on the tape holds the order stream's clocks, so a restarted recorder
subscribes afresh; the rebuilt cache makes that safe: orders already recorded are not accepted
again, matched stakes are not filled twice, amounts already cancelled are not cancelled again,
and what changed while the recorder was down still becomes events.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest
from betfair_helpers import FIXTURES, SHARED

from producers.betfair.orders import OrderCache
from producers.betfair.parse import ORDERS_TOPIC, StreamDecoder
from ticktape.events import Event, OrderAccepted, OrderCancelled, OrderFilled

MARKET = "1.400000001"


def _uo(bet: str, *, p: float, s: float, side: str = "B", status: str = "E", sm: float = 0, sc: float = 0,
        sl: float = 0, sv: float = 0, avp: float | None = None) -> dict[str, Any]:
    order: dict[str, Any] = {"id": bet, "p": p, "s": s, "side": side, "status": status, "pt": "L", "ot": "L",
                             "sm": sm, "sr": 0 if status == "EC" else round(s - sm - sc - sl, 2), "sc": sc,
                             "sl": sl, "sv": sv, "rfo": f"ref-{bet}", "rfs": "robot-1"}
    if avp is not None:
        order["avp"] = avp
    return order


def _line(pt: int, orc: list[dict[str, Any]], *, full: bool = False, closed: bool = False) -> bytes:
    oc: dict[str, Any] = {"id": MARKET, "orc": orc}
    if full:
        oc["fullImage"] = True
    if closed:
        oc["closed"] = True
    return json.dumps({"op": "ocm", "id": 1, "clk": str(pt), "pt": 1_700_000_000_000 + pt, "oc": [oc]}).encode()


def synthetic() -> list[bytes]:
    """A back matched in two parts at two prices (ladder), cancelled, then voided after completion; a lay
    on a handicap runner matched in full; a second back left executable, lapsed when the market closes."""
    return [
        _line(1, [{"id": 11, "uo": [_uo("b1", p=2.8, s=10)]}]),
        _line(2, [{"id": 11, "mb": [[3.0, 2]], "uo": [_uo("b1", p=2.8, s=10, sm=2, avp=3.0)]},
                  {"id": 22, "hc": -1.5, "uo": [_uo("l1", p=4.0, s=3, side="L")]}]),
        _line(3, [{"id": 11, "mb": [[2.88, 5]], "uo": [_uo("b1", p=2.8, s=10, sm=7, avp=2.91)]}]),
        _line(4, [{"id": 11, "uo": [_uo("b1", p=2.8, s=10, status="EC", sm=7, sc=3, avp=2.91),
                                    _uo("b2", p=5.0, s=4)]}]),
        _line(5, [{"id": 22, "hc": -1.5, "ml": [[4.0, 3]],
                   "uo": [_uo("l1", p=4.0, s=3, side="L", status="EC", sm=3, avp=4.0)]}]),
        _line(6, [{"id": 11, "mb": [[5.0, 1]], "uo": [_uo("b2", p=5.0, s=4, sm=1, avp=5.0)]}]),
        _line(7, [{"id": 11, "uo": [_uo("b1", p=2.8, s=10, status="EC", sm=5, sc=3, sv=2, avp=2.91)]}]),
        _line(8, [], closed=True),
    ]


def final_image() -> bytes:
    """The fresh subscription's image of `synthetic()`'s end state, as Betfair sends it (full ladders)."""
    return _line(9, [
        {"id": 11, "fullImage": True, "mb": [[2.88, 5], [3.0, 2], [5.0, 1]],
         "uo": [_uo("b1", p=2.8, s=10, status="EC", sm=5, sc=3, sv=2, avp=2.91),
                _uo("b2", p=5.0, s=4, status="EC", sm=1, sl=3, avp=5.0)]},
        {"id": 22, "hc": -1.5, "fullImage": True, "ml": [[4.0, 3]],
         "uo": [_uo("l1", p=4.0, s=3, side="L", status="EC", sm=3, avp=4.0)]}], full=True)


def _sources() -> dict[str, list[bytes]]:
    return {"synthetic": synthetic(),
            "fixture": [x for x in (FIXTURES / "orders.stream").read_bytes().splitlines() if x.strip()]}


def decode(decoder: StreamDecoder, lines: list[bytes]) -> list[Event]:
    return [e for line in lines for t, e in decoder.decode_line(line) if t == ORDERS_TOPIC]  # type: ignore[misc]


def restarted_after(lines: list[bytes], cut: int) -> tuple[list[Event], StreamDecoder]:
    """The events a recorder appended before a kill after `cut` lines, and a new decoder rebuilt from them."""
    before = decode(StreamDecoder(), lines[:cut])
    decoder = StreamDecoder()
    assert decoder.orders.restore(before) == len(before)
    return before, decoder


@pytest.mark.parametrize("source", [
    "synthetic", "fixture", pytest.param("recorded", marks=pytest.mark.shared_data("betfair/ORDER-1.177596575"))])
def test_a_cache_rebuilt_at_any_line_carries_on_as_the_original(source: str) -> None:
    """The rebuilt cache is the one the killed recorder had: the changes after the kill give exactly the
    events one uninterrupted run gives for them."""
    lines = _sources().get(source) or [x for x in (SHARED / "ORDER-1.177596575").read_bytes().splitlines() if x]
    whole = decode(StreamDecoder(), lines)
    assert whole
    for cut in range(len(lines) + 1):
        before, decoder = restarted_after(lines, cut)
        assert before + decode(decoder, lines[cut:]) == whole, f"killed after line {cut}"


def test_a_restart_then_a_fresh_image_records_only_what_changed_while_down() -> None:
    """Betfair's fresh subscription sends one image of the orders' current state: every order is
    accepted once, its matched stake is filled once in all, and amounts are cancelled once."""
    lines, image = synthetic(), final_image()
    whole = decode(StreamDecoder(), lines)
    for cut in range(len(lines) + 1):
        before, decoder = restarted_after(lines, cut)
        tape = before + decode(decoder, [image])
        accepted = [e.venue_order_id for e in tape if isinstance(e, OrderAccepted)]
        assert sorted(accepted) == ["b1", "b2", "l1"], f"killed after line {cut}"
        filled: dict[str, float] = defaultdict(float)
        for e in tape:
            if isinstance(e, OrderFilled):
                filled[e.venue_order_id or ""] += e.size
        # b1 matched 7, of which 2 were voided later: a recorder that saw the 7 records the void, one
        # that did not (killed before the second fill) records the 5 the image shows; b2 1, l1 3
        b1 = 7.0 if cut >= 3 else 5.0
        assert {k: round(v, 2) for k, v in filled.items()} == {"b1": b1, "b2": 1.0, "l1": 3.0}, cut
        reasons = [e.reason for e in tape if isinstance(e, OrderCancelled) and e.venue_order_id == "b1"]
        if cut >= 4:  # the cancellation recorded before the kill, the void after: as in one run
            assert reasons == ["cancelled 3", "voided 2 after completion (matched 7 -> 5)"], cut
        else:  # the whole completion happened while down: one event with every amount
            assert reasons == ["cancelled 3, voided 2"], cut
        lapsed = [e.reason for e in tape if isinstance(e, OrderCancelled) and e.venue_order_id == "b2"]
        assert len(lapsed) == 1 and lapsed[0].startswith("lapsed 3"), (cut, lapsed)  # once, however it was seen
        # every price a fill has is a price Betfair matched at
        prices = {e.price for e in tape if isinstance(e, OrderFilled)}
        assert prices <= {3.0, 2.88, 5.0, 4.0, 2.8}, prices
        if cut == len(lines):
            assert tape == whole  # nothing changed while down: the image adds nothing
    # nor does it to a recorder that never stopped (the lapse at the close is not reported again)
    assert decode(StreamDecoder(), [*lines, image]) == whole


def test_restore_ignores_other_venues_and_orders_it_never_saw_accepted() -> None:
    whole = decode(StreamDecoder(), synthetic())
    fills_only = [e for e in whole if isinstance(e, OrderFilled)]
    cache = OrderCache()
    assert cache.restore(fills_only) == 0  # no OrderAccepted: nothing to attach the fills to
    assert cache.orders == {}
    other = [e._replace(venue="binance") for e in whole]
    assert cache.restore(other) == 0
