"""The C decoder's ladder cache: an array of two-double records (a Betfair ladder) whose encoded bytes equal
those of one decoded recently comes back as the same tuple. Invisible to callers apart from identity: every
value here is compared with the pure-Python engine (`ticktape.avro_program`) and fastavro, on the recorded
markets, on books where one level of one runner changed, and on malformed and truncated bytes.

Runs where the C engine is built; with TICKTAPE_NO_CEXT=1 there is no cache to test and these skip.
"""

from __future__ import annotations

import io
import struct
from typing import Any, NamedTuple

import fastavro
import pytest

from tests.shared_data import BETFAIR
from ticktape import avro_program as ap
from ticktape import codec as codec_mod
from ticktape.codec import body_decoder, body_encoder, to_python
from ticktape.events import MarketBook, PriceSize, RunnerBook
from ticktape.schemas import registry

if codec_mod.VM is None:
    pytest.skip("the C engine is not built (or TICKTAPE_NO_CEXT=1): no ladder cache", allow_module_level=True)
VM = codec_mod.VM

LADDER = (ap.ARRAY, (ap.RECORD, PriceSize, ((ap.DOUBLE,), (ap.DOUBLE,))))
SCHEMA = registry().current["MarketBook"].schema
PROGRAM = ap.compile_schema(SCHEMA, codec_mod.RECORD_TYPES)
PARSED = fastavro.parse_schema(SCHEMA)


def c_decode(prog: ap.Program, data: bytes) -> Any:
    value, end = VM.decode(prog, data)
    assert end == len(data)
    return value


def py_decode(prog: ap.Program, data: bytes) -> Any:
    value, end = ap.make_decoder(prog)(data, 0)
    assert end == len(data)
    return value


def outcome(decode: Any, prog: ap.Program, data: bytes) -> str:
    """The value's repr (exact for NaN and signed zeros, unlike ==), or that it was refused."""
    try:
        return repr(decode(prog, data))
    except ValueError:
        return "ValueError"


def ladder_bytes(levels: list[tuple[float, float]]) -> bytes:
    """A one-block ladder as Avro writes it: zigzag count, 16 bytes a level, the 0 that ends it."""
    assert 0 < len(levels) < 64
    return bytes([2 * len(levels)]) + b"".join(struct.pack("<dd", p, s) for p, s in levels) + b"\x00"


def recorded_books() -> list[MarketBook]:
    from producers.betfair.parse import StreamDecoder

    books: list[MarketBook] = []
    for market in ("1.197931750", "1.197931751"):
        decoder = StreamDecoder()
        for i, line in enumerate((BETFAIR / market).read_bytes().splitlines()):
            if line.strip():
                books.extend(e for _, e in decoder.decode_line(line, i) if isinstance(e, MarketBook))
    return books


@pytest.mark.shared_data("betfair/1.197931750", "betfair/1.197931751")
def test_recorded_markets_decode_alike_on_the_c_python_and_fastavro_readers() -> None:
    books = recorded_books()
    encode = body_encoder(PROGRAM, "c")
    encoded = []
    for book in books:
        out = bytearray()
        encode(book, out)
        encoded.append(bytes(out))
    decode_py = body_decoder(PROGRAM, "python")
    for _round in range(2):  # the second round finds every ladder in the cache (if it is still there)
        shared = 0
        previous: MarketBook | None = None
        for data in encoded:
            got = c_decode(PROGRAM, data)
            assert repr(got) == repr(decode_py(data, 0)[0])
            assert _encode(got) == data  # what was written (the parser's ints come back as floats, so not ==)
            assert to_python(got) == to_python(fastavro.schemaless_reader(io.BytesIO(data), PARSED, None))
            if previous is not None and previous.market_id == got.market_id:
                shared += sum(a.traded_volume is b.traded_volume
                              for a, b in zip(previous.runners, got.runners, strict=False) if a.traded_volume)
            previous = got
        # most traded-volume ladders do not change from one book to the next: those are the same tuple
        assert shared > len(books)


def test_one_level_of_one_runner_changed() -> None:
    def runner(sid: int, shift: float) -> RunnerBook:
        back = tuple(PriceSize(2.0 + k / 100 + shift, 10.0 + k) for k in range(30))
        lay = tuple(PriceSize(3.0 + k / 100 + shift, 5.0 + k) for k in range(20))
        traded = tuple(PriceSize(2.5 + k / 100 + shift, 1.0 + k) for k in range(12))
        return RunnerBook(selection_id=sid, handicap=0.0, status="ACTIVE", last_price_traded=2.5, total_matched=100.0,
                          available_to_back=back, available_to_lay=lay, traded_volume=traded, sp_near=None,
                          sp_far=None, sp_back_stake_taken=(), sp_lay_liability_taken=())

    def book(runners: list[RunnerBook]) -> MarketBook:
        return MarketBook(market_id="1.5", ts_event=1, ts_recv=2, status="OPEN", in_play=False, bet_delay=0,
                          total_matched=600.0, version=7, complete=True, cross_matching=True,
                          number_of_active_runners=len(runners), runners=tuple(runners))

    runners = [runner(i, i / 10) for i in range(6)]
    before = book(runners)
    changed_level = runners[3].available_to_back[17]._replace(size=11.5)
    back = list(runners[3].available_to_back)
    back[17] = changed_level
    after = book([*runners[:3], runners[3]._replace(available_to_back=tuple(back)), *runners[4:]])
    first = c_decode(PROGRAM, _encode(before))
    second = c_decode(PROGRAM, _encode(after))
    assert second == after and repr(second) == repr(py_decode(PROGRAM, _encode(after)))
    assert first == before
    assert second.runners[3].available_to_back != first.runners[3].available_to_back
    assert second.runners[3].available_to_back[17] == changed_level
    assert second.runners[3].available_to_lay is first.runners[3].available_to_lay
    for k in (0, 1, 2, 4, 5):
        for field in ("available_to_back", "available_to_lay", "traded_volume"):
            assert getattr(second.runners[k], field) is getattr(first.runners[k], field)


def _encode(value: Any) -> bytes:
    out = bytearray()
    body_encoder(PROGRAM, "c")(value, out)
    return bytes(out)


def test_ladders_alike_at_both_ends_but_not_between_are_not_confused() -> None:
    """The slot is picked from the first and last levels and the length only: the bytes between must be
    compared too (a hash alone would hand out the first ladder for the second)."""
    a = [(2.0, 10.0), (2.02, 5.0), (2.04, 7.0)]
    b = [(2.0, 10.0), (2.02, 6.0), (2.04, 7.0)]
    first = c_decode(LADDER, ladder_bytes(a))
    second = c_decode(LADDER, ladder_bytes(b))
    assert [tuple(x) for x in first] == a and [tuple(x) for x in second] == b
    assert second is not first
    again = c_decode(LADDER, ladder_bytes(a))  # b took a's slot: a is decoded again, not taken for b
    assert [tuple(x) for x in again] == a and again is not second


def test_same_bytes_of_another_record_class_are_not_shared() -> None:
    class Level(NamedTuple):
        price: float
        size: float

    other = (ap.ARRAY, (ap.RECORD, Level, ((ap.DOUBLE,), (ap.DOUBLE,))))
    data = ladder_bytes([(1.5, 2.0), (1.6, 3.0)])
    ours = c_decode(LADDER, data)
    theirs = c_decode(other, data)
    assert type(ours[0]) is PriceSize and type(theirs[0]) is Level and ours == theirs


def test_nan_and_signed_zero_levels_come_back_bit_for_bit() -> None:
    data = ladder_bytes([(float("nan"), -0.0), (0.0, float("inf"))])
    for _ in range(2):  # decoded, then from the cache
        assert outcome(c_decode, LADDER, data) == outcome(py_decode, LADDER, data) == \
            "(PriceSize(price=nan, size=-0.0), PriceSize(price=0.0, size=inf))"


@pytest.mark.parametrize("cut", range(0, 50))
def test_truncated_ladders_are_refused_like_the_python_engine_even_when_the_whole_one_is_cached(cut: int) -> None:
    data = ladder_bytes([(2.0, 10.0), (2.02, 5.0), (2.04, 7.0)])
    c_decode(LADDER, data)  # cached whole
    assert outcome(c_decode, LADDER, data[:cut]) == outcome(py_decode, LADDER, data[:cut])


def test_malformed_ladders_are_refused_or_read_like_the_python_engine() -> None:
    levels = [(2.0, 10.0), (2.02, 5.0), (2.04, 7.0)]
    good = ladder_bytes(levels)
    body = good[1:-1]
    cases = {
        "cached first": good,
        "no end marker": good[:-1] + b"\x02",  # another block of one level follows... cut short
        "a second block": good[:-1] + bytes([2]) + struct.pack("<dd", 2.06, 1.0) + b"\x00",
        "sized block": bytes([5]) + bytes([96]) + body + b"\x00",  # count -3, then its byte size (48)
        "count too big": bytes([8]) + body + b"\x00",
        "negative size": bytes([5]) + bytes([1]) + body + b"\x00",
        "two-byte count": bytes([0x86, 0x00]) + body + b"\x00",  # 3, in a padded varint
        "trailing byte": good + b"\x00",
    }
    for name, data in cases.items():
        for _ in range(2):  # the second time, whatever was cached is in play
            got_c = outcome(lambda p, d: VM.decode(p, d)[0], LADDER, data)
            got_py = outcome(lambda p, d: ap.make_decoder(p)(d, 0)[0], LADDER, data)
            assert got_c == got_py, name


def test_long_ladders_are_decoded_but_not_cached() -> None:
    """Spans over the cache's byte bound (4096) take the general path every time: memory stays bounded."""
    long = [(1.01 + k / 100, float(k)) for k in range(300)]
    data = bytes([0xD8, 0x04]) + b"".join(struct.pack("<dd", p, s) for p, s in long) + b"\x00"  # count 300
    first = c_decode(LADDER, data)
    again = c_decode(LADDER, data)
    assert first == again == tuple(PriceSize(*x) for x in long) and first is not again
    assert repr(first) == repr(py_decode(LADDER, data))


def test_a_ladder_whose_levels_run_python_code_when_freed_is_safe_to_evict() -> None:
    """Evicting an entry frees its tuple, whose levels' __del__ here decodes more ladders (into the cache
    being updated): the entry is whole before the old tuple goes. The sanitizer run holds this to memory
    safety; here every value must still be right."""
    seen: list[int] = []

    class Level(NamedTuple):
        price: float
        size: float

        def __del__(self) -> None:
            if len(seen) < 2000:
                seen.append(1)
                c_decode(prog, ladder_bytes([(self.size, self.price), (9.0, float(len(seen)))]))

    prog = (ap.ARRAY, (ap.RECORD, Level, ((ap.DOUBLE,), (ap.DOUBLE,))))
    for k in range(3000):
        levels = [(float(k % 7), float(k)), (5.0, float(k % 11))]
        assert [tuple(x) for x in c_decode(prog, ladder_bytes(levels))] == levels
    assert seen
