"""The two codec engines on malformed bytes: the C one (`ticktape._avrovm`) and its pure-Python twin
(`ticktape.avro_program`) must accept and refuse the same input. Both decode it to equal values, or both
raise: ValueError from a body decoder, DecodeError from the codec (the class is compared, not the words).

Runs where the C engine is built; with TICKTAPE_NO_CEXT=1 only the Python engine exists and these skip.
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import strategy_for
from ticktape import avro_program as ap
from ticktape import codec as codec_mod
from ticktape.codec import Codec
from ticktape.errors import DecodeError
from ticktape.events import MarketBook, PriceSize, RunnerBook, Trade
from ticktape.schemas import registry

if codec_mod.VM is None:
    pytest.skip("the C engine is not built (or TICKTAPE_NO_CEXT=1): nothing to compare the Python one with",
                allow_module_level=True)
VM = codec_mod.VM


class Pair(NamedTuple):
    a: float
    b: float


class Rec(NamedTuple):
    flag: bool
    i: int
    n: int
    f: float
    d: float
    raw: bytes
    text: str
    side: str
    fx: bytes
    opt: str | None


SIDES = ("BUY", "SELL", "NONE")
ENUM = (ap.ENUM, SIDES, {s: i for i, s in enumerate(SIDES)})
PAIR = (ap.RECORD, Pair, ((ap.DOUBLE,), (ap.DOUBLE,)))
REC = (ap.RECORD, Rec, ((ap.BOOLEAN,), (ap.INT,), (ap.LONG,), (ap.FLOAT,), (ap.DOUBLE,), (ap.BYTES,), (ap.STRING,),
                        ENUM, (ap.FIXED, 3), (ap.UNION, ((ap.NULL,), (ap.STRING,)), None)))
PROGRAMS: dict[str, ap.Program] = {
    "null": (ap.NULL,),
    "boolean": (ap.BOOLEAN,),
    "int": (ap.INT,),
    "long": (ap.LONG,),
    "float": (ap.FLOAT,),
    "double": (ap.DOUBLE,),
    "bytes": (ap.BYTES,),
    "string": (ap.STRING,),
    "enum": ENUM,
    "fixed": (ap.FIXED, 4),
    "array<long>": (ap.ARRAY, (ap.LONG,)),
    "array<null>": (ap.ARRAY, (ap.NULL,)),
    "array<empty record>": (ap.ARRAY, (ap.RECORD, None, ())),
    "array<pair>": (ap.ARRAY, PAIR),
    "map<int>": (ap.MAP, (ap.INT,)),
    "union": (ap.UNION, ((ap.NULL,), (ap.STRING,), (ap.LONG,)), None),
    "record": REC,
    "array<record>": (ap.ARRAY, REC),
}


def zz(n: int) -> bytes:
    """n as an Avro long (zig-zag varint)."""
    out = bytearray()
    ap._write_long(n, out)
    return bytes(out)


def outcome(decode: Callable[[bytes, int], tuple[Any, int]], data: bytes) -> tuple[Any, ...]:
    """What a body decoder makes of data: ("ok", repr of the value, end) or ("error", exception class)."""
    try:
        value, end = decode(data, 0)
    except Exception as exc:  # compared by class: ValueError from both engines
        return ("error", type(exc).__name__)
    return ("ok", repr(value), end)  # repr: NaN equals NaN, 1 differs from 1.0, a class shows its name


def both(prog: ap.Program, data: bytes) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(C outcome, Python outcome) of one program on data."""
    return outcome(lambda b, p: VM.decode(prog, b, p), data), outcome(ap.make_decoder(prog), data)


# --- named malformed inputs: (program, bytes, what both engines must do) ------------------------

MALFORMED = [
    # booleans are one byte, 0 or 1
    ("boolean", b"\x02", "error"),
    ("boolean", b"\xff", "error"),
    ("boolean", b"", "error"),
    ("boolean", b"\x01", "ok"),
    # ints fit in 32 bits, longs in 64; varints are at most 10 bytes
    ("int", zz(1 << 31), "error"),
    ("int", zz(-(1 << 31) - 1), "error"),
    ("int", zz((1 << 31) - 1), "ok"),
    ("int", zz(-(1 << 31)), "ok"),
    ("long", zz((1 << 63) - 1), "ok"),
    ("long", zz(-(1 << 63)), "ok"),
    ("long", b"\xff" * 9 + b"\x01", "ok"),  # the largest 10-byte varint: 2**64 - 1 before zig-zag
    ("long", b"\xff" * 9 + b"\x02", "error"),  # a 65th bit
    ("long", b"\xff" * 9 + b"\x7f", "error"),
    ("long", b"\x80" * 10 + b"\x00", "error"),  # 11 bytes
    ("long", b"\x80" * 9 + b"\x00", "ok"),  # overlong zero, within 10 bytes: both take it
    ("long", b"\x80", "error"),  # unterminated
    ("long", b"", "error"),
    # lengths: negative, or beyond the data
    ("bytes", zz(-1), "error"),
    ("string", zz(-1), "error"),
    ("string", zz(5) + b"abc", "error"),
    ("string", zz(2) + b"\xc3\x28", "error"),  # invalid UTF-8
    ("string", zz(3) + b"\xed\xa0\x80", "error"),  # a surrogate
    ("bytes", zz(1 << 62), "error"),
    ("fixed", b"abc", "error"),
    ("float", b"\x00\x00\x80", "error"),
    ("double", b"\x00" * 7, "error"),
    # enum and union indices in range
    ("enum", zz(3), "error"),
    ("enum", zz(-1), "error"),
    ("enum", zz(2), "ok"),
    ("union", zz(3), "error"),
    ("union", zz(-1), "error"),
    ("union", zz(1) + zz(1) + b"x", "ok"),
    # array and map blocks
    ("array<long>", zz(5) + zz(1), "error"),  # count beyond the data
    ("array<long>", zz(-1) + zz(-5) + zz(7) + zz(0), "error"),  # negative block byte size
    ("array<long>", zz(-2) + zz(2) + zz(7) + zz(8) + zz(0), "ok"),  # negative count, then its size
    ("array<long>", zz(-(1 << 63)), "error"),
    ("array<long>", zz(1) + zz(7), "error"),  # no end marker
    ("array<null>", zz(100) + zz(0), "ok"),  # zero-width items: more than the data holds
    ("array<null>", zz(1 << 20) + zz(0), "ok"),
    ("array<null>", zz((1 << 20) + 1) + zz(0), "error"),
    ("array<null>", zz(1 << 19) * 3 + zz(0), "error"),  # the limit counts every block
    ("array<empty record>", zz(1000) + zz(0), "ok"),
    ("array<pair>", zz(1) + b"\x00" * 15, "error"),
    ("map<int>", zz(3) + zz(1) + b"k", "error"),
    ("map<int>", zz(1) + zz(1) + b"k" + zz(1 << 31) + zz(0), "error"),
    ("map<int>", zz(2) + zz(1) + b"k" + zz(1) + zz(1) + b"k" + zz(2) + zz(0), "ok"),  # the last of a repeated key
    ("record", b"\x02" + b"\x00" * 30, "error"),  # bad boolean inside a record
]


@pytest.mark.parametrize(("name", "data", "expected"), MALFORMED)
def test_named_malformed_inputs_have_the_same_outcome_on_both_engines(name: str, data: bytes,
                                                                      expected: str) -> None:
    c, py = both(PROGRAMS[name], data)
    assert c == py
    assert c[0] == expected
    if expected == "error":
        assert c[1] == "ValueError"


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(PROGRAMS)), data=st.binary(max_size=60))
def test_random_bytes_have_the_same_outcome_on_both_engines(name: str, data: bytes) -> None:
    c, py = both(PROGRAMS[name], data)
    assert c == py


REC_VALUES = st.builds(
    Rec, st.booleans(), st.integers(-(1 << 31), (1 << 31) - 1), st.integers(-(1 << 63), (1 << 63) - 1),
    st.floats(width=32), st.floats(), st.binary(max_size=5), st.text(max_size=5), st.sampled_from(SIDES),
    st.binary(min_size=3, max_size=3), st.none() | st.text(max_size=3))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(REC_VALUES, max_size=4), data=st.data())
def test_mutated_valid_bytes_have_the_same_outcome_on_both_engines(values: list[Rec], data: st.DataObject) -> None:
    """Valid encodings with one byte changed, cut short or extended: where malformed input hides."""
    prog = PROGRAMS["array<record>"]
    good = VM.encode(prog, values)
    assert both(prog, good) == (("ok", repr(tuple(values)), len(good)),) * 2
    kind = data.draw(st.sampled_from(["set", "cut", "insert"]))
    at = data.draw(st.integers(0, len(good)))
    byte = data.draw(st.sampled_from([0x00, 0x01, 0x02, 0x7F, 0x80, 0xFF]) | st.integers(0, 255))
    if kind == "set" and at < len(good):
        bad = good[:at] + bytes([byte]) + good[at + 1:]
    elif kind == "cut":
        bad = good[:at]
    else:
        bad = good[:at] + bytes([byte]) + good[at:]
    c, py = both(prog, bad)
    assert c == py


# --- the codec: single-object bytes through Codec(engine="c") and Codec(engine="python") ------------

C_CODEC = Codec(engine="c")
PY_CODEC = Codec(engine="python")
REG = registry()


def codec_outcome(codec: Codec, data: bytes) -> tuple[Any, ...]:
    try:
        return ("ok", repr(codec.decode(data, where="test")))
    except DecodeError:
        return ("error", "DecodeError")


def book_body(*, in_play: bytes = b"\x00", bet_delay: bytes = zz(0), ts_event: bytes = zz(5),
              market_id: bytes = zz(3) + b"1.1", runners: bytes = zz(0)) -> bytes:
    """A MarketBook's single-object bytes with some fields given as raw bytes."""
    return (b"\xc3\x01" + C_CODEC.fingerprint(MarketBook) + market_id + ts_event + zz(6) + zz(4) + b"OPEN" + in_play
            + bet_delay + struct.pack("<d", 1.5) + zz(7) + b"\x01\x00" + zz(2) + runners)


def runner_body(ltp: bytes, sp_near: bytes = zz(0)) -> bytes:
    """One RunnerBook v2 (no ladders, no sp_far) with its last_price_traded and sp_near unions given as raw bytes."""
    return (zz(1) + struct.pack("<d", 0.0) + zz(6) + b"ACTIVE" + ltp + struct.pack("<d", 0.0) + zz(0) * 3
            + sp_near + zz(0) * 3)


CODEC_CASES = {
    "valid book": (book_body(), "ok"),
    "valid book with a runner": (book_body(runners=zz(1) + runner_body(zz(1) + struct.pack("<d", 2.5)) + zz(0)), "ok"),
    "in_play byte 0x02": (book_body(in_play=b"\x02"), "error"),
    "bet_delay beyond 32 bits": (book_body(bet_delay=zz(1 << 31)), "error"),
    "ts_event varint of 11 bytes": (book_body(ts_event=b"\x80" * 10 + b"\x00"), "error"),
    "ts_event with a 65th bit": (book_body(ts_event=b"\xff" * 9 + b"\x03"), "error"),
    "negative market_id length": (book_body(market_id=zz(-3) + b"1.1"), "error"),
    "bad union index of ltp": (book_body(runners=zz(1) + runner_body(zz(2)) + zz(0)), "error"),
    "valid runner with sp_near": (book_body(runners=zz(1) + runner_body(zz(0), zz(1) + struct.pack("<d", 4.2))
                                            + zz(0)), "ok"),
    "bad union index of sp_near": (book_body(runners=zz(1) + runner_body(zz(0), zz(2)) + zz(0)), "error"),
    "runner cut before its v2 fields": (book_body(runners=zz(1) + runner_body(zz(0))[:-4] + zz(0)), "error"),
    "runner count beyond the data": (book_body(runners=zz(1000)), "error"),
    "negative block byte size": (book_body(runners=zz(-1) + zz(-9) + runner_body(zz(0)) + zz(0)), "error"),
    "trailing byte": (book_body() + b"\x00", "error"),
    "bad enum index": (b"\xc3\x01" + C_CODEC.fingerprint(Trade) + zz(1) + b"v" + zz(1) + b"i" + zz(1) + zz(2)
                       + struct.pack("<dd", 1.0, 2.0) + zz(3) + zz(1) + b"t", "error"),
}


@pytest.mark.parametrize("case", sorted(CODEC_CASES))
def test_codec_engines_agree_on_named_cases(case: str) -> None:
    data, expected = CODEC_CASES[case]
    c, py = codec_outcome(C_CODEC, data), codec_outcome(PY_CODEC, data)
    assert c == py
    assert c[0] == expected


def test_codec_engines_are_what_they_say() -> None:
    book = MarketBook("1.1", 5, 6, "OPEN", False, 0, 1.5, 7, True, False, 2,
                      (RunnerBook(1, 0.0, "ACTIVE", 2.5, 0.0, (PriceSize(2.0, 1.0),), (), ()),))
    tc_c, tc_py = C_CODEC.by_class[MarketBook], PY_CODEC.by_class[MarketBook]
    assert tc_c.decode_body.__module__ == "ticktape.codec"  # a lambda over VM.decode
    assert tc_py.decode_body.__module__ == "ticktape.avro_program"
    assert C_CODEC.encode(book) == PY_CODEC.encode(book)
    with pytest.raises(ValueError, match="unknown codec engine 'rust'"):
        Codec(engine="rust")


ALL_EVENTS = st.one_of(*[strategy_for(REG.current[n].schema) for n in REG.names()])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=ALL_EVENTS, data=st.data())
def test_codec_engines_agree_on_mutated_events(event: Any, data: st.DataObject) -> None:
    good = C_CODEC.encode(event)
    assert codec_outcome(C_CODEC, good) == codec_outcome(PY_CODEC, good) == ("ok", repr(event))
    body = bytearray(good)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(10, max(10, len(body) - 1)))  # keep the header: test the bodies
        if at < len(body):
            body[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(10, len(body)))
    bad = bytes(body[:cut])
    assert codec_outcome(C_CODEC, bad) == codec_outcome(PY_CODEC, bad)


def test_programs_cover_every_opcode() -> None:
    seen: set[int] = set()

    def walk(prog: Any) -> None:
        seen.add(prog[0])
        if prog[0] in (ap.ARRAY, ap.MAP):
            walk(prog[1])
        elif prog[0] == ap.UNION:
            for b in prog[1]:
                walk(b)
        elif prog[0] == ap.RECORD:
            for f in prog[2]:
                walk(f)

    for prog in PROGRAMS.values():
        walk(copy.deepcopy(prog))
    assert seen == set(range(14))

