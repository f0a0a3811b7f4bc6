"""Betfair backtest: `betfair_back_favourite` on the two recorded markets replicated to 200 markets.

    python -m benchmarks.bench_betfair_backtest [--copies 100] [--repeat 3] [--flumine-python PY]

Replicates `/work/shared/data/betfair/1.197931750` and `1.197931751` COPIES times each with
distinct market ids (1.9CCCCCCKK), as 200 single-market stream files (flumine's input) and as
one stream with the markets interleaved by publish time (what a recording of 200 simultaneous
markets looks like; `--distinct`: with each copy's ladder sizes scaled, see `make_inputs`), imports that
stream once into a file tape, then times:

* `tape`: `robots.backtest.backtest("betfair_back_favourite", tape=..., columnar=False)` from the
  tape (read and decode with the C decoder, runner, default controls, the simulated Betfair venue,
  the robot), best of `--repeat`; `tape_no_controls`: the same with pass-through controls;
* `in_memory` / `in_memory_no_controls`: the same on events already decoded in memory (runner +
  controls + venue + robot; without controls: runner + venue + robot only);
* `tape_columnar` (with `--columnar`, once): the default read path (`columnar=True`);
* `decode_only`: `FileTape.read_events` of the topic into a list (the floor of any run from the tape);
* `flumine`: the same strategy in flumine 3.x (`FlumineSimulation`, SimulatedClient, default
  latency and matching) over the 200 files, when flumine is importable by `--flumine-python`
  (default: this interpreter, else /tmp/flumine_venv/bin/python). flumine is not a dependency.

The strategy everywhere: from 60 s before the scheduled off, while the market is OPEN and not
in-play, back the runner with the lowest best back price, at that price, stake 2, once per
market. The bets (market, runner, price, matched size, average price) of ticktape and flumine
are compared and the differences printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "betfair"  # shared/ beside the repo
MARKETS = ("1.197931750", "1.197931751")
STAKE = 2.0
WINDOW_S = 60.0


def market_id(copy: int, k: int) -> str:
    """The id of copy `copy` of source market `k`."""
    return f"1.9{copy:06d}{k:02d}"


_PAIRS = ("atb", "atl", "trd", "spb", "spl")  # [price, size] ladders of a runner change
_LEVELS = ("batb", "batl", "bdatb", "bdatl")  # [level, price, size]


def _scaled_sizes(line: bytes, factor: float) -> bytes:
    """A stream line with every ladder size of its runner changes times `factor` (0, a removal, stays 0)."""
    import orjson

    msg = orjson.loads(line)
    for mc in msg.get("mc") or ():
        for rc in mc.get("rc") or ():
            for key in (*_PAIRS, *_LEVELS):
                for level in rc.get(key) or ():
                    level[-1] *= factor
    return orjson.dumps(msg)


def make_inputs(data: Path, copies: int, out: Path, distinct: bool = False) -> tuple[list[Path], Path, int]:
    """Write the per-market files and the interleaved stream; return (files, stream, market updates).

    The copies of a market are byte for byte the same apart from the market id, and interleaved by
    publish time they come one after another: a reader that caches by bytes finds each book ~copies
    times in a row, which 200 real markets would not give it. `distinct` scales every ladder size of
    copy c by 1 + c/1024: the same dynamics per market (a ladder that does not change in a market's
    update still does not), but no two copies share a ladder.
    """
    import orjson

    files: list[Path] = []
    rows: list[tuple[int, int, int, int, bytes]] = []
    (out / "markets").mkdir(parents=True, exist_ok=True)
    for k, market in enumerate(MARKETS):
        lines = [line for line in (data / market).read_bytes().splitlines() if line.strip()]
        pts = [orjson.loads(line)["pt"] for line in lines]
        old = f'"{market}"'.encode()
        for c in range(copies):
            new_id = market_id(c, k)
            new = [line.replace(old, f'"{new_id}"'.encode()) for line in lines]
            if distinct and c > 0:
                new = [_scaled_sizes(line, 1.0 + c / 1024) for line in new]
            path = out / "markets" / new_id
            path.write_bytes(b"\n".join(new) + b"\n")
            files.append(path)
            rows.extend((pt, c, k, i, line) for i, (pt, line) in enumerate(zip(pts, new, strict=True)))
    rows.sort()
    stream = out / "interleaved.stream"
    stream.write_bytes(b"\n".join(r[4] for r in rows) + b"\n")
    return files, stream, len(rows)


class _NoControls:
    """Pass-through controls: nothing tracked, nothing rejected."""

    def check(self, intent: Any) -> None:
        return None

    def on_event(self, event: Any) -> None:
        return None


def run_ticktape(tape_uri: str, repeat: int, updates: int, columnar: bool) -> dict[str, Any]:
    """Time the backtest variants; return rates and the bets of the last run."""
    from robots.backtest import backtest
    from ticktape.events import BetSettled, MarketBook
    from ticktape.tape import open_tape

    tape = open_tape(tape_uri)
    params = {"stake": str(STAKE), "seconds_before_off": str(WINDOW_S)}
    out: dict[str, Any] = {}
    best = float("inf")
    for _ in range(repeat):  # reading and decoding alone: the floor of any run from the tape
        t0 = time.perf_counter()
        events = list(tape.read_events("md.betfair.market", 0))
        best = min(best, time.perf_counter() - t0)
    assert sum(1 for e in events if type(e) is MarketBook) == updates
    out["decode_only"] = {"seconds": round(best, 3), "updates_per_s": round(updates / best),
                          "events_per_s": round(len(events) / best)}
    variants: list[tuple[str, dict[str, Any], int]] = [
        ("tape", {"tape": tape, "columnar": False}, repeat),
        ("tape_no_controls", {"tape": tape, "columnar": False, "controls": _NoControls()}, repeat),
        ("in_memory", {"events": events}, repeat),
        ("in_memory_no_controls", {"events": events, "controls": _NoControls()}, repeat),
    ]
    if columnar:  # the default columnar read path, once (slow on this tape: see BENCHMARKS.md)
        variants.append(("tape_columnar", {"tape": tape}, 1))
    res = None
    for name, kwargs, n in variants:
        best = float("inf")
        for _ in range(n):
            t0 = time.perf_counter()
            # out_tape=None: the measured run reads only, as it did before backtest() wrote runs by default
            res = backtest("betfair_back_favourite", params=params, out_tape=None, **kwargs)
            best = min(best, time.perf_counter() - t0)
        assert res is not None
        out[name] = {"seconds": round(best, 3), "updates_per_s": round(updates / best),
                     "events_per_s": round(res.summary["events"] / best), "intents": res.summary["intents"],
                     "fills": res.summary["fills"], "pnl": res.summary["pnl"], "fees": res.summary["fees"]}
    assert res is not None
    placed = {i.instrument.split(":")[0]: i.price for i in res.intent_events}
    bets = [{"market_id": e.market_id, "selection_id": e.selection_id, "price": placed[e.market_id],
             "size_matched": e.size_matched, "average_price": round(e.average_price_matched, 2), "profit": e.profit}
            for e in res.order_events if type(e) is BetSettled]
    out["bets"] = sorted(bets, key=lambda b: b["market_id"])
    out["variants"] = ["decode_only"] + [v[0] for v in variants]
    tape.close()
    return out


# ---------------------------------------------------------------- flumine (child process, its own interpreter)

def flumine_child(files_dir: str, stake: float = STAKE) -> None:
    """Run the strategy in flumine over the files in `files_dir`; print one JSON object.

    Also the reference of `tests/unit/robots/test_betfair_sim_recorded.py` (one market, stake 1000).
    """
    import logging

    from flumine import FlumineSimulation, clients
    from flumine.streams.betfairhistoricalstream import BetfairHistoricalStream

    from benchmarks.peers.children.flumine_back_favourite import BackFavourite

    logging.disable(logging.CRITICAL)
    files = sorted(str(p) for p in Path(files_dir).iterdir())
    client = clients.SimulatedClient()
    framework = FlumineSimulation(client=client)
    strategy = BackFavourite(streams=[BetfairHistoricalStream(file_path=f) for f in files],
                             max_order_exposure=max(1000, stake), max_selection_exposure=max(1000, stake))
    strategy.stake = stake
    framework.add_strategy(strategy)
    t0 = time.perf_counter()
    framework.run()
    seconds = time.perf_counter() - t0
    bets = []
    for market in framework.markets:
        for order in market.blotter:
            bets.append({"market_id": order.market_id, "selection_id": order.selection_id,
                         "price": order.order_type.price, "size_matched": order.size_matched,
                         "matches": [[t, size] for t, _, size in order.simulated.matched],
                         "average_price": round(order.average_price_matched or 0.0, 2),
                         "profit": order.simulated.profit})
    import flumine

    print(json.dumps({"seconds": seconds, "version": flumine.__version__,
                      "bets": sorted(bets, key=lambda b: b["market_id"])}))


def flumine_python(explicit: str | None) -> str | None:
    """An interpreter that can import flumine, or None."""
    candidates = [explicit] if explicit else [sys.executable, "/tmp/flumine_venv/bin/python"]
    for py in candidates:
        ok = bool(py) and Path(py).exists()
        if ok and subprocess.run([py, "-c", "import flumine"], capture_output=True).returncode == 0:
            return py
    return None


def run_flumine(py: str, files_dir: Path, updates: int, repeat: int) -> dict[str, Any]:
    """Best of `repeat` flumine runs in a child process."""
    repo = Path(__file__).resolve().parent.parent
    best: dict[str, Any] | None = None
    for _ in range(repeat):
        proc = subprocess.run([py, "-m", "benchmarks.bench_betfair_backtest", "--flumine-child", str(files_dir)],
                              capture_output=True, text=True, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)})
        if proc.returncode != 0:
            raise RuntimeError(f"flumine run failed:\n{proc.stderr[-3000:]}")
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        if best is None or got["seconds"] < best["seconds"]:
            best = got
    assert best is not None
    best["updates_per_s"] = round(updates / best["seconds"])
    best["seconds"] = round(best["seconds"], 3)
    return best


def compare(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[str]:
    """Differences between two bet lists (empty when they agree)."""
    keys = ("market_id", "selection_id", "price", "size_matched", "average_price", "profit")
    a = {b["market_id"]: tuple(b[k] for k in keys) for b in ours}
    b = {x["market_id"]: tuple(x[k] for k in keys) for x in theirs}
    diffs = [f"{m}: ticktape {a.get(m)} flumine {b.get(m)}" for m in sorted(set(a) | set(b)) if a.get(m) != b.get(m)]
    return diffs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=100, help="copies of each recorded market (100 -> 200 markets)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--flumine-python", default=None, help="interpreter with flumine installed")
    ap.add_argument("--no-flumine", action="store_true")
    ap.add_argument("--columnar", action="store_true", help="also time the default (columnar) tape read path once")
    ap.add_argument("--distinct", action="store_true",
                    help="scale each copy's ladder sizes by its own factor, so no two markets share a ladder")
    ap.add_argument("--flumine-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--stake", type=float, default=STAKE, help=argparse.SUPPRESS)  # the flumine child's
    args = ap.parse_args()
    if args.flumine_child:
        flumine_child(args.flumine_child, args.stake)
        return

    from benchmarks.common import machine, report
    from producers.betfair.historical import import_file
    from ticktape.tape import open_tape

    work = Path(tempfile.mkdtemp(prefix="bench-betfair-bt-"))
    try:
        files, stream, lines = make_inputs(args.data, args.copies, work, args.distinct)
        tape_uri = f"file:{work / 'tape'}"
        tape = open_tape(tape_uri)
        t0 = time.perf_counter()
        summary = import_file(tape, stream)
        import_s = time.perf_counter() - t0
        tape.close()
        n_events = summary.events.get("md.betfair.market", 0)
        updates = lines  # one market change per line in these files: one MarketBook each
        report("betfair_backtest_setup", machine=machine(), markets=len(files), distinct=args.distinct,
               updates=updates, events=n_events, import_seconds=round(import_s, 3))
        ours = run_ticktape(tape_uri, args.repeat, updates, args.columnar)
        for name in ours["variants"]:
            report(f"betfair_backtest_ticktape_{name}", **ours[name])
        py = None if args.no_flumine else flumine_python(args.flumine_python)
        if py is None:
            why = "--no-flumine" if args.no_flumine else "flumine not importable (--flumine-python PY)"
            report("betfair_backtest_flumine", skipped=why)
            return
        fl = run_flumine(py, work / "markets", updates, args.repeat)
        diffs = compare(ours["bets"], fl["bets"])
        report("betfair_backtest_flumine", version=fl["version"], seconds=fl["seconds"],
               updates_per_s=fl["updates_per_s"], bets=len(fl["bets"]))
        report("betfair_backtest_compare", bets_ticktape=len(ours["bets"]), bets_flumine=len(fl["bets"]),
               same_bets=not diffs, differences=diffs[:10],
               speedup_tape=round(ours["tape"]["updates_per_s"] / fl["updates_per_s"], 2),
               speedup_in_memory=round(ours["in_memory_no_controls"]["updates_per_s"] / fl["updates_per_s"], 2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
