"""The Betfair recorder's hot path with and without its clock checkpoints, and the restart's cost.

    python -m benchmarks.bench_betfair_record [COPIES] [--repeat N]

The two recorded markets in `../shared/data/betfair/` replicated COPIES times (distinct market
ids, each line given its own `clk` as a live stream has), fed as the recorder's main loop feeds
them: `StreamSession.on_message` (JSON -> full-ladder `MarketBook` objects), the recorder's
appender (`producers.betfair.live.Checkpointing` over a `BatchAppender`), a flush to a file tape
every F messages (live, the loop flushes whenever its queue is drained: F = 1 when messages come
one at a time, larger under load). `off`: a session without checkpoints (the recorder before, or
with `--raw`), `on`: one `StreamClock` appended after each flush. Socket and threads left out:
the same for both. Then `restart`: `resume_market_stream` on the tape the run left (one pass over
`md.betfair.market`, caches rebuilt from the last books).

Rates per wall second and per CPU second, best of `--repeat` by CPU time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import orjson

from benchmarks.bench_betfair_import import DATA, MARKETS
from benchmarks.common import machine, report
from producers.betfair.live import Checkpointing
from producers.betfair.parse import CLOCK_TOPIC
from producers.betfair.resume import resume_market_stream, subscription
from producers.betfair.session import StreamSession
from producers.common import BatchAppender
from ticktape.tape.file import FileTape

FIELDS = ("EX_ALL_OFFERS", "EX_TRADED", "EX_TRADED_VOL", "EX_LTP", "EX_MARKET_DEF")


def make_lines(copies: int) -> list[bytes]:
    """The markets `copies` times each, one after another, every line with the next clk."""
    out: list[bytes] = []
    for c in range(copies):
        for k, market in enumerate(MARKETS):
            for line in (DATA / market).read_bytes().splitlines():
                msg = orjson.loads(line.replace(f'"{market}"'.encode(), f'"1.9{c:06d}{k:02d}"'.encode()))
                msg["clk"] = str(len(out))
                if not out:
                    msg["initialClk"] = "initial"
                out.append(orjson.dumps(msg))
    return out


def record(lines: list[bytes], tape_dir: Path, every: int, checkpoints: bool) -> tuple[float, float, int, int]:
    """(wall s, CPU s, events appended, checkpoints appended) of one run onto a new file tape."""
    tape = FileTape(tape_dir)
    session = StreamSession("market", checkpoints=checkpoints)
    appender = Checkpointing(BatchAppender(tape, batch_size=1000), subscription({"x": 1}, FIELDS, None))
    t0, c0 = time.perf_counter(), time.process_time()
    for i, line in enumerate(lines):
        appender.add_all(session.on_message(line, i).events)
        if (i + 1) % every == 0:
            appender.flush()
    appender.flush()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    counts = appender.appender.counts
    clocks = counts.get(CLOCK_TOPIC, 0)
    tape.close()
    return wall, cpu, sum(counts.values()) - clocks, clocks


def restart(tape_dir: Path) -> tuple[float, str]:
    """(wall s, outcome) of a restarted recorder's `resume_market_stream` on the tape."""
    tape = FileTape(tape_dir)
    t0 = time.perf_counter()
    outcome = resume_market_stream(tape, StreamSession("market", checkpoints=True),
                                   subscription({"x": 1}, FIELDS, None), FIELDS, 0)
    wall = time.perf_counter() - t0
    tape.close()
    return wall, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("copies", type=int, nargs="?", default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--every", default="1,10,100", help="flush every F messages (comma-separated)")
    args = parser.parse_args()
    lines = make_lines(args.copies)
    print(f"{len(lines)} messages, {machine()}")
    for every in [int(x) for x in args.every.split(",")]:
        for checkpoints in (False, True):
            best = None
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory() as tmp:
                    run = record(lines, Path(tmp) / "tape", every, checkpoints)
                    if checkpoints and every == 1 and best is None:
                        restart_s, outcome = restart(Path(tmp) / "tape")
                        report("restart", seconds=round(restart_s, 3), books_on_tape=run[2], outcome=outcome)
                if best is None or run[1] < best[1]:
                    best = run
            assert best is not None
            wall, cpu, events, clocks = best
            report(f"flush every {every}, checkpoints {'on' if checkpoints else 'off'}",
                   events_per_s_wall=round(events / wall), events_per_cpu_s=round(events / cpu),
                   messages_per_s_wall=round(len(lines) / wall), checkpoints=clocks)


if __name__ == "__main__":
    main()
