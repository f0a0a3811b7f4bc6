"""DataFrame bars onto a file tape and back: `add_bars` and `load_bars` rates.

    python -m benchmarks.bench_frames [--rows 1000000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import numpy as np
import pandas as pd

from benchmarks.common import machine, report
from producers.frames import add_bars, load_bars
from ticktape.tape import open_tape


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    n = args.rows
    print(f"# {machine()}", flush=True)
    rng = np.random.default_rng(7)
    o = 100 + rng.random(n)
    df = pd.DataFrame({"open": o, "high": o + 1, "low": o - 1, "close": o + 0.5, "volume": rng.random(n)},
                      index=pd.date_range("2020-01-01", periods=n, freq="1min", tz="UTC"))
    root = tempfile.mkdtemp(prefix="ticktape-bench-frames-")
    try:
        tape = open_tape(f"file:{root}")
        t, c = time.perf_counter(), time.process_time()
        add_bars(df, venue="sim", base="BTC", quote="USDT", interval="1m", tape=tape)
        report("frames.add_bars", rows=n, rows_per_s=round(n / (time.perf_counter() - t)),
               rows_per_cpu_s=round(n / (time.process_time() - c)))
        t, c = time.perf_counter(), time.process_time()
        bars = load_bars("BTC", "USDT", "sim", tape=tape)
        assert len(bars) == n
        report("frames.load_bars", bars=n, bars_per_s=round(n / (time.perf_counter() - t)),
               bars_per_cpu_s=round(n / (time.process_time() - c)))
        tape.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
