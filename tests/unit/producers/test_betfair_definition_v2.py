"""MarketDefinition v2: the definition fields Betfair sends that v1 dropped, checked against
betfairlightweight on the recorded markets, on both ladder twins; a change of those fields alone
is a MarketDefinition event; the catalogue's equivalents."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from betfair_helpers import REAL_MARKETS, SHARED, reference_books

from producers.betfair.catalogue import CatalogueTracker
from producers.betfair.definition import from_catalogue, iso_ns
from producers.betfair.parse import StreamDecoder
from ticktape.codec import default_codec
from ticktape.events import KeyLineSelection, MarketDefinition

NEW_FIELDS = ("bsp_market", "bsp_reconciled", "discount_allowed", "market_base_rate", "open_date",
              "persistence_enabled", "price_ladder_type", "race_type", "regulators", "runners_voidable", "key_line",
              "number_of_runners", "number_of_active_runners", "last_match_time")


def reference(md: Any) -> dict[str, Any]:
    """betfairlightweight's MarketDefinition as ticktape's v2 fields (times in ns)."""
    def ns(dt: Any) -> int | None:
        return None if dt is None else iso_ns(dt.isoformat() if dt.tzinfo else dt.isoformat() + "Z")
    kl = md.key_line_definitions
    return {
        "bsp_market": md.bsp_market, "bsp_reconciled": md.bsp_reconciled, "discount_allowed": md.discount_allowed,
        "market_base_rate": md.market_base_rate, "open_date": ns(md.open_date),
        "persistence_enabled": md.persistence_enabled,
        "price_ladder_type": md.price_ladder_definition.type if md.price_ladder_definition else None,
        "race_type": md.race_type, "regulators": tuple(md.regulators) if md.regulators is not None else None,
        "runners_voidable": md.runners_voidable,
        "key_line": tuple((k.selection_id, k.handicap) for k in kl.key_line) if kl else None,
        "number_of_active_runners": md.number_of_active_runners,
    }


def ours(d: MarketDefinition) -> dict[str, Any]:
    got = {f: getattr(d, f) for f in NEW_FIELDS if f not in ("number_of_runners", "last_match_time")}
    got["key_line"] = tuple((k.selection_id, k.handicap) for k in d.key_line) if d.key_line is not None else None
    return got


@pytest.mark.shared_data(*(f"betfair/{m}" for m in REAL_MARKETS))
@pytest.mark.parametrize("market", REAL_MARKETS)
def test_recorded_definitions_match_betfairlightweight(market: str, runner_impl: str) -> None:
    path = SHARED / market
    dec = StreamDecoder(evict_closed=False)
    defs: dict[int, MarketDefinition] = {}
    with open(path, "rb") as f:
        for line in f:
            for _, e in dec.decode_line(line):
                if isinstance(e, MarketDefinition):
                    defs[e.ts_event] = e
    assert len(defs) >= 3
    books = {b.publish_time_epoch * 1_000_000: b for b in reference_books(path)}
    for ts, d in defs.items():
        assert ours(d) == reference(books[ts].market_definition), ts
        assert (d.number_of_runners, d.last_match_time) == (None, None)  # the stream does not send them
        assert default_codec().decode(default_codec().encode(d)) == d
    first = next(iter(defs.values()))
    assert (first.bsp_market, first.market_base_rate, first.regulators, first.price_ladder_type,
            first.number_of_active_runners) == (True, 5.0, ("MR_INT",), "CLASSIC", 6)
    assert first.open_date == iso_ns("2022-04-19T17:19:00.000Z")


def line(pt: int, **md: Any) -> bytes:
    definition = {"status": "OPEN", "betDelay": 0, "version": 1, "eventId": "1", "eventTypeId": "7",
                  "marketTime": "2022-04-19T18:26:00.000Z", "runners": [{"id": 1, "status": "ACTIVE"}],
                  "regulators": ["MR_INT"], "bspMarket": True, **md}
    return orjson.dumps({"op": "mcm", "pt": pt, "mc": [{"id": "1.5", "marketDefinition": definition}]})


@pytest.mark.parametrize("change", [
    {"regulators": ["MR_INT", "MR_NJ"]}, {"bspMarket": False}, {"bspReconciled": True}, {"discountAllowed": False},
    {"marketBaseRate": 2}, {"openDate": "2022-04-19T17:20:00.000Z"}, {"persistenceEnabled": True},
    {"priceLadderDefinition": {"type": "FINEST"}}, {"raceType": "Flat"}, {"runnersVoidable": True},
    {"keyLineDefinition": {"kl": [{"id": 1, "hc": -1.5}]}}, {"numberOfRunners": 3}, {"numberOfActiveRunners": 2},
    {"lastMatchTime": "2022-04-19T18:00:00.000Z"},
])
def test_a_change_of_only_a_v2_field_is_a_definition_event(change: dict[str, Any], runner_impl: str) -> None:
    dec = StreamDecoder(evict_closed=False)
    first = [e for _, e in dec.decode_line(line(1000)) if isinstance(e, MarketDefinition)]
    same = [e for _, e in dec.decode_line(line(2000)) if isinstance(e, MarketDefinition)]
    changed = [e for _, e in dec.decode_line(line(3000, **change)) if isinstance(e, MarketDefinition)]
    assert len(first) == 1 and same == [] and len(changed) == 1
    differs = [f for f in NEW_FIELDS if getattr(changed[0], f) != getattr(first[0], f)]
    assert len(differs) == 1 and changed[0][3:-len(NEW_FIELDS)] == first[0][3:-len(NEW_FIELDS)]


def test_key_line_from_the_stream_and_from_the_betting_api() -> None:
    dec = StreamDecoder(evict_closed=False)
    [d] = [e for _, e in dec.decode_line(line(1, keyLineDefinition={"kl": [{"id": 7, "hc": 2.5}, {"id": 8}]}))
           if isinstance(e, MarketDefinition)]
    assert d.key_line == (KeyLineSelection(7, 2.5), KeyLineSelection(8, 0.0))
    cat = json.loads((SHARED / "1.197931750.catalogue.json").read_text())
    cat["description"]["keyLineDescription"] = {"keyLine": [{"selectionId": 7, "handicap": -0.5}]}
    assert from_catalogue(cat, 1, 1).key_line == (KeyLineSelection(7, -0.5),)


@pytest.mark.shared_data(*(f"betfair/{m}.catalogue.json" for m in REAL_MARKETS))
def test_catalogue_definitions_carry_what_the_catalogue_has() -> None:
    for market in REAL_MARKETS:
        cat = json.loads((SHARED / f"{market}.catalogue.json").read_text())
        d = from_catalogue(cat, 1, 1)
        desc = cat["description"]
        assert (d.bsp_market, d.discount_allowed, d.market_base_rate, d.persistence_enabled, d.price_ladder_type,
                d.regulators, d.open_date) == (
            desc["bspMarket"], desc["discountAllowed"], desc["marketBaseRate"], desc["persistenceEnabled"],
            desc["priceLadderDescription"]["type"], (desc["regulator"],), iso_ns(cat["event"]["openDate"]))
        assert (d.bsp_reconciled, d.runners_voidable, d.key_line, d.number_of_active_runners) == (None,) * 4
        assert default_codec().decode(default_codec().encode(d)) == d
        tracker = CatalogueTracker()
        assert len(tracker.update([cat], 1)) == 1
        cat2 = {**cat, "description": {**desc, "regulator": "MALTA LOTTERIES AND GAMBLING AUTHORITY"}}
        [changed] = tracker.update([cat2], 2)  # only the regulator changed: still an event
        assert changed.regulators == ("MALTA LOTTERIES AND GAMBLING AUTHORITY",)
