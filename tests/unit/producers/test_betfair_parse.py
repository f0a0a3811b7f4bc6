"""Betfair stream decoding on hand-written stream lines: books, definitions, orders, race data.

Every test runs twice: on the C runner state and on its pure-Python twin (`runner_impl`)."""

from __future__ import annotations

import pytest
from betfair_helpers import FIXTURES, ladder, reference_books

from producers.betfair.definition import iso_ns
from producers.betfair.parse import MARKET_TOPIC, ORDERS_TOPIC, RACE_TOPIC, StreamDecoder
from ticktape.codec import default_codec
from ticktape.errors import ValidationError
from ticktape.events import (
    MarketBook,
    MarketDefinition,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    RaceChange,
)
from ticktape.tape.base import Encoded

S = 1_000_000_000

pytestmark = pytest.mark.usefixtures("runner_impl")


def _decode(name: str) -> list[tuple[str, object]]:
    dec = StreamDecoder()
    out: list[tuple[str, object]] = []
    for line in (FIXTURES / name).read_bytes().splitlines():
        out.extend(dec.decode_line(line))
    return out


def _books() -> list[MarketBook]:
    return [e for _, e in _decode("market.stream") if isinstance(e, MarketBook)]


def test_every_market_change_is_one_book_heartbeats_none() -> None:
    events = _decode("market.stream")
    books = [e for _, e in events if isinstance(e, MarketBook)]
    assert {t for t, _ in events} == {MARKET_TOPIC}
    # 7 lines: one heartbeat, six market changes
    assert [b.ts_event for b in books] == [1_700_000_000 * S + k * S for k in (0, 1, 3, 4, 5, 6)]
    assert all(b.ts_recv == b.ts_event for b in books)  # historical: ts_recv is the publish time


def test_first_image_builds_full_sorted_ladders() -> None:
    b = _books()[0]
    assert (b.market_id, b.status, b.in_play, b.total_matched, b.version) == ("1.100", "OPEN", False, 70, 10)
    r11, r22 = b.runners
    assert r11.selection_id == 11 and r11.status == "ACTIVE"
    assert ladder(r11.available_to_back) == [(2.02, 3), (2.0, 10), (1.98, 5)]  # best (highest) first
    assert ladder(r11.available_to_lay) == [(2.1, 7), (2.2, 4)]  # best (lowest) first
    assert ladder(r11.traded_volume) == [(2.0, 50), (2.04, 20)]  # ascending price
    assert (r11.last_price_traded, r11.total_matched) == (2.04, 70)
    assert ladder(r22.available_to_lay) == [(3.6, 1.5), (3.7, 9)]
    assert r22.last_price_traded is None and r22.total_matched == 0


def test_deltas_replace_delete_and_insert_levels_in_price_order() -> None:
    b = _books()[1]
    r11 = b.runners[0]
    assert ladder(r11.available_to_back) == [(2.04, 6), (2.0, 10), (1.98, 5)]  # 2.02 deleted, 2.04 inserted
    assert ladder(r11.available_to_lay) == [(2.1, 2.5), (2.2, 4)]
    assert ladder(r11.traded_volume) == [(2.0, 50), (2.02, 4), (2.04, 20)]
    assert (r11.last_price_traded, r11.total_matched, b.total_matched) == (2.02, 74, 74)
    assert b.runners[1] is _books()[1].runners[1] or b.runners[1] == _books()[0].runners[1]  # untouched runner


def test_runner_without_definition_definition_change_and_clearing() -> None:
    books = _books()
    assert [r.selection_id for r in books[2].runners] == [11, 22, 33]
    assert books[2].runners[2].status == "UNKNOWN"  # betfairlightweight: None until a definition names it
    b = books[3]
    assert (b.status, b.in_play, b.bet_delay, b.cross_matching, b.number_of_active_runners) == (
        "SUSPENDED", True, 1, False, 1)
    assert [r.status for r in b.runners] == ["ACTIVE", "REMOVED", "UNKNOWN"]
    b = books[4]
    assert b.runners[0].traded_volume == ()  # an empty trd list clears the traded ladder
    assert b.runners[1].available_to_back == () and b.runners[1].available_to_lay == ()


def test_full_image_replaces_the_cache() -> None:
    b = _books()[5]
    assert b.status == "CLOSED" and b.total_matched == 60
    assert [(r.selection_id, r.status) for r in b.runners] == [(11, "WINNER"), (22, "REMOVED")]  # 33 is gone
    assert b.runners[0].available_to_back == () and ladder(b.runners[0].traded_volume) == [(2.0, 60)]


def test_definitions_only_when_they_change_with_times_in_ns() -> None:
    defs = [e for _, e in _decode("market.stream") if isinstance(e, MarketDefinition)]
    assert [d.status for d in defs] == ["OPEN", "SUSPENDED", "CLOSED"]
    d = defs[0]
    assert (d.event_name, d.market_name, d.venue, d.country_code, d.event_type_id) == (
        "Test Meeting", "R1 1000m", "Testville", "GB", "7")
    assert d.market_time == iso_ns("2023-11-14T22:30:00.000Z") == 1_700_001_000 * S
    removed = defs[1].runners[1]
    assert (removed.status, removed.adjustment_factor, removed.removal_date) == ("REMOVED", 12.5, 1_700_000_940 * S)
    assert defs[2].settled_time == 1_700_001_060 * S and defs[2].runners[0].bsp == 2.1
    # the same definition again is not a change
    dec = StreamDecoder(evict_closed=False)
    line = (FIXTURES / "market.stream").read_bytes().splitlines()[0]
    assert sum(isinstance(e, MarketDefinition) for _, e in dec.decode_line(line)) == 1
    assert sum(isinstance(e, MarketDefinition) for _, e in dec.decode_line(line.replace(b'"pt":1700000000000',
                                                                                         b'"pt":1700000000500'))) == 0


def test_fixture_matches_betfairlightweight_update_by_update() -> None:
    ours = _books()
    theirs = reference_books(FIXTURES / "market.stream")
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert (a.status, a.in_play, a.total_matched) == (b.status, b.inplay, b.total_matched)
        assert [r.selection_id for r in a.runners] == [r.selection_id for r in b.runners]
        for ra, rb in zip(a.runners, b.runners, strict=True):
            assert ra.status == (rb.status or "UNKNOWN")
            assert (ra.last_price_traded, ra.total_matched) == (rb.last_price_traded, rb.total_matched)
            assert ladder(ra.available_to_back) == ladder(rb.ex.available_to_back)
            assert ladder(ra.available_to_lay) == ladder(rb.ex.available_to_lay)
            assert ladder(ra.traded_volume) == ladder(rb.ex.traded_volume)


def test_encode_books_gives_the_codecs_bytes_of_the_same_books() -> None:
    lines = (FIXTURES / "market.stream").read_bytes().splitlines()
    plain, encoding = StreamDecoder(), StreamDecoder(encode_books=True)
    codec = default_codec()
    n = 0
    for line in lines:
        for (t1, e1), (t2, e2) in zip(plain.decode_line(line), encoding.decode_line(line), strict=True):
            assert t1 == t2
            if isinstance(e1, MarketBook):
                assert isinstance(e2, Encoded) and e2 == Encoded(e1.market_id, e1.ts_event, codec.encode(e1))
                n += 1
            else:
                assert e1 == e2  # definitions stay events
    assert n == 6


def test_best_offers_ladders_by_position_are_used_when_no_full_depth() -> None:
    dec = StreamDecoder()
    line = (b'{"op":"mcm","pt":1700000000000,"mc":[{"id":"1.5","rc":[{"id":1,"batb":[[0,2.5,10],[1,2.4,3]],'
            b'"batl":[[0,2.6,4]]}]}]}')
    book = dec.decode_line(line)[-1][1]
    assert isinstance(book, MarketBook)
    assert ladder(book.runners[0].available_to_back) == [(2.5, 10), (2.4, 3)]
    book = dec.decode_line(line.replace(b'"batb":[[0,2.5,10],[1,2.4,3]]', b'"batb":[[0,2.4,3],[1,0,0]]'))[-1][1]
    assert isinstance(book, MarketBook)
    assert ladder(book.runners[0].available_to_back) == [(2.4, 3)]


def test_order_stream_becomes_accepted_filled_cancelled() -> None:
    events = [e for t, e in _decode("orders.stream") if t == ORDERS_TOPIC]
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["OrderAccepted", "OrderFilled", "OrderFilled", "OrderCancelled", "OrderAccepted", "OrderFilled"]
    acc, fill1, fill2, cancel, acc2, fill3 = events
    assert isinstance(acc, OrderAccepted)
    assert (acc.robot, acc.client_order_id, acc.venue_order_id, acc.instrument) == (
        "robot-1", "robot-1-5-0", "900001", "1.300:77")
    assert isinstance(fill1, OrderFilled) and isinstance(fill2, OrderFilled) and isinstance(fill3, OrderFilled)
    assert (fill1.side, fill1.price, fill1.size, fill1.leaves_size, fill1.liquidity) == ("BUY", 3.0, 4.0, 6.0, "MAKER")
    # avp moved 3.0 -> 3.1 while sm went 4 -> 5: the fifth unit matched at 5*3.1 - 4*3.0 = 3.5
    assert (fill2.price, fill2.size, fill2.leaves_size) == (3.5, 1.0, 0.0)
    assert isinstance(cancel, OrderCancelled) and cancel.reason == "cancelled 5"
    assert isinstance(acc2, OrderAccepted) and acc2.instrument == "1.300:88:-1.5" and acc2.client_order_id == "900002"
    assert (fill3.side, fill3.price, fill3.size, fill3.liquidity) == ("SELL", 1.85, 2.0, "TAKER")
    assert fill1.fill_id != fill2.fill_id


def test_race_stream_becomes_race_changes() -> None:
    race = [e for t, e in _decode("orders.stream") if t == RACE_TOPIC]
    assert len(race) == 1 and isinstance(race[0], RaceChange)
    assert (race[0].market_id, race[0].ts_event, race[0].clk) == ("1.300", 1_700_000_004 * S, "R1")
    assert '"rrc"' in race[0].change and race[0].runners[0].selection_id == 11


@pytest.mark.parametrize("line, message", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"op":"mcm","mc":[]}', "publish time"),
    (b'{"op":"bogus","pt":1}', "unknown stream operation"),
])
def test_bad_lines_raise_validation_errors(line: bytes, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        StreamDecoder().decode_line(line)
