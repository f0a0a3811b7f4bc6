"""Reading file-tape segments written before a schema change, against segments written today.

    python -m benchmarks.bench_old_segments [N]

Writes N trades (and N/100 OrderAccepted v1 records in a second topic) with the schema directory
as it was before OrderAccepted v2 and RunStarted v2/v3, then reads them back with today's: the
trades' type never changed, so they should read as fast as trades written today; the old
OrderAccepted records are resolved one by one. Best of 3 reads each.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from benchmarks.common import best_rate, machine, report
from ticktape.codec import Codec
from ticktape.events import Event, OrderAccepted, Trade
from ticktape.schemas import SchemaRegistry, default_schema_dir
from ticktape.tape import open_tape

TS0 = 1_700_000_000_000_000_000
ADDED_SINCE = ("OrderAccepted.v2.avsc", "RunStarted.v2.avsc", "RunStarted.v3.avsc")


def older_codec(directory: Path) -> Codec:
    """A codec over the schema directory without the versions added since (what older code wrote with)."""
    directory.mkdir()
    for p in default_schema_dir().glob("*.avsc"):
        if p.name not in ADDED_SINCE:
            shutil.copy(p, directory / p.name)
    return Codec(SchemaRegistry.load(directory))


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
        print(machine())
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
