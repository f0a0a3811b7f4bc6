"""File tape: batched append, sequential decoded read, and flat memory over a long stream.

    python -m benchmarks.bench_file_tape [N] [--stream 10000000] [--encoded [--books 10000]]

`--encoded` compares `append` of event objects with `append_encoded` of the same events
already encoded (`Codec.encode`, not timed), on N/10 small Trades and on `--books`
MarketBooks of ~7.8 KB (10 runners, full traded-volume ladders, as the Betfair importer
builds them); plus encode-then-`append_encoded`, what a producer that encodes pays in all.
"""

from __future__ import annotations

import argparse
import gc
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import machine, max_rss_mb, report
from ticktape.codec import default_codec
from ticktape.demo import synthetic_trades
from ticktape.events import Event, MarketBook, PriceSize, RunnerBook
from ticktape.tape import Encoded
from ticktape.tape.file import FileTape


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--stream", type=int, default=0, help="also stream this many events to check memory")
    ap.add_argument("--encoded", action="store_true", help="only compare append with append_encoded")
    ap.add_argument("--books", type=int, default=10_000, help="MarketBooks for --encoded")
    ap.add_argument("--book-batch", type=int, default=1_000)
    ap.add_argument("--compression", default="none", help="none, zstd or deflate: how segments store blocks")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ticktape-bench-"))
    try:
        if args.encoded:
            encoded_vs_objects(root, "trades", synthetic_trades(args.n // 10), args.batch)
            encoded_vs_objects(root, "market_books", market_books(args.books), args.book_batch)
            report("machine", machine=machine())
            return
        f = figures(args.n, args.batch, args.compression, root)
        report("file_tape.append", batch=args.batch, compression=args.compression,
               events_per_s=f["append_per_s"], bytes_per_event=f["bytes_per_event"])
        report("file_tape.read(records)", events_per_s=f["read_records_per_s"])
        report("file_tape.read_events", events_per_s=f["read_events_per_s"])
        if args.stream:
            stream(root / "stream", args.stream, args.batch)
        report("machine", machine=machine())
    finally:
        shutil.rmtree(root, ignore_errors=True)


def figures(n: int = 1_000_000, batch: int = 10_000, compression: str = "none", root: Path | None = None
            ) -> dict[str, float]:
    """Events/s of appending `n` Trades in batches to a fresh tape in `root` (a temporary directory when
    None), and of reading them back."""
    if root is None:
        with tempfile.TemporaryDirectory(prefix="ticktape-bench-") as d:
            return figures(n, batch, compression, Path(d))
    events = synthetic_trades(n)
    tape = FileTape(root, compression=compression)
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        tape.append("md.trade", events[i:i + batch])
    append_s = time.perf_counter() - t0
    on_disk = sum(p.stat().st_size for p in tape.segment_paths("md.trade"))
    del events
    reader = FileTape(root)
    t0 = time.perf_counter()
    count = sum(1 for _ in reader.read("md.trade"))
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    count_events = sum(1 for _ in reader.read_events("md.trade"))
    events_s = time.perf_counter() - t0
    tape.close()
    reader.close()
    return {"append_per_s": round(n / append_s), "bytes_per_event": round(on_disk / n, 1),
            "read_records_per_s": round(count / read_s), "read_events_per_s": round(count_events / events_s)}


def stream(root: Path, total: int, batch: int) -> None:
    """Append then read `total` events in batches, sampling peak RSS: it must stay flat."""
    tape = FileTape(root)
    template = synthetic_trades(batch)
    samples = []
    for i in range(0, total, batch):
        step = i * 100_000_000
        tape.append("md.trade", [e._replace(ts_event=e.ts_event + step, ts_recv=e.ts_recv + step) for e in template])
        if i % (total // 10) == 0:
            samples.append(round(max_rss_mb()))
    report("file_tape.stream.append", events=total, peak_rss_mb_samples=samples)
    reader = FileTape(root)
    samples = []
    for n, _ in enumerate(reader.read("md.trade")):
        if n % (total // 10) == 0:
            samples.append(round(max_rss_mb()))
    report("file_tape.stream.read", events=total, peak_rss_mb_samples=samples)


def market_books(n: int, runners: int = 10, traded_levels: int = 40) -> list[Event]:
    """MarketBooks the size of a busy Betfair market's (~7.8 KB encoded), over 50 markets."""
    rng = random.Random(7)
    ts0 = 1_700_000_000_000_000_000
    out: list[Event] = []
    for i in range(n):
        book = tuple(RunnerBook(
            1000 + r, 0.0, "ACTIVE", 2.0 + r, 1000.0 + i,
            tuple(PriceSize(round(2.0 + r + k * 0.02, 2), round(rng.random() * 100, 2)) for k in range(3)),
            tuple(PriceSize(round(2.1 + r + k * 0.02, 2), round(rng.random() * 100, 2)) for k in range(3)),
            tuple(PriceSize(round(1.5 + k * 0.01, 2), round(rng.random() * 1000, 2)) for k in range(traded_levels)))
            for r in range(runners))
        ts = ts0 + i * 50_000_000
        out.append(MarketBook(f"1.{230_000_000 + i % 50}", ts, ts + 20_000_000, "OPEN", False, 0,
                              12_345.6 + i, i, True, False, runners, book))
    return out


def encoded_vs_objects(root: Path, name: str, events: Sequence[Event], batch: int, repeat: int = 5) -> None:
    """`append` vs `append_encoded` of the same events into fresh tapes, best of `repeat` each."""
    codec = default_codec()
    items = [Encoded(codec.key_of(e), e.ts_event, codec.encode(e)) for e in events]
    size = sum(len(i.data) for i in items) / len(items)

    def encode_then_append(tape: FileTape, chunk: Sequence[Any]) -> None:
        key_of, encode = codec.key_of, codec.encode
        tape.append_encoded("bench", [Encoded(key_of(e), e.ts_event, encode(e)) for e in chunk])

    # Millions of live objects (a MarketBook is ~500): keep full collections out of the timings.
    gc.collect()
    gc.freeze()
    try:
        for mode, data, fn in (
                ("append", events, lambda tape, chunk: tape.append("bench", chunk)),
                ("append_encoded", items, lambda tape, chunk: tape.append_encoded("bench", chunk)),
                ("encode+append_encoded", events, encode_then_append)):
            best = min(_fill(root, data, batch, fn) for _ in range(repeat))
            report(f"file_tape.{mode}", events=name, batch=batch, bytes_per_event=round(size),
                   events_per_s=round(len(data) / best), mb_per_s=round(len(data) * size / best / 1e6))
    finally:
        gc.unfreeze()


def _fill(root: Path, data: Sequence[Any], batch: int, append: Callable[[FileTape, Sequence[Any]], None]) -> float:
    """Seconds to append `data` in batches to a fresh tape (opening and removing it not counted)."""
    path = Path(tempfile.mkdtemp(dir=root))
    tape = FileTape(path)
    tape.create_topic("bench")
    t0 = time.perf_counter()
    for i in range(0, len(data), batch):
        append(tape, data[i:i + batch])
    elapsed = time.perf_counter() - t0
    tape.close()
    shutil.rmtree(path)
    return elapsed


if __name__ == "__main__":
    main()
