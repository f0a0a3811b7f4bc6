"""The shared domain rules (ticktape.domain): Betfair instrument ids with handicaps, the same in
Python and SQL, read by controls and the analyzer's marks; one intent digest."""

from __future__ import annotations

import hashlib

import duckdb
import pytest

from robots.controls import Controls, PriceBand
from robots.sim.betfair_books import book, runner
from ticktape.codec import default_codec
from ticktape.domain import IntentDigest, betfair_instrument, betfair_instrument_sql, parse_betfair_instrument
from ticktape.events import PlaceOrder

HANDICAPS = [0.0, -1.5, 2.0, 0.25, 1e-7]


@pytest.mark.parametrize("handicap", HANDICAPS)
def test_instrument_ids_round_trip(handicap: float) -> None:
    inst = betfair_instrument("1.23", 47972, handicap)
    assert parse_betfair_instrument(inst) == ("1.23", 47972, handicap)
    assert (inst.count(":") == 2) == (handicap != 0)


def test_a_malformed_instrument_is_named() -> None:
    for bad in ("1.23", "1.23:x", "1.23:4:5:6", "1.23:4:h"):
        with pytest.raises(ValueError, match="not a Betfair instrument id"):
            parse_betfair_instrument(bad)


def test_sql_builds_the_same_ids_as_python() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE r (market_id VARCHAR, selection_id BIGINT, handicap DOUBLE)")
    rows = [("1.23", 47972 + i, h) for i, h in enumerate(HANDICAPS)]
    con.executemany("INSERT INTO r VALUES (?, ?, ?)", rows)
    con.execute("INSERT INTO r VALUES ('1.9', 5, NULL)")  # a book without the field reads as 0
    expr = betfair_instrument_sql("market_id", "selection_id", "handicap")
    got = [v for (v,) in con.execute(f"SELECT {expr} FROM r ORDER BY selection_id").fetchall()]
    assert got == [betfair_instrument("1.9", 5)] + [betfair_instrument(*row) for row in rows]


def test_controls_mark_a_handicap_runner_under_its_own_id() -> None:
    """Before the shared rule, controls keyed every runner `market:selection`, so a handicap
    market's marks never matched the orders' instrument and price bands saw no price."""
    controls = Controls([PriceBand(pct=5)])  # a control that prices: market data is followed
    controls.on_event(book("1.5", 1, [runner(7, back=[(2.0, 10)], lay=[(2.1, 10)], last_price_traded=2.04,
                                             handicap=-1.5)]))
    inst = betfair_instrument("1.5", 7, -1.5)
    assert inst == "1.5:7:-1.5"
    assert controls.view.last_trade == {inst: 2.04}
    assert controls.view.mid[inst] == pytest.approx(2.05)


def test_the_digest_is_sha256_over_single_object_encodings() -> None:
    intents = [PlaceOrder("r", f"c{i}", "sim", "X", 10 + i, 0, "BUY", "LIMIT", 1.0 + i, 2.0, "GTC")
               for i in range(3)]
    digest = IntentDigest()
    encoded = [digest.add(i) for i in intents]
    encode = default_codec().encode
    assert encoded == [encode(i) for i in intents]
    assert digest.hexdigest() == hashlib.sha256(b"".join(encoded)).hexdigest() and digest.count == 3


def test_a_deferred_digest_equals_one_added_intent_by_intent() -> None:
    # more intents than one batch, deferred and added interleaved: the same bytes in the same order
    intents = [PlaceOrder("r", f"c{i}", "sim", "X", 10 + i, 0, "BUY", "LIMIT", 1.0 + i, 2.0, "GTC")
               for i in range(1300)]
    one_by_one, deferred = IntentDigest(), IntentDigest()
    for i, intent in enumerate(intents):
        one_by_one.add(intent)
        if i % 500 == 499:
            deferred.add(intent)  # flushes what is queued first
        elif i == 700:
            deferred.add_encoded(default_codec().encode(intent))
        else:
            deferred.defer(intent)
    assert deferred.count == one_by_one.count == 1300
    assert deferred.hexdigest() == one_by_one.hexdigest()
    deferred.defer(intents[0])
    one_by_one.add(intents[0])
    assert deferred.hexdigest() == one_by_one.hexdigest()
