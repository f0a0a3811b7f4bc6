"""`time_cut`: where a sync batch stops, so an order's intent and answers land in one batch."""

from __future__ import annotations

from ticktape.events import OrderAccepted, PlaceOrder
from ticktape.mongo.sync import time_cut
from ticktape.tape.base import Record

INTENTS, ANSWERS = ("orders.intent", 0), ("orders.event", 0)


def records(where: tuple[str, int], times: list[int]) -> list[Record]:
    out = []
    for offset, ts in enumerate(times):
        if where == INTENTS:
            event: PlaceOrder | OrderAccepted = PlaceOrder(
                robot="r", client_order_id=f"c{offset}", venue="sim", instrument="X", ts_event=ts, ts_recv=ts,
                side="BUY", order_type="LIMIT", price=1.0, size=1.0, time_in_force="GTC", reason="")
        else:
            event = OrderAccepted(robot="r", client_order_id=f"c{offset}", venue_order_id="v", venue="sim",
                                  instrument="X", ts_event=ts, ts_recv=ts)
        out.append(Record(where[0], where[1], offset, "run", event))
    return out


def test_exhausted_partitions_are_kept_whole() -> None:
    reads = {INTENTS: records(INTENTS, [1, 2, 3]), ANSWERS: records(ANSWERS, [1, 9])}
    assert time_cut(reads, 4, exempt=set()) == {INTENTS: 3, ANSWERS: 2}


def test_a_full_partition_cuts_the_others_at_its_last_time() -> None:
    # intents run ahead of their answers: keep the answers up to the last intent read, no further
    reads = {INTENTS: records(INTENTS, [10, 20, 30]), ANSWERS: records(ANSWERS, [11, 21, 31])}
    assert time_cut(reads, 3, exempt=set()) == {INTENTS: 3, ANSWERS: 2}
    # the earliest stop of the full partitions wins
    reads = {INTENTS: records(INTENTS, [10, 20, 30]), ANSWERS: records(ANSWERS, [5, 6, 7])}
    assert time_cut(reads, 3, exempt=set()) == {INTENTS: 0, ANSWERS: 3}


def test_a_prefix_stops_at_the_first_later_record() -> None:
    # times need not be sorted within a partition (runs over the same hours, one after another)
    reads = {INTENTS: records(INTENTS, [10, 50, 20]), ANSWERS: records(ANSWERS, [5, 15, 25])}
    assert time_cut(reads, 3, exempt=set()) == {INTENTS: 1, ANSWERS: 2}


def test_when_nothing_would_be_kept_the_first_full_partition_goes_whole() -> None:
    reads = {INTENTS: records(INTENTS, [90, 95, 1]), ANSWERS: records(ANSWERS, [80, 85, 2])}
    assert time_cut(reads, 3, exempt=set()) == {INTENTS: 3, ANSWERS: 0}


def test_a_partition_stopped_by_an_undecodable_record_is_kept_whole_and_cuts_nothing() -> None:
    reads = {INTENTS: records(INTENTS, [10, 20, 30]), ANSWERS: records(ANSWERS, [100])}
    assert time_cut(reads, 3, exempt={ANSWERS}) == {INTENTS: 3, ANSWERS: 1}
    assert time_cut(reads, 1, exempt={ANSWERS}) == {INTENTS: 3, ANSWERS: 1}
