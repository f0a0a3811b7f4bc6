"""What tape integrity costs: block checksums on append and read, tail validation on open.

    python -m benchmarks.bench_tape_integrity [N]

- `crc32c`: the checksum alone, per byte and per `Trade` entry (~64 bytes);
- `read verified` vs `read unverified`: `read_events` of N Trades as they are, then with the
  blocks' checksums dropped from the in-memory index (what a read costs without them);
- `writer open`: opening a writer on a partition whose last segment is full (64 MB of Trade
  blocks): checking its index against the data and the last block's checksum, then one append;
- `reader open`: a new handle listing and indexing every segment of the partition.

Throughput of append and read themselves: `benchmarks.bench_file_tape`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import crc32c

from benchmarks.common import machine, report
from ticktape.demo import synthetic_trades
from ticktape.tape.file import DEFAULT_SEGMENT_BYTES, FileTape


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=3_000_000)
    ap.add_argument("--batch", type=int, default=10_000)
    args = ap.parse_args()
    block = os.urandom(640_000)  # a 10k-Trade block
    reps = 2_000
    t0 = time.perf_counter()
    for _ in range(reps):
        crc32c.crc32c(block)
    dt = time.perf_counter() - t0
    report("crc32c", mb_per_s=round(reps * len(block) / dt / 1e6),
           ns_per_trade_entry=round(dt / reps / 10_000 * 1e9, 2))
    root = Path(tempfile.mkdtemp(prefix="ticktape-integrity-"))
    try:
        events = synthetic_trades(args.n)
        tape = FileTape(root)
        for i in range(0, args.n, args.batch):
            tape.append("md.trade", events[i:i + args.batch])
        tape.close()
        del events
        segments = FileTape(root).segment_paths("md.trade")
        report("tape", events=args.n, segments=len(segments),
               last_segment_mb=round(segments[-1].stat().st_size / 1e6, 1),
               segment_limit_mb=DEFAULT_SEGMENT_BYTES >> 20)
        for label, verified in (("read verified", True), ("read unverified", False), ("read verified", True)):
            reader = FileTape(root)
            plog = reader._log("md.trade", 0)
            if not verified:
                for seg in plog.segments:
                    seg.blocks = [b._replace(crc=None) for b in seg.blocks]
            t0 = time.perf_counter()
            count = sum(1 for _ in reader.read_events("md.trade"))
            report(label, events_per_s=round(count / (time.perf_counter() - t0)))
            reader.close()
        for _ in range(3):
            t0 = time.perf_counter()
            reader = FileTape(root)
            reader.end_offsets("md.trade")
            opened = time.perf_counter() - t0
            t0 = time.perf_counter()
            writer = FileTape(root)
            writer.append("md.trade", synthetic_trades(1))
            report("open", reader_ms=round(opened * 1e3, 2), writer_open_and_one_append_ms=round(
                (time.perf_counter() - t0) * 1e3, 2))
            writer.close()
            reader.close()
        report("machine", machine=machine())
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
