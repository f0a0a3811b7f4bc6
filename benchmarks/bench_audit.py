"""Audit cost vs the backtest it audits: `ticktape audit` of an N-event `ema_cross` run.

    python -m benchmarks.bench_audit [N]

Builds N deterministic trades, backtests `ema_cross` with its output on a tape (as
`ticktape backtest` does), then audits the run (recompute + byte-for-byte compare) and
replays it into DuckDB (state per step). Target: audit < 2x the backtest's time.
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path

import duckdb

from analyzer.audit import audit
from analyzer.replay import replay
from benchmarks.common import machine, report
from robots.backtest import backtest
from ticktape.events import Trade
from ticktape.tape.file import FileTape


def make_tape(root: Path, n: int) -> None:
    """A noisy sine: the robot trades a few hundred times per 20k events."""
    ts0 = 1_700_000_000_000_000_000
    with FileTape(root) as tape:
        for start in range(0, n, 10_000):
            tape.append("md.sim.trade", [
                Trade("sim", "BTCUSDT", ts0 + i * 100_000_000, ts0 + i * 100_000_000,
                      round(30_000 + 200 * math.sin(i / 300) + (i * 7919 % 13) - 6, 2), 0.01, "BUY", str(i))
                for i in range(start, min(n, start + 10_000))])


def measure(work: Path, n: int) -> dict[str, float]:
    """N trades on a tape in `work`, an `ema_cross` backtest onto `work/out` (run id "bench"), then its audit:
    wall and CPU seconds of each and their ratios. Raises if the audit finds the run not identical."""
    make_tape(work / "md", n)
    uri_in, uri_out = f"file:{work / 'md'}", f"file:{work / 'out'}"
    backtest("ema_cross", tape=uri_in, out_tape=f"file:{work / 'warm'}", run_id="warm", keep=False)  # warm caches
    c0, w0 = time.process_time(), time.perf_counter()
    res = backtest("ema_cross", tape=uri_in, out_tape=uri_out, run_id="bench", keep=False)
    bt_cpu, bt_wall = time.process_time() - c0, time.perf_counter() - w0
    with FileTape(work / "out") as out:
        c0, w0 = time.process_time(), time.perf_counter()
        result = audit(out, "bench")
        au_cpu, au_wall = time.process_time() - c0, time.perf_counter() - w0
    if not result.identical:
        raise RuntimeError(result.line())
    return {"events": res.summary["events"], "intents": res.summary["intents"], "recomputed": result.recomputed,
            "backtest_wall_s": round(bt_wall, 3), "backtest_cpu_s": round(bt_cpu, 3),
            "audit_wall_s": round(au_wall, 3), "audit_cpu_s": round(au_cpu, 3),
            "cpu_ratio_to_backtest": round(au_cpu / bt_cpu, 2), "wall_ratio_to_backtest": round(au_wall / bt_wall, 2)}


def figures(n: int = 1_000_000) -> dict[str, float]:
    """`measure` in a temporary directory."""
    work = Path(tempfile.mkdtemp(prefix="bench_audit_"))
    try:
        return measure(work, n)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=1_000_000)
    parser.add_argument("--replay", action="store_true", help="Also time `ticktape replay` into DuckDB.")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_audit_"))
    try:
        f = measure(work, args.n)
        report("backtest", machine=machine(), events=f["events"], intents=f["intents"],
               wall_s=f["backtest_wall_s"], cpu_s=f["backtest_cpu_s"])
        report("audit", events=f["events"], intents=f["recomputed"], wall_s=f["audit_wall_s"],
               cpu_s=f["audit_cpu_s"], cpu_ratio_to_backtest=f["cpu_ratio_to_backtest"],
               wall_ratio_to_backtest=f["wall_ratio_to_backtest"])
        with FileTape(work / "out") as out:
            if args.replay:
                con = duckdb.connect(str(work / "r.duckdb"))
                c0, w0 = time.process_time(), time.perf_counter()
                s = replay(out, "bench", con)
                report("replay", steps=s.steps, states=s.states, wall_s=round(time.perf_counter() - w0, 3),
                       cpu_s=round(time.process_time() - c0, 3))
                con.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
