"""File tape: batched append, sequential decoded read, and flat memory over a long stream.

    python -m benchmarks.bench_file_tape [N] [--stream 10000000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine, max_rss_mb, report
from ticktape.demo import synthetic_trades
from ticktape.tape.file import FileTape


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--stream", type=int, default=0, help="also stream this many events to check memory")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ticktape-bench-"))
    try:
        events = synthetic_trades(args.n)
        tape = FileTape(root)
        t0 = time.perf_counter()
        for i in range(0, args.n, args.batch):
            tape.append("md.trade", events[i:i + args.batch])
        append_s = time.perf_counter() - t0
        report("file_tape.append", batch=args.batch, events_per_s=round(args.n / append_s))
        del events
        reader = FileTape(root)
        t0 = time.perf_counter()
        count = sum(1 for _ in reader.read("md.trade"))
        read_s = time.perf_counter() - t0
        report("file_tape.read(records)", events_per_s=round(count / read_s))
        t0 = time.perf_counter()
        count = sum(1 for _ in reader.read_events("md.trade"))
        report("file_tape.read_events", events_per_s=round(count / (time.perf_counter() - t0)))
        tape.close()
        reader.close()
        if args.stream:
            stream(root / "stream", args.stream, args.batch)
        report("machine", machine=machine())
    finally:
        shutil.rmtree(root, ignore_errors=True)


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


if __name__ == "__main__":
    main()
