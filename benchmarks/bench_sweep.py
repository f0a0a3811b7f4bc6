"""Sweep throughput: a 64-point `ema_cross` grid (fast x slow, 8 x 8) on a file tape, local and on Ray.

    python -m benchmarks.bench_sweep [TRADES] [--dir DIR] [--skip-local] [--skip-ray]

Measures runs/s of the whole sweep (every run written to the output tape, as `ticktape sweep`
does) with the local engine in 1 and 2 processes and on a Ray cluster started here on 127.0.0.1
with 1 and then 2 one-CPU nodes; every configuration's intents_sha256 per point must equal the
first one's. Then Ray's per-task cost: (a) a no-op task's round trip on the cluster, (b) the
64-point sweep over a 1,000-trade tape, where the backtest itself is ~nothing, minus the same
sweep run locally in one process. Prints one JSON line per figure (`benchmarks.common.report`).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import machine, report
from robots.sweep import sweep
from ticktape.demo import synthetic_trades
from ticktape.tape import open_tape

TOPIC = "md.sim.trade"
GRID = {"fast": ["3", "5", "8", "10", "13", "16", "20", "25"],
        "slow": ["30", "40", "50", "60", "80", "100", "120", "150"]}


def make_tape(path: Path, trades: int) -> str:
    uri = f"file:{path}"
    tape = open_tape(uri)
    for i in range(0, trades, 200_000):
        batch = synthetic_trades(min(200_000, trades - i), ts0=1_700_000_000_000_000_000 + i * 100_000_000, seed=7 + i)
        tape.append(TOPIC, batch)
    tape.close()
    return uri


def tape_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in (path / TOPIC).rglob("*") if f.is_file())


def timed(name: str, fn: Callable[[], list[dict[str, Any]]]) -> tuple[float, list[dict[str, Any]]]:
    t0 = time.perf_counter()
    rows = fn()
    wall = time.perf_counter() - t0
    in_task = sum(r["wall_time_s"] for r in rows)
    report(name, runs=len(rows), wall_s=round(wall, 2), runs_per_s=round(len(rows) / wall, 2),
           backtest_s_sum=round(in_task, 2), load1=round(os.getloadavg()[0], 2))
    return wall, rows


def hashes(rows: list[dict[str, Any]]) -> dict[str, str]:
    return {json.dumps(r["params"], sort_keys=True): r["intents_sha256"] for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trades", nargs="?", type=int, default=250_000)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--skip-local", action="store_true")
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()
    print(f"# {machine()}; {args.trades:,} trades, {len(GRID['fast']) * len(GRID['slow'])} points", flush=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        root = Path(d)
        big, tiny = make_tape(root / "big", args.trades), make_tape(root / "tiny", 1_000)
        report("input", trades=args.trades, topic_bytes=tape_bytes(root / "big"))
        runs: dict[str, dict[str, str]] = {}

        def run(name: str, uri: str, out: str, **kw: Any) -> float:
            wall, rows = timed(name, lambda: sweep("ema_cross", GRID, tape=uri, out_tape=out, sweep_id=name, **kw))
            runs[name] = hashes(rows)
            return wall

        tiny_local = 0.0
        if not args.skip_local:
            run("local_1", big, f"file:{root / 'out'}", workers=1)
            run("local_2", big, f"file:{root / 'out'}", workers=2)
            tiny_local = run("tiny_local_1", tiny, f"file:{root / 'out-tiny'}", workers=1)
        if not args.skip_ray:
            from tests.ray_fixtures import RayCluster

            cluster = RayCluster()
            try:
                address = cluster.start(worker_nodes=0)
                import ray

                ray.init(address=address, logging_level="WARNING", log_to_driver=False)
                noop = ray.remote(num_cpus=1)(lambda: None)
                ray.get([noop.remote() for _ in range(50)])  # warm the worker up
                t0 = time.perf_counter()
                ray.get([noop.remote() for _ in range(500)])
                report("ray_noop_task", tasks=500, per_task_ms=round((time.perf_counter() - t0) / 500 * 1000, 2))
                run("ray_1", big, f"file:{root / 'out'}", engine="ray", address=address)
                tiny_ray = run("tiny_ray_1", tiny, f"file:{root / 'out-tiny'}", engine="ray", address=address)
                if tiny_local:
                    report("ray_extra_per_task_vs_local", per_task_ms=round((tiny_ray - tiny_local) / 64 * 1000, 1))
                cluster.add_node()
                deadline = time.monotonic() + 60
                while ray.cluster_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
                    time.sleep(0.2)
                run("ray_2", big, f"file:{root / 'out'}", engine="ray", address=address)
                ray.shutdown()
            finally:
                cluster.stop()
        big_runs = [v for k, v in runs.items() if not k.startswith("tiny")]
        same = all(r == big_runs[0] for r in big_runs)
        report("identical_intents_sha256_per_point", configurations=len(big_runs), same=same)
        if not same:
            raise SystemExit("intents_sha256 differ between engines: determinism is broken")


if __name__ == "__main__":
    main()
