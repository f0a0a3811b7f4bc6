"""`ticktape load` throughput: Trade events from the file tape into a DuckDB file.

    python -m benchmarks.bench_load [N] [--segment-mb MB] [--stream N10]

Reports a load through the block reader (Avro decode, no Parquet), the first load through
the columnar reader (Avro decode; sealed segments get their Parquet copy written), a second
load of the same tape into a fresh database (sealed segments read from Parquet), an
incremental re-run (nothing new), and the peak memory of the process.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
from pathlib import Path

from analyzer.load import connect, load
from benchmarks.common import machine, max_rss_mb, report
from ticktape.events import Trade
from ticktape.tape.file import FileTape


def make_tape(root: Path, n: int, segment_mb: int) -> FileTape:
    """N deterministic trades in batches of 10k (the producers' usual batch)."""
    tape = FileTape(root, segment_bytes=segment_mb * 1024 * 1024)
    ts0 = 1_700_000_000_000_000_000
    batch = 10_000
    for start in range(0, n, batch):
        tape.append("md.binance.trade", [
            Trade("binance", "BTCUSDT", ts0 + i * 1_000_000, ts0 + i * 1_000_000 + 5_000, 30_000.0 + (i % 100) * 0.5,
                  0.001 * (1 + i % 7), "BUY" if i % 2 else "SELL", str(i))
            for i in range(start, min(n, start + batch))])
    return tape


def timed_load(tape: FileTape, db: Path, columnar: bool = True) -> tuple[float, float, int]:
    """(wall s, CPU s, rows) of a load into a fresh database, including its final checkpoint."""
    db.unlink(missing_ok=True)
    con = connect(str(db))
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    summary = load(tape, con, columnar=columnar)
    con.close()
    return time.perf_counter() - t0, time.process_time() - c0, summary.rows


def loads(tape: FileTape, work: Path) -> dict[str, dict[str, float]]:
    """Into fresh databases in `work`: a load through the block reader, the first columnar load (which
    writes the Parquet copies), and a second one (which reads them); events, wall and CPU s of each."""
    out = {}
    for name, db, columnar in (("blocks", "a", False), ("first_columnar", "a", True), ("cached", "b", True)):
        wall, cpu, rows = timed_load(tape, work / f"{db}.duckdb", columnar=columnar)
        out[name] = {"events": rows, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                     "events_per_cpu_s": round(rows / cpu)}
    return out


def figures(n: int = 1_000_000, segment_mb: int = 64) -> dict[str, float]:
    """`loads` of `n` trades on a fresh tape, as events per CPU second, and the process's peak RSS so far."""
    work = Path(tempfile.mkdtemp(prefix="bench_load_"))
    try:
        f = loads(make_tape(work / "tape", n, segment_mb), work)
        return {**{f"{k}_events_per_cpu_s": v["events_per_cpu_s"] for k, v in f.items()},
                "peak_rss_mb": round(max_rss_mb(), 1)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=1_000_000)
    parser.add_argument("--segment-mb", type=int, default=64)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_load_"))
    try:
        tape = make_tape(work / "tape", args.n, args.segment_mb)
        f = loads(tape, work)
        report("load_blocks", machine=machine(), **f["blocks"])
        report("load_first_columnar", **f["first_columnar"], segments=len(tape.segment_paths("md.binance.trade")))
        report("load_cached", **f["cached"])
        con = connect(str(work / "b.duckdb"))
        t0 = time.perf_counter()
        again = load(tape, con)
        report("load_incremental_nothing_new", events=again.rows, seconds=round(time.perf_counter() - t0, 4))
        tape.append("md.binance.trade", [Trade("binance", "BTCUSDT", 1_800_000_000_000_000_000 + i, 0, 1.0, 1.0, "BUY",
                                               f"new{i}") for i in range(10)])
        t0 = time.perf_counter()
        more = load(tape, con)
        report("load_incremental_10_new", events=more.rows, seconds=round(time.perf_counter() - t0, 4))
        con.close()
        report("load_memory", peak_rss_mb=round(max_rss_mb(), 1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
