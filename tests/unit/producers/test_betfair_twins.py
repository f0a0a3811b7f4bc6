"""The Betfair runner ladders' two twins on malformed stream lines: the C one (`producers.betfair._ladders`:
`split_market_line`, `apply_changes`, `encode_book`) and the pure-Python one (`cache.RunnerCache`, the codec).
For each malformed runner change, in a fresh decoder, an image line, the bad line and a good line must give
the same books from both, or the same error class, line by line (an error that leaves different state behind
shows up on the good line after it). The importer makes a dead letter of each such error, on both twins.

Runs where the C twin is built (with TICKTAPE_NO_CEXT=1 there is nothing to compare the Python one with).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from producers.betfair import cache
from producers.betfair.historical import import_file
from producers.betfair.parse import StreamDecoder
from ticktape.codec import default_codec
from ticktape.errors import EncodeError
from ticktape.tape import open_tape
from ticktape.tape.base import Encoded
from ticktape.timeutil import VirtualClock

if cache.FAST is None:
    pytest.skip("the C runner state is not built (or TICKTAPE_NO_CEXT=1)", allow_module_level=True)


def mcm(pt: int, rc: Any, **mc: Any) -> bytes:
    return orjson.dumps({"op": "mcm", "pt": pt, "mc": [{"id": "1.1", **mc, "rc": rc}]})


IMAGE = mcm(1000, [{"id": 1, "atb": [[2, 1], [3, 2]], "atl": [[4, 1]], "batb": [[0, 3, 2]], "trd": [[3, 5]],
                    "ltp": 3, "tv": 5}],
            marketDefinition={"status": "OPEN", "betDelay": 0, "runners": [{"id": 1, "status": "ACTIVE"}]})
GOOD = mcm(3000, [{"id": 1, "atb": [[2.5, 4]], "atl": [[4.5, 1]], "ltp": 2.5}])

BAD_CHANGES: dict[str, Any] = {
    "size a string": [{"id": 1, "atb": [[2, "x"]]}],
    "a bad row after a good one": [{"id": 1, "atb": [[2.25, 1], [2, "x"], [9, 9]]}],
    "price null": [{"id": 1, "atl": [[None, 1]]}],
    "size true": [{"id": 1, "atb": [[2, True]]}],
    "price false": [{"id": 1, "atb": [[False, 1]]}],
    "position a string": [{"id": 1, "batb": [["0", 2, 1]]}],
    "row too short": [{"id": 1, "atb": [[2]]}],
    "row too long": [{"id": 1, "atb": [[2, 1, 3]]}],
    "best-offer row too short": [{"id": 1, "batb": [[0, 2, 1], [1, 2]]}],
    "ladder a number": [{"id": 1, "atb": 5}],
    "ladder an object": [{"id": 1, "atb": {"2": 1}}],
    "row a number": [{"id": 1, "atb": [5]}],
    "row a string": [{"id": 1, "atb": ["ab"]}],
    "ltp a string": [{"id": 1, "ltp": "x"}],
    "tv null": [{"id": 1, "tv": None}],
    "no id": [{"atb": [[2, 1]]}],
    "id a string": [{"id": "7", "atb": [[2, 1]]}],
    "handicap a string": [{"id": 1, "hc": "x", "atb": [[2, 1]]}],
    "change a number": [5],
    "changes an object": {"id": 1},
    "changes a number": 5,
    "spb size a string": [{"id": 1, "spb": [[1.5, "x"]]}],
    "spl row too short": [{"id": 1, "spl": [[4]]}],
    "spl a number": [{"id": 1, "spl": 4}],
    "spn a word Betfair does not send": [{"id": 1, "spn": "nan"}],
    "spf an object": [{"id": 1, "spf": {"x": 1}}],
    "spn true": [{"id": 1, "spn": True}],
}


def outcome(decoder: StreamDecoder, line: bytes) -> tuple[Any, ...]:
    """A line's events (encoded books decoded, for comparison) or the class of what it raised."""
    try:
        pairs = decoder.decode_line(line)
    except Exception as exc:  # compared by class
        return ("error", type(exc).__name__)
    codec = default_codec()
    return ("ok", [(topic, codec.decode(e.data) if isinstance(e, Encoded) else e) for topic, e in pairs])


def run(lines: list[bytes]) -> list[tuple[Any, ...]]:
    decoder = StreamDecoder(encode_books=True)
    return [outcome(decoder, line) for line in lines]


@pytest.mark.parametrize("case", sorted(BAD_CHANGES))
def test_malformed_runner_changes_have_the_same_outcome_on_both_twins(case: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [IMAGE, mcm(2000, BAD_CHANGES[case]), GOOD]
    c = run(lines)
    monkeypatch.setattr(cache, "FAST", None)
    py = run(lines)
    assert c == py
    assert c[0][0] == "ok" and c[1][0] == "error", c


def test_a_key_given_twice_is_read_as_orjson_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last one wins (split_market_line does not take such a line: orjson parses it, for both twins)."""
    twice = b'{"op":"mcm","pt":2000,"mc":[{"id":"1.1","rc":[{"id":1,"atb":[[2,"x"]],"atb":[[2,7]]}]}]}'
    c = run([IMAGE, twice, GOOD])
    monkeypatch.setattr(cache, "FAST", None)
    assert run([IMAGE, twice, GOOD]) == c
    assert c[1][0] == "ok" and c[1][1][0][1].runners[0].available_to_back[1] == (2.0, 7.0)


def test_the_twins_keep_the_rows_before_a_bad_one() -> None:
    """Both apply the rows before a malformed one (C converts and applies row by row): same state after."""
    r, p = cache.FAST.Runner(1, 0.0), cache.RunnerCache(1, 0.0)  # type: ignore[union-attr]
    for runner in (r, p):
        with pytest.raises(TypeError, match="atb row 1: size must be a number, got str"):
            runner.apply({"atb": [[2.25, 1], [2, "x"], [9, 9]]})
    assert [tuple(map(float, lv)) for lv in p.ladder("atb")] == [tuple(lv) for lv in r.ladder("atb")] == [(2.25, 1.0)]


@pytest.mark.usefixtures("runner_impl")
def test_an_unencodable_book_is_a_dead_letter_on_both_twins(tmp_path: Path) -> None:
    """A string ltp makes a book the schema cannot hold: an EncodeError from either twin (the Python twin's
    codec raised it and stopped the import; the C twin raised TypeError), a dead letter for the importer."""
    path = tmp_path / "1.1"
    path.write_bytes(b"\n".join([IMAGE, mcm(2000, [{"id": 1, "ltp": "x"}]), GOOD]) + b"\n")
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    summary = import_file(tape, path, clock=VirtualClock(1))
    tape.close()
    assert summary.dead_letters == 1
    with pytest.raises(EncodeError, match=r"ltp|last_price_traded"):
        market = cache.MarketCache("1.1")
        market.fold({"id": "1.1", "rc": [{"id": 3, "ltp": "2.0"}]})
        market.encoded_book(1, 1)
