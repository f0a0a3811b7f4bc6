"""The C runner state (`producers.betfair._ladders`) against its Python twin (`cache.RunnerCache`), and
the C MarketBook encoder against the codec: random ladder deltas, the same books, the same bytes.

The C module must be built: set TICKTAPE_NO_CEXT=1 to skip these tests on purpose.
"""

from __future__ import annotations

import math
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producers.betfair import cache
from producers.betfair.cache import MarketCache, RunnerCache
from ticktape.codec import default_codec
from ticktape.errors import EncodeError
from ticktape.events import MarketBook, PriceSize, RunnerBook

if os.environ.get("TICKTAPE_NO_CEXT") == "1":
    pytest.skip("C extensions disabled by TICKTAPE_NO_CEXT=1", allow_module_level=True)
from producers.betfair import _ladders  # type: ignore[attr-defined]

PRICE_LADDERS = ("atb", "atl", "trd", "spb", "spl")
POSITION_LADDERS = ("batb", "batl", "bdatb", "bdatl")

# Few distinct prices so deltas hit existing levels (replace, delete) as often as new ones;
# whole numbers both as int and float, as Betfair's JSON sends them.
prices = st.sampled_from([1.01, 1.5, 2, 2.0, 2.02, 3.45, 10, 1000, 1000.0])
sizes = st.one_of(st.just(0), st.just(0.0), st.sampled_from([1, 2.5, 13002, 0.01, 99.99]))
price_rows = st.lists(st.tuples(prices, sizes).map(list), max_size=6)
position_rows = st.lists(st.tuples(st.integers(0, 9), prices, sizes).map(list), max_size=4)


@st.composite
def runner_changes(draw: Any) -> dict[str, Any]:
    rc: dict[str, Any] = {"id": 7}
    for name in draw(st.lists(st.sampled_from(PRICE_LADDERS + POSITION_LADDERS), unique=True, max_size=4)):
        rc[name] = draw(position_rows if name in POSITION_LADDERS else price_rows)
    sp = st.one_of(prices, st.sampled_from(["NaN", "Infinity", "-Infinity"]))  # words Betfair sends
    for name, values in (("ltp", prices), ("tv", st.one_of(prices, st.just(0))), ("spn", sp), ("spf", sp)):
        if draw(st.booleans()):
            rc[name] = draw(values)
    return rc


status_changes = st.sampled_from([None, "ACTIVE", "REMOVED", ""]).map(lambda s: ("status", s))
steps = st.lists(st.one_of(runner_changes(), status_changes), max_size=25)


def _apply(runner: Any, step: Any) -> None:
    if isinstance(step, tuple):
        runner.set_status(step[1])
    else:
        runner.apply(step)


def _plain(book: RunnerBook) -> tuple[Any, ...]:
    """A RunnerBook with its levels as (float, float): the C twin keeps floats where JSON had ints;
    a NaN starting price as the word (NaN equals nothing)."""
    def levels(side: tuple[PriceSize, ...]) -> list[tuple[float, float]]:
        return [(float(p), float(s)) for p, s in side]

    def sp(x: Any) -> Any:
        return "NaN" if isinstance(x, float) and math.isnan(x) else x
    return (*book[:5], *map(levels, book[5:8]), sp(book.sp_near), sp(book.sp_far),
            *map(levels, book[10:]))


@settings(max_examples=300, deadline=None)
@given(steps)
def test_c_runner_builds_the_same_books_and_ladders_as_the_python_twin(steps: list[Any]) -> None:
    c, py = _ladders.Runner(7, 0.0), RunnerCache(7, 0.0)
    for step in steps:
        _apply(c, step)
        _apply(py, step)
        assert _plain(c.runner_book()) == _plain(py.runner_book())
        for name in PRICE_LADDERS + POSITION_LADDERS:
            assert [tuple(lv) for lv in c.ladder(name)] == [tuple(lv) for lv in py.ladder(name)], name
        assert (c.status, c.ltp, c.tv) == (py.status, py.ltp, py.tv)
        assert repr((c.spn, c.spf)) == repr((py.spn, py.spf))  # nan == nan only as text


@settings(max_examples=200, deadline=None)
@given(st.lists(runner_changes(), min_size=1, max_size=10), st.integers(0, 2**62), st.booleans())
def test_c_book_encoder_writes_exactly_the_codecs_bytes(changes: list[dict[str, Any]], pt: int, in_play: bool) -> None:
    if cache.FAST is None:
        pytest.fail("the C twin is not in use: its start-up self-check failed")
    market = MarketCache("1.234")
    market.fold({"id": "1.234", "marketDefinition": {"status": "OPEN", "inPlay": in_play, "betDelay": 5,
                                                     "runners": [{"id": 7, "status": "ACTIVE"}, {"id": 8}]}})
    codec = default_codec()
    for i, rc in enumerate(changes):
        market.fold({"id": "1.234", "tv": i, "rc": [rc]})
        book = market.book(pt + i, pt)
        assert market.encoded_book(pt + i, pt) == codec.encode(book)
        encoded = market.encoded_book(pt + i, pt)
        assert codec.encode(codec.decode(encoded)) == encoded  # (a NaN starting price equals no book)


def test_levels_are_sorted_best_first_and_size_zero_deletes() -> None:
    r = _ladders.Runner(1, 0.0)
    r.apply({"atb": [[2, 1], [3, 1], [2.5, 4]], "atl": [[3.5, 1], [3.1, 2]], "trd": [[2, 5], [1.9, 1]],
             "batl": [[1, 3.2, 1], [0, 3.1, 2]]})
    assert r.ladder("atb") == (PriceSize(3.0, 1.0), PriceSize(2.5, 4.0), PriceSize(2.0, 1.0))  # highest first
    assert r.ladder("atl") == (PriceSize(3.1, 2.0), PriceSize(3.5, 1.0))  # lowest first
    assert r.ladder("trd") == (PriceSize(1.9, 1.0), PriceSize(2.0, 5.0))
    assert r.ladder("batl") == (PriceSize(3.1, 2.0), PriceSize(3.2, 1.0))  # by position
    r.apply({"atb": [[2.5, 0], [9, 0]], "trd": []})  # delete one, deleting a missing level is no-op; clear trd
    assert r.ladder("atb") == (PriceSize(3.0, 1.0), PriceSize(2.0, 1.0)) and r.ladder("trd") == ()
    assert all(type(lv) is PriceSize and type(lv.price) is float for lv in r.ladder("atb"))


def test_a_book_is_reused_until_the_runner_changes() -> None:
    r = _ladders.Runner(1, 0.0)
    r.apply({"atb": [[2, 1]], "ltp": 2})
    book = r.runner_book()
    assert isinstance(book, RunnerBook) and r.runner_book() is book
    assert (book.status, book.last_price_traded, book.available_to_back) == ("UNKNOWN", 2, (PriceSize(2.0, 1.0),))
    r.set_status("ACTIVE")
    assert r.runner_book() is not book and r.runner_book().status == "ACTIVE"
    before = r.runner_book()
    r.apply({"atl": [[3, 1]]})
    after = r.runner_book()
    assert after.available_to_back is before.available_to_back  # an unchanged ladder is not rebuilt


@pytest.mark.parametrize("rc, error, message", [
    ({"atb": [[2, "x"]]}, TypeError, "atb row 0: size must be a number, got str"),
    ({"atl": [[2, 1], [3]]}, ValueError, "atl row 1: expected 2 values, got 1"),
    ({"batb": [[0, 2, 1], [1, 2]]}, ValueError, "batb row 1: expected 3 values, got 2"),
    ({"trd": [5]}, TypeError, "trd row 0: expected a list, got int"),
    ({"atb": 5}, TypeError, "atb: expected a list of rows, got int"),
    ([], TypeError, "runner change must be a JSON object"),
])
def test_malformed_changes_raise_errors_naming_the_ladder_and_row(rc: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        _ladders.Runner(1, 0.0).apply(rc)


@pytest.mark.usefixtures("runner_impl")
def test_encoder_rejects_values_the_schema_cannot_hold() -> None:
    """An EncodeError naming the field, from the C encoder as from the codec (the Python twin's path)."""
    market = MarketCache("1.1")
    market.fold({"id": "1.1", "marketDefinition": {"status": "OPEN", "betDelay": 2**40}})
    with pytest.raises(EncodeError, match="bet_delay"):
        market.encoded_book(1, 1)
    market.fold({"id": "1.1", "marketDefinition": {"status": "OPEN"}, "rc": [{"id": 3, "ltp": "2.0"}]})
    with pytest.raises(EncodeError, match=r"runner ltp: expected a number, got str|last_price_traded"):
        market.encoded_book(1, 1)


def test_the_c_twins_are_in_use_when_built() -> None:
    assert cache.FAST is _ladders
    market = MarketCache("1.1")
    book = market.apply({"id": "1.1", "rc": [{"id": 3, "atb": [[2, 1]]}, {"id": 3, "hc": 1.5}]}, 1, 1)
    assert all(type(r) is _ladders.Runner for r in market.runner_list)
    assert list(market.runners) == [(3, 0), (3, 1.5)]  # runners are keyed by (id, handicap)
    assert isinstance(book, MarketBook) and book.runners[0].available_to_back == (PriceSize(2.0, 1.0),)
    with pytest.raises(KeyError, match="id"):
        market.fold({"id": "1.1", "rc": [{"atb": [[2, 1]]}]})
    with pytest.raises(TypeError, match="runner change must be a JSON object"):
        market.fold({"id": "1.1", "rc": [[1]]})


# --- stream lines parsed in C: split_market_line ---------------------------------------------------

def _number_texts() -> Any:
    """JSON numbers as Betfair writes them and as other writers might: ints, decimals, exponents,
    signed zeros, long mantissas (beyond the fast path: the line goes to orjson)."""
    floats = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
    return st.one_of(
        st.integers(-10**6, 10**6).map(str),
        floats.map(repr),
        floats.map(lambda x: f"{x:.2f}"),
        st.sampled_from(["0", "-0", "-0.0", "0.0", "1e2", "1.5E-3", "2.50", "0.000123", "1000",
                         "1.0000000000000002", "12345678901234567", "9007199254740993", "1e400", "1e-400"]),
    )


@st.composite
def market_lines(draw: Any) -> bytes:
    """An mcm line with random runner changes, written with random spacing."""
    n = draw(_number_texts())
    rcs = []
    for rc in draw(st.lists(runner_changes(), min_size=1, max_size=3)):
        parts = [f'"id":{rc["id"] + draw(st.integers(0, 2))}']
        if draw(st.booleans()):
            parts.append(f'"hc":{draw(_number_texts())}')
        for key, value in rc.items():
            if key == "id":
                continue
            if isinstance(value, list):
                rows = ",".join("[" + ",".join(draw(st.sampled_from([repr(v), n]))
                                               if isinstance(v, float) else str(v) for v in row) + "]"
                                for row in value)
                parts.append(f'"{key}":[{rows}]')
            else:
                parts.append(f'"{key}":{draw(st.sampled_from([str(value), "null", n]))}')
        rcs.append("{" + ",".join(parts) + "}")
    space = draw(st.sampled_from(["", " ", "\n "]))
    mc = f'{{"id":"1.5",{space}"rc":[{(","+space).join(rcs)}],"tv":{n}}}'
    return f'{{"op":"mcm","clk":"AB\\"C","pt":1700000000000,"mc":[{mc}]}}'.encode()


def _fold_both(line: bytes) -> tuple[Any, Any]:
    """(outcome with orjson parsing the whole line, outcome with split_market_line); an outcome is
    the book's bytes, or the exception's type when the line is refused."""
    import orjson

    from producers.betfair.parse import _join_split

    outcomes = []
    for split in (None, _ladders.split_market_line(line)):
        market = MarketCache("1.5")
        try:
            data = orjson.loads(line) if split is None else _join_split(split[0], split[1], line)
            for mc in data["mc"]:
                market.fold(mc)
            outcomes.append(market.encoded_book(1, 1))
        except Exception as exc:  # the outcome compared is which exception
            outcomes.append(type(exc))
    return outcomes[0], outcomes[1]


@settings(max_examples=400, deadline=None)
@given(market_lines())
def test_lines_parsed_in_c_give_the_books_orjson_parsing_gives(line: bytes) -> None:
    whole, split = _fold_both(line)
    assert split == whole


@settings(max_examples=300, deadline=None)
@given(market_lines(), st.data())
def test_damaged_lines_are_refused_or_taken_alike(line: bytes, data: Any) -> None:
    """Cut, or a byte changed anywhere: the fast path refuses what orjson refuses (same error), and
    takes only what gives the same book."""
    i = data.draw(st.integers(0, len(line) - 1))
    damaged = data.draw(st.sampled_from([line[:i], line[:i] + data.draw(st.sampled_from(
        [b"x", b"[", b"]", b"{", b"}", b",", b'"', b"\\", b"-", b"0", b".", b"e", b" "])) + line[i + 1:]]))
    whole, split = _fold_both(damaged)
    assert split == whole


def test_split_market_line_takes_ladders_and_leaves_the_rest_to_orjson() -> None:
    line = b'{"op":"mcm","pt":1,"mc":[{"id":"1.5","rc":[{"id":7,"atb":[[2.5,1]]}],"tv":3},{"id":"1.6"}]}'
    reduced, changes = _ladders.split_market_line(line)
    assert reduced == b'{"op":"mcm","pt":1,"mc":[{"id":"1.5","rc":0,"tv":3},{"id":"1.6"}]}'
    assert len(changes) == 1 and len(changes[0]) == 1
    for not_taken in (
        b'{"op":"mcm","pt":1,"mc":[{"id":"1.5"}]}',                              # no ladders: orjson alone
        b'{"op":"ocm","pt":1,"oc":[]}',
        b'{"op":"mcm","mc":[{"rc":[{"id":7,"atb":[[2.5,1]],"atb":[]}]}]}',       # a key twice
        b'{"op":"mcm","mc":[{"rc":[{"id":7,"xyz":1}]}]}',                        # an unknown key
        b'{"op":"mcm","mc":[{"rc":[{"id":"7"}]}]}',                              # an id not an int
        b'{"op":"mcm","mc":[{"rc":[{"id":7,"atb":[[2.5,1,3]]}]}]}',              # a row of 3
        b'{"op":"mcm","mc":[{"rc":[{"id":7,"ltp":1.00000000000000001}]}]}',      # beyond the exact path
        b'{"op":"mcm","mc":[{"r\\u0063":[{"id":7}]}]}',                          # an escaped key
        b'{"op":"mcm","mc":[{"rc":[{"id":7}]}]',                                 # cut short
    ):
        assert _ladders.split_market_line(not_taken) is None, not_taken
