"""`python -m benchmarks peers`: ticktape against NautilusTrader, backtrader and flumine, one command.

Every engine runs as its own subprocess (ticktape through `ticktape backtest`, the peers through
the scripts in `children/` in their own venvs), interleaved round by round (A, B, C, A, B, C, ...)
so a change in the shared machine's load hits every engine alike. Per run: wall time, CPU time of
the process (`os.wait4`'s rusage), peak RSS (`ru_maxrss`), the run phase's seconds as the engine
reports them, seconds per 100k events where the engine reports them, and the decisions. The
decisions are compared (`compare.py`) before any ratio is computed; a mismatch stops the run.
Then the pipeline pieces (`pipeline.py`: codec, file tape, Kafka, imports, load, audit), each in its own
process, against their targets; `--pipeline-only` runs just those.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.peers import compare, data, pipeline, report, venvs

REPO = Path(__file__).resolve().parents[2]
CHILDREN = Path(__file__).resolve().parent / "children"
RESULTS = REPO / "benchmarks" / "results" / "peers.json"
PIECE_TIMEOUT_S = 1200.0
"""A pipeline piece still running after this long (a quarter of it under --quick) is killed and reported failed."""


def run_process(cmd: list[str], *, cwd: Path = REPO) -> dict[str, Any]:
    """Run `cmd`; its wall seconds, CPU seconds, peak RSS (MB), stdout; raise on failure."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"wall_s": wall, "stdout": proc.stdout}


def run_measured(cmd: list[str], *, cwd: Path = REPO, timeout: float | None = None) -> dict[str, Any]:
    """Like `run_process`, with the child's CPU time and peak RSS.

    The child runs under `/usr/bin/time`: Linux carries a process's RSS high-water mark over fork
    and exec, so a child forked straight from this (large) process would report at least our own
    RSS as its peak. `time` is small, and reports its child's own `ru_maxrss`. With `timeout`, the
    child runs in its own process group, which is killed (all of it) after `timeout` seconds.
    """
    import signal
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        t0 = time.perf_counter()
        with open(os.devnull, "rb") as devnull:
            proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss.name, *cmd], cwd=cwd, stdin=devnull,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=timeout is not None)
            import threading

            chunks: dict[str, bytes] = {}

            def drain(name: str, stream: Any) -> None:
                chunks[name] = stream.read()

            threads = [threading.Thread(target=drain, args=(n, s)) for n, s in (("out", proc.stdout),
                                                                                 ("err", proc.stderr))]
            for t in threads:
                t.start()
            timed_out = threading.Event()

            def kill() -> None:
                timed_out.set()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

            timer = threading.Timer(timeout, kill) if timeout is not None else None
            if timer is not None:
                timer.start()
            _, status, ru = os.wait4(proc.pid, 0)  # this child's (and its child's) rusage alone
            wall = time.perf_counter() - t0
            if timer is not None:
                timer.cancel()
            proc.returncode = os.waitstatus_to_exitcode(status)
            for t in threads:
                t.join()
        peak_kb = int(rss.read().strip().splitlines()[-1] or 0) if proc.returncode == 0 else 0
    if proc.returncode != 0:
        err = chunks.get("err", b"").decode(errors="replace")
        if timed_out.is_set():
            err += f"\ntimed out after {timeout:.0f} s"
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed ({proc.returncode}):\n{err[-3000:]}")
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "maxrss_mb": peak_kb / 1024,
            "stdout": chunks.get("out", b"").decode()}


# ---------------------------------------------------------------- one run of each engine

def _ticktape_backtest(tape_uri: str, out: Path, keep: bool, run_id: str, args: list[str]) -> dict[str, Any]:
    """One `ticktape backtest ... --json` measured as a process: its figures and summary fields, and
    with `keep` its output tape left at `out` (else `--no-out`)."""
    shutil.rmtree(out, ignore_errors=True)
    m = run_measured([sys.executable, "-m", "ticktape", "--tape", tape_uri, "backtest", *args, "--json",
                      *(["--out", f"file:{out}"] if keep else ["--no-out"]), "--run-id", run_id, "--no-progress"])
    summary = json.loads(m.pop("stdout"))
    import ticktape

    return {**m, "engine": "ticktape", "version": getattr(ticktape, "__version__", "main"),
            "events": summary["events"], "run_s": summary["wall_time_s"], "segments_s": summary.get("segments_s", []),
            "intents_sha256": summary["intents_sha256"]}


def ticktape_ema(tape_uri: str, work: Path, *, keep: bool = False) -> dict[str, Any]:
    """`ticktape backtest ema_cross` on the naive venue (market orders fill in full at the last trade).

    Timed runs write no output tape (`--no-out`: the peers write none either); `keep=True` is the one
    untimed run whose output tape gives the fills, and its intents digest must equal the timed runs'.
    The first run on a fresh tape also writes the Parquet copies of its sealed segments (once, ~0.8 s
    per 1M trades); the median of the rounds leaves that out.
    """
    out = work / "ema-out"
    res = _ticktape_backtest(tape_uri, out, keep, "peers-ema",
                             ["ema_cross", "--param", f"topic={data.TRADE_TOPIC}", "--venue", "naive"])
    if keep:
        from ticktape.events import OrderFilled
        from ticktape.tape import open_tape

        tape = open_tape(f"file:{out}")
        res["fills"] = [[e.ts_event, e.side, e.price, e.size]
                        for e in tape.read_events("orders.event", 0)  # type: ignore[attr-defined]
                        if type(e) is OrderFilled]
        tape.close()
    return res


def ticktape_betfair(tape_uri: str, work: Path, *, keep: bool = False) -> dict[str, Any]:
    """`ticktape backtest betfair_back_favourite` (its defaults: stake 2, 60 s before the off); see `ticktape_ema`."""
    out = work / "bf-out"
    res = _ticktape_backtest(tape_uri, out, keep, "peers-bf", ["betfair_back_favourite"])
    if keep:
        from ticktape.events import OrderFilled, PlaceOrder
        from ticktape.tape import open_tape

        tape = open_tape(f"file:{out}")
        placed = {e.client_order_id: e for e in tape.read_events("orders.intent", 0)  # type: ignore[attr-defined]
                  if type(e) is PlaceOrder}
        matched: dict[str, float] = dict.fromkeys(placed, 0.0)
        for e in tape.read_events("orders.event", 0):  # type: ignore[attr-defined]
            if type(e) is OrderFilled:
                matched[e.client_order_id] += e.size
        tape.close()
        bets = [{"market_id": p.instrument.split(":")[0], "selection_id": int(p.instrument.split(":")[1]),
                 "price": p.price, "size": p.size, "matched": matched[cid]} for cid, p in placed.items()]
        res["bets"] = sorted(bets, key=lambda b: b["market_id"])
    return res


def decisions_of(timed: list[dict[str, Any]], kept: dict[str, Any]) -> dict[str, Any]:
    """The untimed run that kept its output, after checking it decided as every timed run did."""
    digests = {r["intents_sha256"] for r in timed}
    if digests != {kept["intents_sha256"]}:
        raise compare.DecisionMismatch(f"ticktape's runs placed different intents: {digests}, kept "
                                       f"{kept['intents_sha256']}")
    return kept


def child(peer: str, script: str, src: Path, work: Path) -> dict[str, Any]:
    """A peer's child script in its venv; its figures from the JSON file it writes."""
    out = work / f"{peer}.json"
    out.unlink(missing_ok=True)
    m = run_measured([str(venvs.python_of(REPO, peer)), str(CHILDREN / script), str(src), str(out)])
    m.pop("stdout")
    return {**json.loads(out.read_text()), **m}


# ---------------------------------------------------------------- the comparison

def median_figures(runs: list[dict[str, Any]], events: int) -> dict[str, Any]:
    """Medians over rounds; events/s of the run phase and of the whole process over the same `events`."""
    med = {k: statistics.median(r[k] for r in runs) for k in ("wall_s", "cpu_s", "run_s", "maxrss_mb")}
    segs = [r["segments_s"] for r in runs if r.get("segments_s")]
    return {**{k: round(v, 3) for k, v in med.items()}, "events": events,
            "run_eps": round(events / med["run_s"]), "process_eps": round(events / med["wall_s"]),
            "cpu_eps": round(events / med["cpu_s"]), "version": runs[0].get("version", ""),
            "segments_s": [round(statistics.median(x), 4) for x in zip(*segs, strict=False)] if segs else [],
            "rounds": [{k: round(r[k], 3) for k in ("wall_s", "cpu_s", "run_s", "maxrss_mb")} for r in runs]}


def interleave(rounds: int, engines: dict[str, Callable[[], dict[str, Any]]], loads: list[float]
               ) -> dict[str, list[dict[str, Any]]]:
    """Run every engine once per round, in order, sampling the 1-minute load average before each."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in engines}
    for r in range(rounds):
        for name, fn in engines.items():
            loads.append(os.getloadavg()[0])
            got = fn()
            runs[name].append(got)
            print(f"peers: round {r + 1}/{rounds} {name}: wall {got['wall_s']:.2f} s, run {got['run_s']:.2f} s, "
                  f"peak {got['maxrss_mb']:.0f} MB", file=sys.stderr)
    return runs


def ema_section(trades: int, seed: int, rounds: int, work: Path, loads: list[float]) -> dict[str, Any]:
    """Trades → Parquet + tape (checked equal), then the interleaved EMA runs; the decisions checked."""
    d = work / f"trades-{trades}-{seed}"
    parquet, tape_uri = d / "trades.parquet", f"file:{d / 'tape'}"
    if not (d / "checked").exists():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        table = data.make_trades(trades, seed)
        data.write_parquet(table, parquet)
        csv = d / f"{data.SYMBOL}-trades.csv"
        data.write_binance_csv(table, csv)
        data.import_into_tape(csv, tape_uri)
        data.check_tape_matches(tape_uri, table)
        csv.unlink()
        (d / "checked").write_text("the tape's trades equal the Parquet's\n")
    runs = interleave(rounds, {
        "ticktape": lambda: ticktape_ema(tape_uri, work),
        "nautilus_trader": lambda: child("nautilus", "nautilus_ema.py", parquet, work),
        "backtrader": lambda: child("backtrader", "backtrader_ema.py", parquet, work),
    }, loads)
    kept = decisions_of(runs["ticktape"], ticktape_ema(tape_uri, work, keep=True))
    last = {"ticktape": kept["fills"], **{name: rs[-1]["fills"] for name, rs in runs.items() if name != "ticktape"}}
    counts = {name: compare.side_counts(f) for name, f in last.items()}
    compare.require_equal("ema_cross buy/sell counts", compare.check_orders(counts))
    figures: dict[str, Any] = {name: median_figures(rs, trades) for name, rs in runs.items()}
    for name in ("nautilus_trader", "backtrader"):
        figures[name]["fill_price_differences"] = compare.fill_price_differences(last["ticktape"], last[name])
    figures["buys"], figures["sells"] = counts["ticktape"]
    return figures


def betfair_section(markets: int, rounds: int, work: Path, loads: list[float]) -> dict[str, Any]:
    """The Betfair set → tape, then interleaved runs; every bet checked equal."""
    d = work / f"betfair-{markets}"
    tape_uri = f"file:{d / 'tape'}"
    if not (d / "imported").exists():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        bset = data.make_betfair_set(data.shared_data() / "betfair", markets, d)
        run_process([sys.executable, "-m", "ticktape", "--tape", tape_uri, "import", "betfair", str(bset.stream),
                     "--strict"])
        (d / "imported").write_text(str(bset.updates))
    updates = int((d / "imported").read_text())
    runs = interleave(rounds, {
        "ticktape": lambda: ticktape_betfair(tape_uri, work),
        "flumine": lambda: child("flumine", "flumine_back_favourite.py", d / "markets", work),
    }, loads)
    kept = decisions_of(runs["ticktape"], ticktape_betfair(tape_uri, work, keep=True))
    ours = [compare.Bet.of(b) for b in kept["bets"]]
    theirs = [compare.Bet.of(b) for b in runs["flumine"][-1]["bets"]]
    compare.require_equal("betfair_back_favourite bets", compare.check_bets(ours, theirs))
    figures: dict[str, Any] = {name: median_figures(rs, updates) for name, rs in runs.items()}
    figures["bets"] = len(ours)
    return figures


def ratios(figures: dict[str, Any], ours: str, peers: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """ticktape's events/s over each peer's (run phase, whole process, per CPU second)."""
    return {p: {k: round(figures[ours][k] / figures[p][k], 1) for k in ("run_eps", "process_eps", "cpu_eps")}
            for p in peers}


# ---------------------------------------------------------------- the report

def _ratio(r: dict[str, float] | None) -> str:
    return f"{r['run_eps']}× / {r['process_eps']}×" if r else ""


def markdown(res: dict[str, Any]) -> str:
    """The Peers section's body from the results: the engines compared, then the pipeline pieces (either
    may be absent: `--pipeline-only` measures only the pieces)."""
    parts = [peers_markdown(res)] if "ema" in res["figures"] else [
        "## Peers — `python -m benchmarks peers`\n\n"
        f"Measured {res['date']} on {res['machine']['cpus']} cores ({res['machine']['cpu']}), Python "
        f"{res['machine']['python']}; `--pipeline-only`: the engines were not compared."]
    if "pipeline" in res["figures"]:
        parts.append(pipeline.markdown(res["figures"]["pipeline"], res["pipeline_measured"]))
    return "\n\n".join(parts)


def peers_markdown(res: dict[str, Any]) -> str:
    """The engines' comparison: machine and load, the EMA and the Betfair tables."""
    m, ema, bf = res["machine"], res["figures"]["ema"], res["figures"]["betfair"]
    loaded = " — a loaded, shared machine: wall figures are pessimistic" if res["load"]["median"] > 1 else ""
    lines = [
        "## Peers — `python -m benchmarks peers`",
        "",
        f"Measured {res['date']} on {m['cpus']} cores ({m['cpu']}), Python {m['python']}; "
        f"{res['params']['rounds']} interleaved rounds, medians. Load average (1 min) while running: "
        f"{res['load']['min']:.1f}-{res['load']['max']:.1f} (median {res['load']['median']:.1f}) on "
        f"{m['cpus']} cores{loaded}. "
        "Every engine is its own process; *run* is the engine's run phase as it reports it, *process* the "
        "whole process (start-up, imports, loading the data) by wall time, *CPU* per CPU second of the process.",
        "",
        f"**EMA 10/50 cross, market orders, {ema['ticktape']['events']:,} trades** (seeded random walk, seed "
        f"{res['params']['seed']}; ticktape reads the tape `ticktape import binance` wrote, checked equal to the "
        f"peers' Parquet). Same decisions in all three: {ema['buys']:,} buys, {ema['sells']:,} sells.",
        "",
        "| engine | run events/s | process events/s | CPU events/s | run s | wall s | peak RSS MB | "
        "ticktape × (run / process) | fill prices differing |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in ("ticktape", "nautilus_trader", "backtrader"):
        f = ema[name]
        r = res["ratios"]["ema"].get(name)
        lines.append(f"| {name} {f['version']} | {f['run_eps']:,} | {f['process_eps']:,} | {f['cpu_eps']:,} | "
                     f"{f['run_s']:.2f} | {f['wall_s']:.2f} | {f['maxrss_mb']:.0f} | "
                     f"{_ratio(r)} | "
                     f"{f.get('fill_price_differences', '')} |")
    lines += [
        "",
        "Fill models: ticktape's `naive` venue (a market order fills in full at the last trade), Nautilus with "
        "`BestPriceFillModel` on trade ticks, backtrader with cheat-on-close on one-trade bars: all fill at the "
        "crossing trade's price, so fill prices agree (last column: fills whose price differs).",
        "",
        f"**Back the favourite, {bf['ticktape']['events']:,} market updates of {res['params']['markets']} Betfair "
        f"markets** (the recorded markets copied with unique ids, shifted {data.SHIFT_MS // 1000} s per copy so "
        f"they interleave). Same {bf['bets']} bets (market, runner, price, size, matched) in both.",
        "",
        "| engine | run updates/s | process updates/s | CPU updates/s | run s | wall s | peak RSS MB | "
        "ticktape × (run / process) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in ("ticktape", "flumine"):
        f = bf[name]
        r = res["ratios"]["betfair"].get(name)
        lines.append(f"| {name} {f.get('version', '')} | {f['run_eps']:,} | {f['process_eps']:,} | {f['cpu_eps']:,} | "
                     f"{f['run_s']:.2f} | {f['wall_s']:.2f} | {f['maxrss_mb']:.0f} | "
                     f"{_ratio(r)} |")
    segs = {n: ema[n]["segments_s"] for n in ("ticktape", "nautilus_trader", "backtrader") if ema[n]["segments_s"]}
    if segs:
        lines += ["", "Seconds per 100k trades, wall, in the run phase (median over rounds; ticktape's from its "
                  "summary's `segments_s`): "
                  + "; ".join(f"{n}: {', '.join(f'{x:.3f}' for x in v)}" for n, v in segs.items()) + "."]
    lines += ["", f"Raw figures: `{RESULTS.relative_to(REPO)}`."]
    return "\n".join(lines)


def pipeline_section(quick: bool, kafka: str | None, loads: list[float],
                     pieces: tuple[str, ...] = pipeline.PIECES) -> dict[str, Any]:
    """The pipeline pieces, each in its own process. Without `kafka` (HOST:PORT) a broker is started with
    `scripts/kafka` for the pieces that need one (run first) and stopped before the others; without Java
    the Kafka rows are skipped with the reason."""
    import tempfile

    from benchmarks import bench_kafka

    skip: dict[str, str] = {}
    run_dir: list[Path] = []  # the broker's directory, once started

    def broker() -> str:
        if kafka:
            return kafka
        run_dir.append(Path(tempfile.mkdtemp(prefix="ticktape-bench-kafka-")))
        print("peers: pipeline: starting a Kafka broker (scripts/kafka)", file=sys.stderr)
        return bench_kafka.start_broker(run_dir[0])

    if "kafka" in pieces and not kafka and (reason := bench_kafka.missing_prerequisite()):
        skip["kafka"] = reason
        print(f"peers: pipeline: skipping the Kafka rows: {reason}", file=sys.stderr)

    def measured(cmd: list[str]) -> dict[str, Any]:
        loads.append(os.getloadavg()[0])
        return run_measured(cmd, timeout=PIECE_TIMEOUT_S * (0.25 if quick else 1))

    # The broker started here lives only while the pieces that need it run: an idle JVM beside the
    # other pieces slowed their CPU-second figures (the whole Betfair import command measured 21k
    # updates per CPU-second with it up, 32-33k without).
    needs = tuple(p for p in pieces if pipeline.REGISTRY[p].needs_broker)
    try:
        out = pipeline.run_pieces(measured, quick=quick, kafka=broker, skip=skip, pieces=needs)
    finally:
        for d in run_dir:
            bench_kafka.stop_broker(d)
    rest = pipeline.run_pieces(measured, quick=quick, skip=skip, pieces=tuple(p for p in pieces if p not in needs))
    return {p: (out.get(p) or rest[p]) for p in pieces}


def machine() -> dict[str, Any]:
    """What ran the benchmark."""
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    return {"cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "system": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the comparison (or the README check), write the results."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks peers", description=__doc__.splitlines()[0])
    ap.add_argument("--trades", type=int, default=1_000_000)
    ap.add_argument("--markets", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--quick", action="store_true",
                    help="100k trades, 20 markets, 1 round, pipeline pieces at a tenth of their size; writes no files")
    ap.add_argument("--pipeline-only", action="store_true",
                    help="only the pipeline pieces (codec, file tape, Kafka, imports, load, audit), not the engines")
    ap.add_argument("--no-pipeline", action="store_true", help="only the engines, not the pipeline pieces")
    ap.add_argument("--kafka", metavar="HOST:PORT", default=os.environ.get("TICKTAPE_KAFKA"),
                    help="the broker for the Kafka rows (default: $TICKTAPE_KAFKA, else one started by scripts/kafka)")
    ap.add_argument("--check-readme", action="store_true",
                    help="flag README figures more than 20%% away from the last measured (exit 0 either way)")
    ap.add_argument("--work", type=Path, default=REPO / ".cache" / "bench-peers")
    ap.add_argument("--no-write", action="store_true", help="print the results; leave BENCHMARKS.md and the JSON")
    args = ap.parse_args(argv)
    if args.check_readme:
        flags = report.check_readme_files(REPO / "README.md", RESULTS)
        for f in flags:
            print(f"peers: FLAG {f}")
        print(f"peers: README check: {len(flags)} figure(s) flagged" if flags else "peers: README figures agree")
        return 0  # flag, don't fail the build
    if args.pipeline_only and args.no_pipeline:
        ap.error("--pipeline-only and --no-pipeline exclude each other")
    if args.quick:
        args.trades, args.markets, args.rounds, args.no_write = 100_000, 20, 1, True
    loads: list[float] = []
    t0 = time.time()
    res: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0)), "machine": machine(),
        "params": {"trades": args.trades, "markets": args.markets, "rounds": args.rounds, "seed": args.seed,
                   "quick": args.quick},
        "figures": {},
    }
    if not args.pipeline_only:
        res["versions"] = {name: venvs.ensure(REPO, name) for name in venvs.PEERS}
        args.work.mkdir(parents=True, exist_ok=True)
        ema = ema_section(args.trades, args.seed, args.rounds, args.work, loads)
        bf = betfair_section(args.markets, args.rounds, args.work, loads)
        res["figures"] = {"ema": ema, "betfair": bf}
        res["ratios"] = {"ema": ratios(ema, "ticktape", ("nautilus_trader", "backtrader")),
                         "betfair": ratios(bf, "ticktape", ("flumine",))}
    if not args.no_pipeline:
        p0 = len(loads)
        res["figures"]["pipeline"] = pipeline_section(args.quick, args.kafka, loads)
        res["pipeline_measured"] = {"date": time.strftime("%Y-%m-%d %H:%M UTC"), "quick": args.quick,
                                    "load": {"min": min(loads[p0:], default=0.0), "max": max(loads[p0:], default=0.0)}}
    loads.append(os.getloadavg()[0])
    res["load"] = {"min": min(loads), "max": max(loads), "median": statistics.median(loads), "samples": loads}
    if args.pipeline_only and not args.no_write and RESULTS.exists():
        # keep the engines' last comparison: only the pipeline's figures are new
        last = json.loads(RESULTS.read_text())
        last["figures"]["pipeline"] = res["figures"]["pipeline"]
        last["pipeline_measured"] = res["pipeline_measured"]
        res = last
    text = markdown(res)
    print(text)
    print(f"peers: {time.time() - t0:.0f} s in all", file=sys.stderr)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(res, indent=1) + "\n")
        bench = REPO / "BENCHMARKS.md"
        bench.write_text(report.replace_section(bench.read_text(), text))
    return 0
