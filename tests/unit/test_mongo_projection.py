"""The pure projection of `ticktape mongo sync`: records -> documents, without a server."""

from __future__ import annotations

import copy
import random
from decimal import Decimal

from ticktape.events import (
    BetSettled,
    CancelOrder,
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    PlaceOrder,
    ReplaceOrder,
    RunFinished,
    RunStarted,
)
from ticktape.mongo.projection import Doc, Projection, dec, order_id, position_id
from ticktape.tape.base import Record

RUN = "run-1"
T0 = 1_700_000_000_000_000_000


def place(coid: str, t: int, side: str = "BUY", price: float = 100.0, size: float = 2.0) -> PlaceOrder:
    return PlaceOrder(robot="bot", client_order_id=coid, venue="sim", instrument="X", ts_event=t, ts_recv=t,
                      side=side, order_type="LIMIT", price=price, size=size, time_in_force="GTC")  # type: ignore[arg-type]


def fill(coid: str, t: int, fid: str, price: float, size: float, leaves: float, side: str = "BUY",
         fee: float = 0.01) -> OrderFilled:
    return OrderFilled(robot="bot", client_order_id=coid, venue_order_id="v-" + coid, venue="sim", instrument="X",
                       ts_event=t, ts_recv=t, fill_id=fid, side=side, price=price, size=size,  # type: ignore[arg-type]
                       fee=fee, liquidity="MAKER", leaves_size=leaves)


def accepted(coid: str, t: int) -> OrderAccepted:
    return OrderAccepted(robot="bot", client_order_id=coid, venue_order_id="v-" + coid, venue="sim",
                         instrument="X", ts_event=t, ts_recv=t)


def records(intents: list[Event], answers: list[Event], runs: list[Event] = ()) -> list[list[Record]]:  # type: ignore[assignment]
    """Per partition, the records as the tape would hold them."""
    return [[Record("runs", 0, i, RUN, e) for i, e in enumerate(runs)],
            [Record("orders.intent", 0, i, RUN, e) for i, e in enumerate(intents)],
            [Record("orders.event", 0, i, RUN, e) for i, e in enumerate(answers)]]


def fold(recs: list[Record]) -> dict[tuple[str, str], Doc]:
    proj = Projection()
    for r in recs:
        proj.apply(r)
    return proj.docs


def interleave(parts: list[list[Record]], rng: random.Random) -> list[Record]:
    """A random merge of the partitions that keeps each partition's order (what any batch cut gives)."""
    queues = [list(p) for p in parts if p]
    out = []
    while queues:
        q = rng.choice(queues)
        out.append(q.pop(0))
        if not q:
            queues.remove(q)
    return out


LIFE = records(
    intents=[place("a", T0), place("b", T0 + 1, side="SELL", price=101.0, size=1.0),
             ReplaceOrder(robot="bot", client_order_id="b", venue="sim", instrument="X", ts_event=T0 + 5,
                          ts_recv=T0 + 5, side="SELL", order_type="LIMIT", price=102.0, size=1.0, time_in_force="GTC"),
             CancelOrder(robot="bot", client_order_id="b", venue="sim", instrument="X", ts_event=T0 + 7,
                         ts_recv=T0 + 7, reason="stale"),
             place("c", T0 + 8), place("d", T0 + 9)],
    answers=[accepted("a", T0 + 2), fill("a", T0 + 3, "a1", 100.0, 0.5, 1.5), fill("a", T0 + 4, "a2", 99.9, 1.5, 0.0),
             accepted("b", T0 + 3), accepted("b", T0 + 6),
             OrderCancelled(robot="bot", client_order_id="b", venue_order_id="v-b", venue="sim", instrument="X",
                            ts_event=T0 + 8, ts_recv=T0 + 8, reason="by request"),
             OrderRejected(robot="bot", client_order_id="c", venue_order_id=None, venue="sim", instrument="X",
                           ts_event=T0 + 8, ts_recv=T0 + 8, reason="too big", control="max_size"),
             accepted("d", T0 + 10), fill("d", T0 + 11, "d1", 100.2, 0.7, 1.3),
             # an answer for an order whose intent is not on the tape (live: another process's order)
             fill("ghost", T0 + 12, "g1", 50.0, 1.0, 0.0, side="SELL")],
    runs=[RunStarted(run_id=RUN, robot="bot", robot_id="bot", ts_event=T0, ts_recv=T0, params='{"fast": 5}',
                     source="test", topics=("md",), mode="live"),
          RunFinished(run_id=RUN, ts_event=T0 + 20, ts_recv=T0 + 20, events=10, intents=6, intents_sha256="x",
                      summary="{}")])


def test_order_statuses_and_fields() -> None:
    docs = fold([r for part in LIFE for r in part])
    orders = {k[1].split("/")[1]: d for k, d in docs.items() if k[0] == "orders"}
    assert {k: d["status"] for k, d in orders.items()} == {
        "a": "FILLED", "b": "CANCELLED", "c": "REJECTED", "d": "PARTIALLY_FILLED", "ghost": "FILLED"}
    a = orders["a"]
    assert a["_id"] == order_id(RUN, "a") and a["run"] == RUN and a["client_order_id"] == "a"
    assert a["filled"] == 2.0 and a["leaves"] == 0.0 and a["fees"] == 0.02
    assert a["avg_price"] == float((Decimal("50") + Decimal("149.85")) / 2)
    assert [s["type"] for s in a["history"]] == ["PlaceOrder", "OrderAccepted", "OrderFilled", "OrderFilled"]
    assert [f["fill_id"] for f in a["fills"]] == ["a1", "a2"] and a["venue_order_ids"] == ["v-a"]
    b = orders["b"]
    assert (b["price"], b["leaves"]) == (102.0, 0.0)  # the last replace's price
    assert [s["type"] for s in b["history"]] == ["PlaceOrder", "OrderAccepted", "ReplaceOrder", "OrderAccepted",
                                                 "CancelOrder", "OrderCancelled"]
    assert orders["d"]["leaves"] == 1.3 and orders["c"]["leaves"] == 0.0
    assert orders["ghost"]["intent"] is None and orders["ghost"]["side"] == "SELL"
    run = docs[("runs", RUN)]
    assert (run["status"], run["mode"], run["params"], run["intents"], run["orders"], run["fills"],
            run["rejections"]) == ("finished", "live", {"fast": 5}, 6, 4, 4, 1)


def test_settled_bet() -> None:
    recs = records([place("a", T0)], [accepted("a", T0 + 1), fill("a", T0 + 2, "a1", 3.5, 2.0, 0.0),
                                      BetSettled(robot="bot", client_order_id="a", venue_order_id="v-a",
                                                 venue="betfair", instrument="1.2:3", market_id="1.2", selection_id=3,
                                                 ts_event=T0 + 9, ts_recv=T0 + 9, side="BUY", size_matched=2.0,
                                                 average_price_matched=3.5, runner_status="WINNER", profit=5.0)])
    doc = fold([r for p in recs for r in p])[("orders", order_id(RUN, "a"))]
    assert doc["status"] == "SETTLED" and doc["settlement"]["profit"] == 5.0 and doc["filled"] == 2.0


def test_documents_do_not_depend_on_how_partitions_interleave() -> None:
    """Any batch cut folds the partitions in another interleaving: the documents must not change."""
    first = fold([r for part in LIFE for r in part])
    answers_first = fold(LIFE[2] + LIFE[0] + LIFE[1])  # every answer before its intent
    assert answers_first == first
    rng = random.Random(7)
    for _ in range(50):
        assert fold(interleave(LIFE, rng)) == first


def test_a_record_absorbed_before_changes_nothing() -> None:
    """A sync killed after writing a document re-reads the batch: the document must skip it."""
    recs = [r for part in LIFE for r in part]
    proj = Projection()
    for r in recs:
        proj.apply(r)
    proj.take_touched(1)
    before = copy.deepcopy(proj.docs)
    assert not any(proj.apply(r) for r in recs)
    assert proj.docs == before and not proj.touched
    # a document read back (as MongoDB returns it) skips them too
    reloaded = Projection()
    key = ("orders", order_id(RUN, "a"))
    reloaded.docs[key] = copy.deepcopy(before[key])
    for r in recs:
        reloaded.apply(r)
    assert reloaded.docs[key] == before[key] and key not in reloaded.touched


def test_positions_are_the_analyzers_decimal_sums() -> None:
    fills = [fill("a", T0 + i, f"f{i}", 0.1 * (i + 1), 0.3 + i, 0.0, side="BUY" if i % 3 else "SELL",
                  fee=0.0001 * i) for i in range(30)]
    doc = fold(records([], fills)[2])[("positions", position_id(RUN, "bot", "X"))]
    d = Decimal
    pos = sum((dec(f.size) if f.side == "BUY" else -dec(f.size)) for f in fills)
    cash = sum(((-1 if f.side == "BUY" else 1) * dec(f.price) * dec(f.size) - dec(f.fee)).quantize(d("1e-9"))
               for f in fills)
    assert doc["position"] == float(pos) and doc["cash"] == float(cash)
    assert doc["fees"] == float(sum(dec(f.fee) for f in fills)) and doc["fills"] == 30
    assert doc["buy_volume"] + doc["sell_volume"] == float(sum(dec(f.size) for f in fills))
    assert doc["last_fill_ts"] == T0 + 29


def test_dec_rounds_like_duckdb() -> None:
    assert dec(0.1) == Decimal("0.100000000") and dec(1e-10) == Decimal("0E-9")
    assert dec(2.0000000005) == Decimal("2.000000001")  # half away from zero
    assert dec(-2.0000000005) == Decimal("-2.000000001")
