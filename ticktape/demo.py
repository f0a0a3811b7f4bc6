"""`ticktape demo`: the researcher's loop on a bundled sample, in seconds, with no servers.

1. Imports a small sample onto a fresh file tape: synthetic BTCUSDT trades (a deterministic
   random walk) on `md.sim.trade`, and Betfair markets on `md.betfair.market` - the two real
   recorded markets through the Betfair importer when they are on this machine
   (`../shared/data/betfair`, or `--betfair-data`), else a generated two-market sample.
2. Backtests `ema_cross` on the trades (crypto venue) and `betfair_back_favourite` on the
   markets (Betfair venue), writing each run (manifest, intents, order events) to the tape.
3. Replays the ema_cross run from its manifest and checks the intents are the same bytes.
4. Prints the summaries and where the results are, with the commands to look at them.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ticktape.events import (
    Event,
    MarketBook,
    MarketDefinition,
    PriceSize,
    RunnerBook,
    RunnerDefinition,
    Trade,
)
from ticktape.tape import Tape, open_tape
from ticktape.timeutil import format_time

TRADE_TOPIC = "md.sim.trade"
BETFAIR_TOPIC = "md.betfair.market"
MARKER = ".ticktape-demo"
SEC = 1_000_000_000


def _lcg(seed: int) -> Iterator[float]:
    """Uniform floats in [0, 1) from a 64-bit LCG: no global randomness, same numbers everywhere."""
    state = seed
    while True:
        state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        yield state / (1 << 64)


def synthetic_trades(n: int, *, instrument: str = "BTCUSDT", ts0: int = 1_700_000_000_000_000_000,
                     step_ns: int = 100_000_000, seed: int = 7) -> list[Trade]:
    """A deterministic random-walk market: trade i at ts0 + i * step_ns, prices to the cent."""
    rnd = _lcg(seed)
    price = 30_000.0
    out = []
    for i in range(n):
        u = next(rnd)
        price = max(1.0, price * math.exp((u - 0.5) * 0.002))
        ts = ts0 + i * step_ns
        out.append(Trade("sim", instrument, ts, ts, round(price, 2), round(0.001 + u * 0.05, 6),
                         "BUY" if u > 0.5 else "SELL", str(i)))
    return out


# Betfair's price ladder (upper bound, increment), enough to keep generated prices on valid ticks.
_LADDER = ((2.0, 0.01), (3.0, 0.02), (4.0, 0.05), (6.0, 0.1), (10.0, 0.2), (20.0, 0.5), (30.0, 1.0),
           (50.0, 2.0), (100.0, 5.0), (1000.0, 10.0))


def _tick(price: float, steps: int) -> float:
    """`price` moved by `steps` ladder ticks (clamped to 1.01 .. 1000)."""
    for _ in range(abs(steps)):
        if steps > 0:
            inc = next(i for hi, i in _LADDER if price < hi - 1e-9)
            price = min(1000.0, price + inc)
        else:
            inc = next(i for hi, i in _LADDER if price <= hi + 1e-9)
            price = max(1.01, price - inc)
        price = round(price, 2)
    return price


def synthetic_betfair(markets: int = 2, *, t0: int = 1_700_000_000 * SEC, seed: int = 11) -> list[Event]:
    """A generated Betfair sample: WIN markets of 4 runners, books every 2 s for 5 minutes before
    the off and 1 minute in-play, then closed with one winner. Deterministic; prices on the ladder."""
    rnd = _lcg(seed)
    out: list[Event] = []
    for m in range(markets):
        market_id = f"1.90000000{m}"
        off = t0 + (m + 1) * 600 * SEC
        sels = [1001 + i for i in range(4)]
        backs = [_tick(2.0, 8 * i) for i in range(4)]  # favourite first
        traded = [0.0] * 4

        def definition(ts: int, status: str, in_play: bool, version: int, results: list[str] | None = None,
                       market_id: str = market_id, off: int = off, sels: list[int] = sels, m: int = m
                       ) -> MarketDefinition:
            runners = tuple(RunnerDefinition(s, 0.0, (results or ["ACTIVE"] * 4)[i], i + 1, f"Runner {i + 1}")
                            for i, s in enumerate(sels))
            return MarketDefinition(market_id, ts, ts, f"3000{m}", "7", f"Demo Park {m + 1}", "R1 1000m Flat",
                                    "WIN", "GB", "Demo Park", off, off, None, status, in_play, 1 if in_play else 0,
                                    True, "ODDS", 1, version, "Europe/London", runners)

        out.append(definition(off - 900 * SEC, "OPEN", False, 1))
        ts = off - 300 * SEC
        version = 1
        while ts <= off + 60 * SEC:
            in_play = ts >= off
            if in_play and version == 1:
                version = 2
                out.append(definition(ts, "OPEN", True, version))
            runners = []
            for i, s in enumerate(sels):
                u = next(rnd)
                backs[i] = _tick(backs[i], (u > 0.8) - (u < 0.2))
                lay = _tick(backs[i], 1)
                traded[i] = round(traded[i] + round(2 + 20 * next(rnd), 2), 2)
                size = round(5 + 50 * next(rnd), 2)
                runners.append(RunnerBook(s, 0.0, "ACTIVE", backs[i], traded[i],
                                          (PriceSize(backs[i], size), PriceSize(_tick(backs[i], -1), size * 2)),
                                          (PriceSize(lay, size), PriceSize(_tick(lay, 1), size * 2)),
                                          (PriceSize(backs[i], traded[i]),)))
            out.append(MarketBook(market_id, ts, ts, "OPEN", in_play, 1 if in_play else 0, round(sum(traded), 2),
                                  version, True, False, 4, tuple(runners)))
            ts += 2 * SEC
        u = next(rnd)  # the favourite wins most often, as on real markets
        winner = 0 if u < 0.45 else 1 if u < 0.7 else 2 if u < 0.9 else 3
        results = ["WINNER" if i == winner else "LOSER" for i in range(4)]
        close = off + 120 * SEC
        out.append(definition(close, "CLOSED", True, version + 1, results))
        out.append(MarketBook(market_id, close, close, "CLOSED", True, 1, round(sum(traded), 2), version + 1, True,
                              False, 0, tuple(RunnerBook(s, 0.0, results[i], None, traded[i], (), (), ())
                                              for i, s in enumerate(sels))))
    out.sort(key=lambda e: e.ts_event)
    return out


def _betfair_data(given: str | None) -> Path | None:
    """Where the real recorded markets are, if anywhere."""
    candidates = [given] if given else [os.environ.get("TICKTAPE_BETFAIR_DATA"),
                                        str(Path(__file__).resolve().parents[2] / "shared" / "data" / "betfair"),
                                        "../shared/data/betfair"]
    for c in candidates:
        if c and Path(c).is_dir() and any(p.is_file() and not p.name.endswith(".json") for p in Path(c).iterdir()):
            return Path(c)
    return None


def _import_betfair(tape: Tape, data: Path | None) -> str:
    """Real markets through the Betfair importer if present, else the generated sample."""
    if data is not None:
        try:
            from producers.betfair.historical import import_file
        except ImportError:
            data = None
        else:
            files = sorted(p for p in data.iterdir() if p.is_file() and p.name.startswith("1.")
                           and not p.name.endswith(".json"))
            for path in files:
                import_file(tape, path)
            return f"{len(files)} recorded Betfair markets from {data}"
    events = synthetic_betfair()
    tape.append(BETFAIR_TOPIC, events)
    return f"a generated sample of 2 Betfair markets ({len(events)} events)"


def _fresh_tape(out_dir: Path) -> Tape:
    """The demo's own tape, recreated each time (only a directory the demo made is ever removed)."""
    if out_dir.exists():
        if not (out_dir / MARKER).exists():
            raise click.ClickException(f"{out_dir} exists and was not made by `ticktape demo`; use --out")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    (out_dir / MARKER).write_text("made by `ticktape demo`; removed and rebuilt by the next demo run\n")
    return open_tape(f"file:{out_dir / 'tape'}")


def _ratio(s: dict[str, Any], name: str) -> str:
    """A daily ratio of the summary, or n/a with its reason (the definition: robots.performance)."""
    value, note = s.get(name), s.get(f"{name}_note")
    return f"{value:.3f}" if value is not None else f"n/a ({note})"


def _line(name: str, s: dict[str, Any]) -> str:
    return (f"  {name:<24} run {s['run_id']}: {s['events']:,} events, {s['intents']:,} intents, {s['fills']:,} fills, "
            f"PnL {s['pnl_exact']}, fees {s['fees_exact']}, max drawdown {s['max_drawdown_exact']}, "
            f"Sharpe {_ratio(s, 'sharpe')}, "
            f"{s['events_per_s'] or 0:,} events/s")


@click.command()
@click.option("--out", "out_dir", default="demo-output", show_default=True, help="Directory for the demo tape.")
@click.option("--events", default=200_000, show_default=True, help="Synthetic trades to generate.")
@click.option("--betfair-data", default=None, help="Folder of Betfair historical files (default: ../shared/data/betfair"
              " if present, else a generated sample).")
def demo(out_dir: str, events: int, betfair_data: str | None) -> None:
    """Import a sample, backtest ema_cross and a Betfair robot, replay, and show where the results are."""
    from robots.backtest import backtest, find_run, replay_steps
    from ticktape.domain import IntentDigest

    root = Path(out_dir)
    tape = _fresh_tape(root)
    uri = tape.uri
    try:
        trades = synthetic_trades(events)
        for i in range(0, len(trades), 50_000):
            tape.append(TRADE_TOPIC, trades[i:i + 50_000])
        bf_what = _import_betfair(tape, _betfair_data(betfair_data))
        click.echo(f"imported {events:,} synthetic BTCUSDT trades ({format_time(trades[0].ts_event)} .. "
                   f"{format_time(trades[-1].ts_event)}) to {TRADE_TOPIC}")
        click.echo(f"imported {bf_what} to {BETFAIR_TOPIC}")
        click.echo("backtests:")
        ema = backtest("ema_cross", tape=tape, topics=[TRADE_TOPIC], params={"fast": 10, "slow": 50},
                       out_tape=tape, keep=False).summary
        click.echo(_line("ema_cross(10/50)", ema))
        bf = backtest("betfair_back_favourite", tape=tape, topics=[BETFAIR_TOPIC],
                      params={"stake": 2, "seconds_before_off": 60}, out_tape=tape, keep=False).summary
        click.echo(_line("betfair_back_favourite", bf))
        # replay the crypto run from its manifest alone and compare the intent bytes
        digest = IntentDigest()
        for step in replay_steps(tape, ema["run_id"]):
            for intent in step.intents:
                digest.add(intent)
        _, finished = find_run(tape, ema["run_id"])
        same = finished is not None and digest.hexdigest() == finished.intents_sha256
        click.echo(f"replay of {ema['run_id']} from the tape: intents {'identical' if same else 'DIFFERENT'} "
                   f"(sha256 {digest.hexdigest()[:16]}...)")
    finally:
        tape.close()
    click.echo(f"\nresults: tape {uri}  (topics orders.intent, orders.event, runs; keyed by run id)")
    click.echo("look at them:")
    click.echo(f"  ticktape --tape {uri} topics")
    click.echo(f"  ticktape --tape {uri} cat orders.intent --limit 3")
    click.echo(f"  ticktape --tape {uri} audit --run {ema['run_id']}")
    if importlib.util.find_spec("analyzer") is not None:  # the SQL/report commands, when that part is installed
        db = root / "demo.duckdb"
        click.echo(f"  ticktape load --tape {uri} --db {db}")
        click.echo(f"  ticktape sql {db} \"SELECT * FROM pnl_summary\"")
        click.echo(f"  ticktape report {ema['run_id']} --db {db} --out {root / 'report.html'}")
    click.echo(f"  ticktape --tape {uri} backtest ema_cross --param fast=5 --param slow=30")
    click.echo(f"  ticktape --tape {uri} sweep ema_cross --grid fast=5,10,20 --grid slow=50,100 --workers 2")
    if not same:
        raise click.ClickException("the replay did not reproduce the run's intents")


def register(cli: click.Group) -> None:
    """Attach `demo` to the CLI."""
    cli.add_command(demo)
