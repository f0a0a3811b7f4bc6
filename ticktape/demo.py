"""`ticktape demo`: write a synthetic market to a tape and read it back.

The backtest issue replaces this with the full researcher's loop (import, backtest, report).
"""

from __future__ import annotations

import math
import time

import click

from ticktape.events import Trade
from ticktape.tape import open_tape
from ticktape.timeutil import format_time


def synthetic_trades(n: int, *, instrument: str = "BTCUSDT", ts0: int = 1_700_000_000_000_000_000,
                     step_ns: int = 100_000_000, seed: int = 7) -> list[Trade]:
    """A deterministic random-walk market (no global randomness: an LCG seeded by `seed`)."""
    state = seed
    price = 30_000.0
    out = []
    for i in range(n):
        state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        u = state / (1 << 64)
        price = max(1.0, price * math.exp((u - 0.5) * 0.002))
        ts = ts0 + i * step_ns
        out.append(Trade("sim", instrument, ts, ts, round(price, 2), round(0.001 + u * 0.05, 6),
                         "BUY" if u > 0.5 else "SELL", str(i)))
    return out


@click.command()
@click.option("--out", "out_dir", default="demo-output/tape", show_default=True, help="Where to write the demo tape.")
@click.option("--events", default=100_000, show_default=True)
def demo(out_dir: str, events: int) -> None:
    """Write a synthetic market to a file tape, read it back and print what is there."""
    tape = open_tape(f"file:{out_dir}")
    trades = synthetic_trades(events)
    t0 = time.perf_counter()
    for i in range(0, len(trades), 10_000):
        tape.append("md.sim.trade", trades[i:i + 10_000])
    wrote = time.perf_counter() - t0
    t0 = time.perf_counter()
    count = sum(1 for _ in tape.read("md.sim.trade"))
    read = time.perf_counter() - t0
    info = next(t for t in tape.topics() if t.name == "md.sim.trade")
    tape.close()
    click.echo(f"wrote {events} trades in {wrote:.2f}s ({events / wrote:,.0f}/s), "
               f"read {count} back in {read:.2f}s ({count / read:,.0f}/s)")
    click.echo(f"tape: file:{out_dir}  topic md.sim.trade: {info.events} events, "
               f"{format_time(info.first_ts)} .. {format_time(info.last_ts)}")
    click.echo(f"next: ticktape --tape file:{out_dir} cat md.sim.trade --limit 3")


def register(cli: click.Group) -> None:
    """Attach `demo` to the CLI."""
    cli.add_command(demo)
