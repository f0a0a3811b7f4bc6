"""Backtest throughput: `ema_cross` (10/50, market orders) over synthetic trades on a file tape.

    python -m benchmarks.bench_backtest [EVENTS] [--dir DIR] [--repeat N]

Measures, one core, input read from the file tape (the columnar path):
- `data_path`: the runner feeding every trade to a robot that subscribes but does nothing
  (no venue, no controls, no orders) - the cost of reading, merging, clocking and dispatching;
- `ema_cross`: the full backtest as `ticktape backtest` runs it (crypto venue, default
  controls, exact ledger), writing nothing;
- `ema_cross_per_100k`: wall time of each successive 100k events of that run (flat = no slowdown);
- peak RSS after each phase.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from benchmarks.common import machine, max_rss_mb, report
from robots.api import Context, Params, Robot, Subscription
from robots.backtest import backtest
from robots.runner import Runner
from robots.sources import TapeSource
from ticktape.demo import synthetic_trades
from ticktape.events import Event, Trade
from ticktape.tape import open_tape

TOPIC = "md.sim.trade"


@dataclass
class _Count:
    n: int = 0


class NullRobot(Robot[Params, _Count]):
    """Subscribes to trades and only counts them (the data path)."""

    name = "null"

    def subscriptions(self) -> Subscription:
        return Subscription(topics=(TOPIC,))

    def init_state(self) -> _Count:
        return _Count()

    def on_trade(self, state: _Count, event: Trade, ctx: Context) -> None:
        state.n += 1


def write_tape(path: str, n: int) -> str:
    uri = f"file:{path}"
    tape = open_tape(uri)
    if tape.partitions(TOPIC) and tape.end_offsets(TOPIC)[0] == n:
        tape.close()
        return uri
    step = 100_000
    for i in range(0, n, step):
        events = synthetic_trades(min(step, n - i), ts0=1_700_000_000_000_000_000 + i * 100_000_000)
        tape.append(TOPIC, [e._replace(trade_id=str(i + k)) for k, e in enumerate(events)])
    tape.close()
    return uri


class _Timed:
    """Wraps the input iterator and records the wall time at every 100k events."""

    def __init__(self, source: Any, every: int = 100_000) -> None:
        self.source = source
        self.every = every
        self.marks: list[float] = []

    def __iter__(self) -> Iterator[Event]:
        every = self.every
        t = time.perf_counter()
        self.marks.append(t)
        for i, e in enumerate(self.source, start=1):
            yield e
            if i % every == 0:
                self.marks.append(time.perf_counter())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("events", nargs="?", type=int, default=1_000_000)
    ap.add_argument("--dir", default=None, help="Tape directory (default: a temporary one).")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory() if args.dir is None else None
    path = args.dir or f"{tmp.name}/tape"  # type: ignore[union-attr]
    uri = write_tape(path, args.events)
    report("setup", machine=machine(), events=args.events, tape=uri)
    tape = open_tape(uri)
    list(TapeSource(tape, [TOPIC]))  # first columnar read writes the Parquet copies of sealed segments
    gc.collect()

    best = float("inf")
    for _ in range(args.repeat):
        runner = Runner(NullRobot())
        t0 = time.perf_counter()
        stats = runner.run(TapeSource(tape, [TOPIC]))
        best = min(best, time.perf_counter() - t0)
    assert runner.state.n == args.events == stats.events
    report("data_path", events_per_s=round(args.events / best), seconds=round(best, 3), rss_mb=round(max_rss_mb()))

    best = float("inf")
    summary: dict[str, Any] = {}
    for _ in range(args.repeat):
        res = backtest("ema_cross", tape=tape, topics=[TOPIC], params={"fast": 10, "slow": 50}, keep=False)
        if res.summary["wall_time_s"] < best:
            best = res.summary["wall_time_s"]
            summary = res.summary
    report("ema_cross", events_per_s=round(args.events / best), seconds=round(best, 3),
           intents=summary["intents"], fills=summary["fills"], pnl=summary["pnl_exact"],
           intents_sha256=summary["intents_sha256"], rss_mb=round(max_rss_mb()))

    # per-100k timing of one full run (same work as above, the input wrapped by a timer)
    from robots.controls import controls_from_config
    from robots.registry import get_robot
    from robots.venues import ledger_for, make_venue

    venue = make_venue("crypto")
    timed = _Timed(TapeSource(tape, [TOPIC]))
    Runner(get_robot("ema_cross"), venue=venue, controls=controls_from_config({}), ledger=ledger_for(venue)).run(timed)
    per = [round(b - a, 4) for a, b in zip(timed.marks, timed.marks[1:], strict=False)]
    report("ema_cross_per_100k", seconds=per, first=per[0] if per else None, last=per[-1] if per else None,
           rss_mb=round(max_rss_mb()))
    tape.close()
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
