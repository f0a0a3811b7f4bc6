"""A bar's MongoDB document and back (`ticktape.mongo.bars`): pure, no server needed (the store itself is
tested against a real server in tests/integration/test_mongo_bars.py)."""

from __future__ import annotations

import pytest

from ticktape.events import Bar
from ticktape.mongo.bars import BadBarDocument, bar_document, bar_from_document

V1 = Bar("binance", "BTCUSDT", 60_000_000_000, 60_000_000_001, "1m", 1.0, 2.0, 0.5, 1.5, 10.0)
V2 = V1._replace(quote_volume=15.25, trades=42, taker_buy_base_volume=4.0, taker_buy_quote_volume=6.5)


@pytest.mark.parametrize("bar", [V1, V2], ids=["without-v2-fields", "with-v2-fields"])
def test_a_bar_reads_back_from_its_document_with_every_field(bar: Bar) -> None:
    assert bar_from_document({"_id": "x", **bar_document(bar)}) == bar


def test_a_document_without_the_v2_fields_reads_them_as_null() -> None:
    doc = {k: v for k, v in bar_document(V2).items() if k not in ("quote_volume", "trades")}
    got = bar_from_document(doc)
    assert got.quote_volume is None and got.trades is None and got.taker_buy_quote_volume == 6.5


@pytest.mark.parametrize(("field", "value"), [("trades", 4.5), ("trades", True), ("quote_volume", "12"),
                                              ("taker_buy_base_volume", float("inf"))])
def test_a_bad_v2_field_is_named(field: str, value: object) -> None:
    with pytest.raises(BadBarDocument, match=f"_id 7, field '{field}'"):
        bar_from_document({"_id": 7, **bar_document(V2), field: value})
