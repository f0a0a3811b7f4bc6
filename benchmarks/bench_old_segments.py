"""Reading file-tape segments written before a schema change, against segments written today.

    python -m benchmarks.bench_old_segments [N]

Writes N trades (and N/100 OrderAccepted v1 records in a second topic) with the schema directory
as it was before OrderAccepted v2 and RunStarted v2/v3, then reads them back with today's: the
trades' type never changed, so they should read as fast as trades written today; the old
OrderAccepted records are resolved one by one. Then N/100 MarketBooks (10 runners, 3+3 levels and
10 traded levels each) written before MarketBook v2 (which appended fields inside the nested
RunnerBook), read through v2, against the same books written today. Then N trades written as
Trade v1 (before Trade v2 appended its nullable fields) against N written today, by record and by
the columnar reader. Best of 3 reads each.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from benchmarks.common import best_rate, machine, report
from ticktape.codec import Codec
from ticktape.events import Event, MarketBook, OrderAccepted, PriceSize, RunnerBook, Trade
from ticktape.schemas import SchemaRegistry, default_schema_dir
from ticktape.tape import open_tape
from ticktape.tape.columnar import read_columnar

TS0 = 1_700_000_000_000_000_000
ADDED_SINCE = ("OrderAccepted.v2.avsc", "RunStarted.v2.avsc", "RunStarted.v3.avsc")
TRADE_V2 = ("Trade.v2.avsc",)


def older_codec(directory: Path, added_since: tuple[str, ...] = ADDED_SINCE) -> Codec:
    """A codec over the schema directory without the versions added since (what older code wrote with)."""
    directory.mkdir()
    for p in default_schema_dir().glob("*.avsc"):
        if p.name not in added_since:
            shutil.copy(p, directory / p.name)
    return Codec(SchemaRegistry.load(directory))


def market_book(i: int) -> MarketBook:
    """A 10-runner book with a few levels per ladder (the shape of a recorded greyhound/horse market)."""
    runners = tuple(RunnerBook(
        40_000_000 + r, 0.0, "ACTIVE", 2.0 + r, 100.0 * r,
        tuple(PriceSize(2.0 + r - 0.02 * k, 10.0 + k) for k in range(3)),
        tuple(PriceSize(2.02 + r + 0.02 * k, 5.0 + k) for k in range(3)),
        tuple(PriceSize(1.5 + 0.1 * k, 1.0 + k) for k in range(10))) for r in range(10))
    return MarketBook(f"1.{i % 50}", TS0 + i, TS0 + i, "OPEN", False, 0, 1000.0 + i, i, True, True, 10, runners)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=1_000_000)
    args = ap.parse_args()
    n = args.n
    work = Path(tempfile.mkdtemp(prefix="bench-old-segments-"))
    try:
        trades: list[Event] = [Trade("binance", "BTCUSDT", TS0 + i, TS0 + i, 100.0 + i % 50, 1.0, "BUY", str(i))
                               for i in range(n)]
        # OrderAccepted as v1 wrote it: today's class holding only v1's seven fields
        accepted: list[Event] = [tuple.__new__(OrderAccepted, ("bot", f"abc-{i}-0", str(i), "binance", "BTCUSDT",
                                                               TS0 + i, TS0 + i)) for i in range(n // 100)]
        old = older_codec(work / "schemas")
        for label, codec in (("written before the change", old), ("written today", None)):
            root = work / label.replace(" ", "-")
            with open_tape(f"file:{root}", **({"codec": codec} if codec else {})) as tape:
                tape.append("md.trade", trades)
                if codec is not None:
                    tape.append("orders.event", accepted)
            with open_tape(f"file:{root}") as tape:
                rate = best_rate(n, lambda t=tape: sum(1 for _ in t.read("md.trade")))
                report(f"trades {label}", events=n, read_per_s=round(rate))
                if codec is not None:
                    m = len(accepted)
                    rate = best_rate(m, lambda t=tape: sum(1 for _ in t.read("orders.event")))
                    report("OrderAccepted v1 records resolved to v2", events=m, read_per_s=round(rate))
        books = [market_book(i) for i in range(n // 100)]
        before_v2 = older_codec(work / "schemas-mb1", ("MarketBook.v2.avsc",))
        for label, codec in (("written before MarketBook v2", before_v2), ("written today", None)):
            root = work / ("books-" + label.replace(" ", "-"))
            # as v1 wrote them: today's classes holding only v1's fields (RunnerBook's first eight)
            written = books if codec is None else [tuple.__new__(MarketBook, (*b[:-1], tuple(
                tuple.__new__(RunnerBook, r[:8]) for r in b.runners))) for b in books]
            with open_tape(f"file:{root}", **({"codec": codec} if codec else {})) as tape:
                tape.append("md.betfair.market", written)
            with open_tape(f"file:{root}") as tape:
                m = len(books)
                rate = best_rate(m, lambda t=tape: sum(1 for _ in t.read("md.betfair.market")))
                report(f"MarketBooks {label}", events=m, read_per_s=round(rate))
        # Trade itself changed (v2 appended three nullable fields): a segment of v1 trades reads through
        # the appended-defaults resolver per record, and stays columnar (the defaults filled as columns).
        v1_trades: list[Event] = [tuple.__new__(Trade, t[:8]) for t in trades]
        for label, codec in (("Trade v1 segment read as v2", older_codec(work / "schemas-trade-v1", TRADE_V2)),
                             ("Trade v2 segment", None)):
            root = work / label.replace(" ", "-")
            with open_tape(f"file:{root}", **({"codec": codec} if codec else {})) as tape:
                tape.append("md.trade", v1_trades if codec else trades)
            with open_tape(f"file:{root}") as tape:
                rate = best_rate(n, lambda t=tape: sum(1 for _ in t.read("md.trade")))
                col = best_rate(n, lambda t=tape: sum(tb.num_rows for _, tb in read_columnar(t, "md.trade",
                                                                                            cache_sealed=False)))
                report(label, events=n, read_per_s=round(rate), columnar_rows_per_s=round(col))
        print(machine())
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
