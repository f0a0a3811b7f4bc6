"""What `--search optuna:N` adds per trial: Optuna's ask + tell, against one backtest.

    python -m benchmarks.bench_optuna [TRADES] [--trials 64,256] [--batch 2] [--dir DIR]

(1) `robots.sweep_optuna.optuna_search` itself, over the 8 x 8 `ema_cross` grid of
`benchmarks.bench_sweep`, with a batch runner that answers at once from a fixed table (so the
time is TPE's ask, suggest and tell, and the search's bookkeeping, nothing else), per trial, for
each trial count: TPE's cost grows with the trials already told. (2) One `ema_cross` backtest of
TRADES trades on a file tape (as one sweep point, no output tape). Prints one JSON line per
figure (`benchmarks.common.report`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_sweep import GRID, make_tape
from benchmarks.common import machine, report
from robots.sweep import sweep
from robots.sweep_optuna import optuna_search


def ask_tell_ms(trials: int, batch: int) -> tuple[float, int]:
    """Milliseconds per trial of an optuna search whose runs cost nothing; and the distinct sets run."""
    def run_batch(todo: list[tuple[int, dict[str, object], str]]) -> dict[str, dict[str, Any]]:
        # a smooth made-up objective, so TPE has something to model (a constant would be a random search)
        return {k: {"params": p, "pnl": -abs(int(str(p["fast"])) - 10) - abs(int(str(p["slow"])) - 80) / 10}
                for _, p, k in todo}

    t0 = time.perf_counter()
    rows = optuna_search(GRID, trials, seed=0, objective="pnl", maximize=True, batch=batch,
                         key=lambda p: json.dumps(p, sort_keys=True), known={}, run_batch=run_batch)
    return (time.perf_counter() - t0) * 1e3 / trials, len(rows)


def main() -> None:
    """Run both measurements and print them."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trades", nargs="?", type=int, default=250_000)
    ap.add_argument("--trials", default="64,256")
    ap.add_argument("--batch", type=int, default=2, help="trials asked at once (the engine's slots)")
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    print(f"# {machine()}")
    ask_tell_ms(4, args.batch)  # warm: Optuna's import and first study are not a trial's cost
    for n in (int(x) for x in args.trials.split(",")):
        ms, distinct = ask_tell_ms(n, args.batch)
        report("optuna_ask_tell", trials=n, batch=args.batch, distinct_sets=distinct, ms_per_trial=round(ms, 2))
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        uri = make_tape(Path(d) / "tape", args.trades)
        point = {"fast": ["10"], "slow": ["80"]}
        sweep("ema_cross", point, tape=uri, out_tape=None)  # warm: imports, page cache
        t0 = time.perf_counter()
        sweep("ema_cross", point, tape=uri, out_tape=None)
        report("ema_cross_backtest", trades=args.trades, ms=round((time.perf_counter() - t0) * 1e3, 1))


if __name__ == "__main__":
    main()
