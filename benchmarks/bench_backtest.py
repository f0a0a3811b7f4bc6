"""Backtest throughput: `ema_cross` (10/50, market orders) over synthetic trades on a file tape.

    python -m benchmarks.bench_backtest [EVENTS] [--dir DIR] [--repeat N]

Measures, one core, input read from the file tape (the columnar path):
- `data_path`: the runner feeding every trade to a robot that subscribes but does nothing
  (no venue, no controls, no orders) - the cost of reading, merging, clocking and dispatching;
- `ema_cross_no_orders`: the full backtest (crypto venue, default controls, ledger) with
  ema_cross computing its EMAs on every trade but never trading;
- `ema_cross`: the full backtest as `ticktape backtest` runs it (crypto venue, default
  controls, exact ledger), writing nothing;
- `ema_cross_per_100k`: wall time of each successive 100k events of that run (flat = no slowdown);
- peak RSS after each phase.
"""

from __future__ import annotations

import argparse
import gc
import os
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


def write_tape(path: str, n: int, segment_bytes: int) -> str:
    uri = f"file:{path}?segment_bytes={segment_bytes}"
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


def rss_mb() -> float:
    """Current resident memory of this process (not the peak), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _Timed:
    """Wraps the input iterator; records CPU time and RSS at every 100k events."""

    def __init__(self, source: Any, every: int = 100_000) -> None:
        self.source = source
        self.every = every
        self.marks: list[float] = []
        self.rss: list[float] = []

    def __iter__(self) -> Iterator[Event]:
        every = self.every
        self.marks.append(time.process_time())
        self.rss.append(rss_mb())
        for i, e in enumerate(self.source, start=1):
            yield e
            if i % every == 0:
                self.marks.append(time.process_time())
                self.rss.append(rss_mb())


def timed(fn: Any, repeat: int) -> tuple[float, float, Any]:
    """Best wall and best CPU (process) seconds of `repeat` calls, and the last result."""
    wall = cpu = float("inf")
    out = None
    for _ in range(repeat):
        gc.collect()
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = min(wall, time.perf_counter() - w0), min(cpu, time.process_time() - c0)
    return wall, cpu, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("events", nargs="?", type=int, default=1_000_000)
    ap.add_argument("--dir", default=None, help="Tape directory (default: a temporary one).")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--segment-bytes", type=int, default=16_000_000,
                    help="Tape segment size: sealed segments get Parquet copies (the columnar path).")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory() if args.dir is None else None
    path = args.dir or f"{tmp.name}/tape"  # type: ignore[union-attr]
    uri = write_tape(path, args.events, args.segment_bytes)
    n = args.events
    report("setup", machine=machine(), events=n, tape=uri, load_avg=os.getloadavg())
    tape = open_tape(uri)
    list(TapeSource(tape, [TOPIC]))  # the first columnar read writes the Parquet copies of sealed segments

    wall, cpu, _ = timed(lambda: sum(1 for _ in TapeSource(tape, [TOPIC])), args.repeat)
    report("read_only", events_per_s_wall=round(n / wall), events_per_s_cpu=round(n / cpu))

    def data_path() -> Runner[Any]:
        runner = Runner(NullRobot())
        runner.run(TapeSource(tape, [TOPIC]))
        return runner

    wall, cpu, runner = timed(data_path, args.repeat)
    assert runner.state.n == n == runner.stats.events
    report("data_path", events_per_s_wall=round(n / wall), events_per_s_cpu=round(n / cpu),
           seconds_wall=round(wall, 3), seconds_cpu=round(cpu, 3))

    # the whole backtest pipeline without orders: ema_cross computing its EMAs on every trade but
    # never trading (warmup longer than the run), crypto venue and default controls on every event
    def quiet() -> dict[str, Any]:
        return backtest("ema_cross", tape=tape, topics=[TOPIC], params={"fast": 10, "slow": 50, "warmup": n + 1},
                        keep=False, out_tape=None).summary

    wall, cpu, summary = timed(quiet, args.repeat)
    assert summary["intents"] == 0
    report("ema_cross_no_orders", events_per_s_wall=round(n / wall), events_per_s_cpu=round(n / cpu),
           seconds_wall=round(wall, 3), seconds_cpu=round(cpu, 3))

    def ema() -> dict[str, Any]:
        return backtest("ema_cross", tape=tape, topics=[TOPIC], params={"fast": 10, "slow": 50}, keep=False,
                        out_tape=None).summary

    wall, cpu, summary = timed(ema, args.repeat)
    report("ema_cross", events_per_s_wall=round(n / wall), events_per_s_cpu=round(n / cpu),
           seconds_wall=round(wall, 3), seconds_cpu=round(cpu, 3), intents=summary["intents"],
           fills=summary["fills"], pnl=summary["pnl_exact"], intents_sha256=summary["intents_sha256"])

    # the same with market orders filled in full at the last trade (the peers' fill model; ~29k orders)
    def ema_naive() -> dict[str, Any]:
        return backtest("ema_cross", tape=tape, topics=[TOPIC], params={"fast": 10, "slow": 50}, venue="naive",
                        keep=False, out_tape=None).summary

    wall, cpu, summary = timed(ema_naive, args.repeat)
    report("ema_cross_naive_venue", events_per_s_wall=round(n / wall), events_per_s_cpu=round(n / cpu),
           seconds_wall=round(wall, 3), seconds_cpu=round(cpu, 3), intents=summary["intents"],
           fills=summary["fills"], pnl=summary["pnl_exact"])

    # per-100k CPU time and current RSS through one full run (the same work as `ema`)
    from robots.controls import controls_from_config
    from robots.registry import get_robot
    from robots.venues import ledger_for, make_venue

    venue = make_venue("crypto")
    t = _Timed(TapeSource(tape, [TOPIC]))
    gc.collect()
    Runner(get_robot("ema_cross"), venue=venue, controls=controls_from_config({}), ledger=ledger_for(venue)).run(t)
    per = [round(b - a, 3) for a, b in zip(t.marks, t.marks[1:], strict=False)]
    report("ema_cross_cpu_s_per_100k", seconds=per, rss_mb=[round(r) for r in t.rss], peak_rss_mb=round(max_rss_mb()))
    tape.close()
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
