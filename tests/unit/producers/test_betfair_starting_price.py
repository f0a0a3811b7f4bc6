"""Starting-price fields of the market stream (MarketBook v2): `spn`/`spf` and the `spb`/`spl` ladders.

The recorded markets carry none, so these lines are written after Betfair's Exchange Stream API
documentation (RunnerChange: spn, spf as numbers; spb, spl as [price, size] deltas, size 0 removes
a level; Betfair sends "NaN"/"Infinity" for a starting price it cannot compute yet). Each update,
read back from the tape (so through the C encoder's bytes on that twin), must equal
betfairlightweight's book: its `sp.near_price`/`far_price`, `back_stake_taken` (the spl ladder) and
`lay_liability_taken` (the spb ladder), on both twins.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from betfair_helpers import ladder, reference_books

from producers.betfair import cache
from producers.betfair.historical import import_file
from producers.betfair.parse import MARKET_TOPIC, StreamDecoder
from ticktape.codec import default_codec, to_python
from ticktape.errors import ValidationError
from ticktape.events import MarketBook
from ticktape.tape import open_tape
from ticktape.tape.base import Encoded
from ticktape.timeutil import VirtualClock

MARKET = "1.500000001"
PT0 = 1_650_392_673_420
DEFINITION = {
    "bspMarket": True, "turnInPlayEnabled": True, "persistenceEnabled": True, "marketBaseRate": 5,
    "eventId": "31389771", "eventTypeId": "7", "numberOfWinners": 1, "bettingType": "ODDS", "marketType": "WIN",
    "marketTime": "2022-04-19T18:26:00.000Z", "suspendTime": "2022-04-19T18:26:00.000Z", "bspReconciled": False,
    "complete": True, "inPlay": False, "crossMatching": True, "runnersVoidable": False, "numberOfActiveRunners": 3,
    "betDelay": 0, "status": "OPEN", "regulators": ["MR_INT"], "venue": "Ascot", "countryCode": "GB",
    "discountAllowed": True, "timezone": "Europe/London", "openDate": "2022-04-19T17:19:00.000Z",
    "version": 4495990919, "priceLadderDefinition": {"type": "CLASSIC"},
    "runners": [{"status": "ACTIVE", "sortPriority": i + 1, "id": sid} for i, sid in enumerate((11, 12, 13))],
}
CHANGES: list[list[dict[str, Any]]] = [
    # the image: 11 with all four, 12 with words for the prices it cannot compute, 13 with none at all
    [{"id": 11, "atb": [[3.1, 10]], "atl": [[3.3, 12]], "trd": [[3.2, 5]], "ltp": 3.2, "tv": 5,
      "spn": 3.25, "spf": 3.5, "spb": [[1.01, 50], [2, 10.5]], "spl": [[1000, 5], [4, 2]]},
     {"id": 12, "atb": [[5, 2]], "spn": "NaN", "spf": "Infinity", "spb": [[1.5, 4]]},
     {"id": 13, "atb": [[9, 1]], "atl": [[10, 1]], "trd": [[9.5, 1]], "ltp": 9.5, "tv": 1}],
    # a level removed by size 0, a new one, a replaced one, a new near price
    [{"id": 11, "spb": [[1.01, 0], [2, 11]], "spl": [[6, 3]], "spn": 3.3}],
    # 12 gets numbers; 11's lay liability emptied level by level (and a size 0 for a level it never had)
    [{"id": 12, "spn": 2.9, "spf": 3.1, "spl": [[10, 1]], "spb": [[1.5, 0]]},
     {"id": 11, "spl": [[1000, 0], [4, 0], [6, 0], [7.5, 0]]}],
    # a runner without SP fields changes; 11's far price back to a word
    [{"id": 13, "atb": [[9.2, 3]], "trd": [[9.5, 2]], "tv": 2}, {"id": 11, "spf": "Infinity"}],
    # whole numbers as ints, the back stake ladder of a runner that had none, 12's prices again
    [{"id": 13, "spl": [[20, 4], [15, 1]], "spb": [[1.01, 2]]}, {"id": 12, "spn": 3, "spf": 3}],
]


def stream_lines() -> list[bytes]:
    lines = []
    for i, rc in enumerate(CHANGES):
        mc: dict[str, Any] = {"id": MARKET, "rc": rc}
        if i == 0:
            mc = {"id": MARKET, "marketDefinition": DEFINITION, "rc": rc, "img": True}
        lines.append(orjson.dumps({"op": "mcm", "clk": f"A{i}", "pt": PT0 + 1000 * i, "mc": [mc]}))
    return lines


def same_price(ours: float | None, theirs: Any) -> bool:
    """Our double against betfairlightweight's value as sent (it keeps the words as strings)."""
    if isinstance(theirs, str):
        theirs = cache.SP_WORDS[theirs]
    if ours is None or theirs is None:
        return ours is theirs
    return (math.isnan(ours) and math.isnan(theirs)) or ours == theirs


@pytest.mark.usefixtures("runner_impl")
def test_starting_prices_match_betfairlightweight_update_by_update(tmp_path: Path) -> None:
    path = tmp_path / MARKET
    path.write_bytes(b"\n".join(stream_lines()) + b"\n")
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    import_file(tape, path, clock=VirtualClock(1))
    tape.close()
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    ours = [r.event for r in tape.read(MARKET_TOPIC) if isinstance(r.event, MarketBook)]
    tape.close()
    theirs = reference_books(path)
    assert len(ours) == len(theirs) == len(CHANGES)
    seen_sp = set()
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert [r.selection_id for r in a.runners] == [r.selection_id for r in b.runners] == [11, 12, 13]
        for ra, rb in zip(a.runners, b.runners, strict=True):
            where = f"update {i} runner {ra.selection_id}"
            assert same_price(ra.sp_near, rb.sp.near_price), where
            assert same_price(ra.sp_far, rb.sp.far_price), where
            assert ladder(ra.sp_back_stake_taken) == ladder(rb.sp.back_stake_taken), where
            assert ladder(ra.sp_lay_liability_taken) == ladder(rb.sp.lay_liability_taken), where
            assert ladder(ra.available_to_back) == ladder(rb.ex.available_to_back), where
            assert ladder(ra.traded_volume) == ladder(rb.ex.traded_volume), where
            assert (ra.last_price_traded, ra.total_matched) == (rb.last_price_traded, rb.total_matched), where
            if ra.sp_back_stake_taken or ra.sp_lay_liability_taken:
                seen_sp.add(ra.selection_id)
    # what the lines were written to show, so the comparison above is not vacuous
    first, second, third = ours[0].runners, ours[1].runners, ours[2].runners
    assert first[0].sp_lay_liability_taken == ((2.0, 10.5), (1.01, 50.0))  # spb, best (highest) first
    assert first[0].sp_back_stake_taken == ((4.0, 2.0), (1000.0, 5.0))  # spl, ascending
    assert second[0].sp_lay_liability_taken == ((2.0, 11.0),) and second[0].sp_near == 3.3
    assert third[0].sp_back_stake_taken == () and third[1].sp_lay_liability_taken == ()
    assert first[1].sp_near is not None and math.isnan(first[1].sp_near) and first[1].sp_far == math.inf
    assert (first[2].sp_near, first[2].sp_far, first[2].sp_back_stake_taken, first[2].sp_lay_liability_taken) == (
        None, None, (), ())
    assert seen_sp == {11, 12, 13}


def test_both_twins_give_the_same_books_for_starting_prices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Book objects and encoded books from the C runner state and the Python twin, line by line, compared
    as the codec's bytes (the C twin keeps floats where JSON had ints; a NaN equals nothing)."""
    if cache.FAST is None:
        pytest.skip("the C runner state is not built (or TICKTAPE_NO_CEXT=1)")
    codec = default_codec()

    def books(encode_books: bool) -> list[bytes]:
        decoder = StreamDecoder(encode_books=encode_books)
        return [e.data if isinstance(e, Encoded) else codec.encode(e)
                for line in stream_lines() for _, e in decoder.decode_line(line)]
    c = books(False)
    assert books(True) == c
    monkeypatch.setattr(cache, "FAST", None)
    assert books(False) == books(True) == c


def test_only_the_starting_prices_may_be_non_finite() -> None:
    """The finite rule (tests/unit/test_finite_numbers.py) with the schema's exception: sp_near/sp_far are
    marked `ticktape.nonfinite` (Betfair's NaN/Infinity words); a runner's other numbers are not."""
    codec = default_codec()
    decoder = StreamDecoder()
    [(_, _), (_, book)] = decoder.decode_line(stream_lines()[0])
    data = to_python(book)
    data["runners"][0] = {**data["runners"][0], "sp_near": math.nan, "sp_far": -math.inf}
    got = codec.from_dict("MarketBook", data)
    assert math.isnan(got.runners[0].sp_near) and got.runners[0].sp_far == -math.inf
    data["runners"][0] = {**data["runners"][0], "total_matched": math.inf}
    with pytest.raises(ValidationError, match="not a finite number"):
        codec.from_dict("MarketBook", data)
