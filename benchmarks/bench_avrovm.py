"""Benchmark the `ticktape._avrovm` C extension against fastavro's schemaless path.

    python setup.py build_ext --inplace
    python benchmarks/bench_avrovm.py              # 1M trades, 20k market books (~3 min)
    python benchmarks/bench_avrovm.py --n 200000 --book-n 5000 --repeat 1

Two records are measured:

* Trade: 8 flat fields (2 strings, 2 nanosecond timestamps, 2 doubles, an enum, a string),
  the bread-and-butter tick event.
* MarketBook: a nested record with 10 runners, each with 3-level back/lay ladders and a
  traded-volume ladder of PriceSize(price, size) records (Betfair-style order book).

Rows: the VM called once per record (`decode`/`encode`), the VM over container-sized
batches (`decode_many`/`encode_many`, 1000 records per call), fastavro's
`schemaless_reader`/`schemaless_writer` once per record (a fresh BytesIO per record, as when
each record is a Kafka message) and streaming through one BytesIO, and, when importable,
the project's pure-Python engine (`ticktape.avro_program`, at most 200k records). Each
figure is the best of --repeat runs; the GC stays enabled.
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import fastavro

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ticktape import _avrovm as vm  # type: ignore[attr-defined]

NULL, BOOLEAN, INT, LONG, FLOAT, DOUBLE, BYTES, STRING, ENUM, FIXED, ARRAY, MAP, UNION, RECORD = range(14)
BATCH = 1000

# --- records, schemas and hand-compiled programs ---------------------------------------------


class Trade(NamedTuple):
    venue: str
    instrument: str
    ts_event: int
    ts_recv: int
    price: float
    size: float
    aggressor_side: str
    trade_id: str


class PriceSize(NamedTuple):
    price: float
    size: float


class RunnerBook(NamedTuple):
    selection_id: int
    status: str
    last_price_traded: float | None
    total_matched: float
    available_to_back: tuple[PriceSize, ...]
    available_to_lay: tuple[PriceSize, ...]
    traded_volume: tuple[PriceSize, ...]


class MarketBook(NamedTuple):
    venue: str
    market_id: str
    ts_event: int
    ts_recv: int
    status: str
    inplay: bool
    total_matched: float
    runners: tuple[RunnerBook, ...]


SIDES = ("BUY", "SELL", "NONE")
MARKET_STATUS = ("INACTIVE", "OPEN", "SUSPENDED", "CLOSED")
RUNNER_STATUS = ("ACTIVE", "WINNER", "LOSER", "REMOVED")

TRADE_SCHEMA = {
    "type": "record", "name": "Trade", "fields": [
        {"name": "venue", "type": "string"},
        {"name": "instrument", "type": "string"},
        {"name": "ts_event", "type": "long"},
        {"name": "ts_recv", "type": "long"},
        {"name": "price", "type": "double"},
        {"name": "size", "type": "double"},
        {"name": "aggressor_side", "type": {"type": "enum", "name": "AggressorSide", "symbols": list(SIDES)}},
        {"name": "trade_id", "type": "string"},
    ],
}

PRICE_SIZE_SCHEMA = {"type": "record", "name": "PriceSize",
                     "fields": [{"name": "price", "type": "double"}, {"name": "size", "type": "double"}]}

BOOK_SCHEMA = {
    "type": "record", "name": "MarketBook", "fields": [
        {"name": "venue", "type": "string"},
        {"name": "market_id", "type": "string"},
        {"name": "ts_event", "type": "long"},
        {"name": "ts_recv", "type": "long"},
        {"name": "status", "type": {"type": "enum", "name": "MarketStatus", "symbols": list(MARKET_STATUS)}},
        {"name": "inplay", "type": "boolean"},
        {"name": "total_matched", "type": "double"},
        {"name": "runners", "type": {"type": "array", "items": {
            "type": "record", "name": "RunnerBook", "fields": [
                {"name": "selection_id", "type": "long"},
                {"name": "status", "type": {"type": "enum", "name": "RunnerStatus",
                                            "symbols": list(RUNNER_STATUS)}},
                {"name": "last_price_traded", "type": ["null", "double"]},
                {"name": "total_matched", "type": "double"},
                {"name": "available_to_back", "type": {"type": "array", "items": PRICE_SIZE_SCHEMA}},
                {"name": "available_to_lay", "type": {"type": "array", "items": "PriceSize"}},
                {"name": "traded_volume", "type": {"type": "array", "items": "PriceSize"}},
            ]}}},
    ],
}


def _enum(symbols: Sequence[str]) -> tuple[Any, ...]:
    return (ENUM, tuple(symbols), {s: i for i, s in enumerate(symbols)})


TRADE_PROG = (RECORD, Trade, ((STRING,), (STRING,), (LONG,), (LONG,), (DOUBLE,), (DOUBLE,),
                              _enum(SIDES), (STRING,)))
_PS = (RECORD, PriceSize, ((DOUBLE,), (DOUBLE,)))
_RUNNER = (RECORD, RunnerBook, ((LONG,), _enum(RUNNER_STATUS), (UNION, ((NULL,), (DOUBLE,)), None),
                                (DOUBLE,), (ARRAY, _PS), (ARRAY, _PS), (ARRAY, _PS)))
BOOK_PROG = (RECORD, MarketBook, ((STRING,), (STRING,), (LONG,), (LONG,), _enum(MARKET_STATUS),
                                  (BOOLEAN,), (DOUBLE,), (ARRAY, _RUNNER)))

# --- realistic data ----------------------------------------------------------------------------


def make_trades(n: int, seed: int = 1) -> list[Trade]:
    rng = random.Random(seed)
    venues = ("BINANCE", "COINBASE", "KRAKEN", "BETFAIR")
    instruments = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BTC-USD", "1.234567890")
    ts = 1_700_000_000_000_000_000
    out = []
    for i in range(n):
        ts += rng.randint(1_000, 5_000_000)
        out.append(Trade(
            venue=rng.choice(venues),
            instrument=rng.choice(instruments),
            ts_event=ts,
            ts_recv=ts + rng.randint(100_000, 3_000_000),
            price=round(43_000 + rng.gauss(0, 250), 2),
            size=round(rng.expovariate(20), 6),
            aggressor_side=rng.choice(SIDES),
            trade_id=str(3_500_000_000 + i),
        ))
    return out


def make_books(n: int, seed: int = 2, runners: int = 10, levels: int = 3) -> list[MarketBook]:
    rng = random.Random(seed)
    ts = 1_700_000_000_000_000_000
    out = []
    for i in range(n):
        ts += rng.randint(50_000_000, 200_000_000)
        rbs = []
        for r in range(runners):
            best = round(rng.uniform(1.5, 30.0), 2)
            back = tuple(PriceSize(round(best - 0.02 * k, 2), round(rng.uniform(2, 500), 2)) for k in range(levels))
            lay = tuple(PriceSize(round(best + 0.02 * (k + 1), 2), round(rng.uniform(2, 500), 2))
                        for k in range(levels))
            traded = tuple(PriceSize(round(best + 0.02 * (k - 1), 2), round(rng.uniform(10, 9000), 2))
                           for k in range(levels))
            rbs.append(RunnerBook(40_000_000 + r, "ACTIVE", None if r == 9 else best,
                                  round(rng.uniform(1e3, 1e6), 2), back, lay, traded))
        out.append(MarketBook("BETFAIR", f"1.{230_000_000 + i % 500}", ts, ts + rng.randint(10**5, 10**7),
                              "OPEN", bool(i % 2), round(rng.uniform(1e5, 1e7), 2), tuple(rbs)))
    return out


def to_dict(value: Any) -> Any:
    """NamedTuples -> dicts (recursively), the shape fastavro reads and writes."""
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {k: to_dict(v) for k, v in zip(value._fields, value, strict=True)}
    if isinstance(value, tuple | list):
        return [to_dict(v) for v in value]
    return value


# --- timing --------------------------------------------------------------------------------------


def best_rate(n: int, repeat: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


class Row(NamedTuple):
    engine: str
    encode: float | None
    decode: float | None


def bench_vm(prog: Any, records: list[Any], blobs: list[bytes], repeat: int) -> list[Row]:
    n = len(records)
    encode, decode, encode_many, decode_many = vm.encode, vm.decode, vm.encode_many, vm.decode_many

    def enc_each() -> None:
        for r in records:
            encode(prog, r)

    def dec_each() -> None:
        for b in blobs:
            decode(prog, b)

    chunks = [records[i:i + BATCH] for i in range(0, n, BATCH)]
    blocks = []
    for c in chunks:
        out = bytearray()
        encode_many(prog, c, out)
        blocks.append((bytes(out), len(c)))

    def enc_batch() -> None:
        for c in chunks:
            encode_many(prog, c, bytearray())

    def dec_batch() -> None:
        for data, count in blocks:
            decode_many(prog, data, 0, count)

    return [
        Row("avrovm, one record per call", best_rate(n, repeat, enc_each), best_rate(n, repeat, dec_each)),
        Row(f"avrovm, {BATCH}-record batches", best_rate(n, repeat, enc_batch), best_rate(n, repeat, dec_batch)),
    ]


def bench_fastavro(schema: Any, records: list[Any], blobs: list[bytes], repeat: int) -> list[Row]:
    n = len(records)
    parsed = fastavro.parse_schema(schema)
    dicts = [to_dict(r) for r in records]
    writer, reader, BytesIO = fastavro.schemaless_writer, fastavro.schemaless_reader, io.BytesIO

    def enc_each() -> None:
        for d in dicts:
            bio = BytesIO()
            writer(bio, parsed, d)
            bio.getvalue()

    def dec_each() -> None:
        for b in blobs:
            reader(BytesIO(b), parsed, None)

    stream = b"".join(blobs)

    def enc_stream() -> None:
        bio = BytesIO()
        for d in dicts:
            writer(bio, parsed, d)
        bio.getvalue()

    def dec_stream() -> None:
        bio = BytesIO(stream)
        for _ in range(n):
            reader(bio, parsed, None)

    return [
        Row("fastavro schemaless, per record", best_rate(n, repeat, enc_each), best_rate(n, repeat, dec_each)),
        Row("fastavro schemaless, one stream", best_rate(n, repeat, enc_stream), best_rate(n, repeat, dec_stream)),
    ]


def bench_pure_python(schema: Any, classes: dict[str, type], records: list[Any], blobs: list[bytes],
                      repeat: int) -> list[Row]:
    """The project's pure-Python fallback engine, if present (it is not part of this module)."""
    try:
        from ticktape import avro_program as ap

        prog = ap.compile_schema(schema, classes)
        dec, enc = ap.make_decoder(prog), ap.make_encoder(prog)
        assert dec(blobs[0], 0)[0] == records[0]
    except Exception as exc:  # the fallback engine is optional here
        print(f"(pure-Python engine skipped: {type(exc).__name__}: {exc})")
        return []
    n = min(len(records), 200_000)

    def enc_each() -> None:
        for r in records[:n]:
            enc(r, bytearray())

    def dec_each() -> None:
        for b in blobs[:n]:
            dec(b, 0)

    return [Row("ticktape pure-Python engine", best_rate(n, repeat, enc_each), best_rate(n, repeat, dec_each))]


def print_table(title: str, rows: list[Row]) -> None:
    ref = next((r for r in rows if r.engine.startswith("fastavro schemaless, per record")), None)
    print(f"\n{title}")
    header = f"{'engine':<34} {'encode rec/s':>14} {'decode rec/s':>14} {'enc vs fa':>10} {'dec vs fa':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        def fmt(x: float | None) -> str:
            return f"{x:,.0f}" if x is not None else "n/a"

        def ratio(x: float | None, base: float | None) -> str:
            return f"{x / base:.1f}x" if x and base else ""

        print(f"{r.engine:<34} {fmt(r.encode):>14} {fmt(r.decode):>14} "
              f"{ratio(r.encode, ref.encode if ref else None):>10} {ratio(r.decode, ref.decode if ref else None):>10}")


def run(title: str, schema: Any, prog: Any, classes: dict[str, type], records: list[Any], repeat: int) -> None:
    blobs = [vm.encode(prog, r) for r in records]
    # sanity: byte-for-byte identical to fastavro, and a faithful round trip
    parsed = fastavro.parse_schema(schema)
    for r, b in zip(records[:100], blobs[:100], strict=True):
        bio = io.BytesIO()
        fastavro.schemaless_writer(bio, parsed, to_dict(r))
        assert bio.getvalue() == b, "encoding differs from fastavro"
        assert vm.decode(prog, b) == (r, len(b)), "round trip failed"
    size = sum(len(b) for b in blobs) / len(blobs)
    rows = bench_vm(prog, records, blobs, repeat)
    rows += bench_fastavro(schema, records, blobs, repeat)
    rows += bench_pure_python(schema, classes, records, blobs, repeat)
    print_table(f"{title}: {len(records):,} records, {size:.0f} bytes each", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="number of Trade records")
    parser.add_argument("--book-n", type=int, default=20_000, help="number of MarketBook records")
    parser.add_argument("--repeat", type=int, default=2, help="best of this many runs")
    args = parser.parse_args()

    print(f"python {sys.version.split()[0]}, fastavro {fastavro.__version__}, {os.cpu_count()} CPUs")
    t0 = time.perf_counter()
    trades = make_trades(args.n)
    run("Trade", TRADE_SCHEMA, TRADE_PROG, {"Trade": Trade}, trades, args.repeat)
    del trades
    books = make_books(args.book_n)
    run("MarketBook (10 runners x 3-level ladders)", BOOK_SCHEMA, BOOK_PROG,
        {"MarketBook": MarketBook, "RunnerBook": RunnerBook, "PriceSize": PriceSize}, books, args.repeat)
    print(f"\n(total {time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
