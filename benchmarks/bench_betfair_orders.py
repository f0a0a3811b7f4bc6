"""Betfair order stream parsing: `OrderCache.apply` over recorded order-stream changes.

    python -m benchmarks.bench_betfair_orders [--copies 2000] [--repeat 5]

The order-stream messages in `tests/fixtures/betfair/orders.stream` and `/work/shared/data/betfair/`
(`ORDER-1.177596575`, `streaming_ocm_*.json`: placements, fills, cancellations, a full image with
matched-by-price ladders, a market closing) are replicated COPIES times with distinct market and
bet ids, parsed once (JSON parsing is not timed), then fed to one `OrderCache` in publish-time
order per copy; best of `--repeat`. Reports order-market changes (`oc` entries) and order
updates (`uo` entries) per second, and the events produced.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "betfair"
FILES = (REPO / "tests" / "fixtures" / "betfair" / "orders.stream", DATA / "ORDER-1.177596575",
         DATA / "streaming_ocm_FULL_IMAGE.json", DATA / "streaming_ocm_UPDATE.json")


def load(copies: int) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """(publish time, oc entry) in feed order, and the number of `uo` entries."""
    raw = [line for f in FILES if f.exists() for line in f.read_bytes().splitlines()
           if line.strip() and b'"ocm"' in line]
    out: list[tuple[int, dict[str, Any]]] = []
    n_uo = 0
    for c in range(copies):
        for line in raw:
            msg = orjson.loads(line)
            for oc in msg.get("oc") or ():
                oc["id"] = f"{oc['id']}{c:06d}"
                for orc in oc.get("orc") or ():
                    for uo in orc.get("uo") or ():
                        uo["id"] = f"{uo['id']}{c:06d}"
                        n_uo += 1
                out.append((msg["pt"] * 1_000_000, oc))
    return out, n_uo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    from benchmarks.common import machine, report
    from producers.betfair.orders import OrderCache

    changes, n_uo = load(args.copies)
    best = float("inf")
    events = 0
    for _ in range(args.repeat):
        cache = OrderCache()
        t0 = time.perf_counter()
        events = sum(len(cache.apply(oc, ts, ts)) for ts, oc in changes)
        best = min(best, time.perf_counter() - t0)
    report("betfair_orders_apply", machine=machine(), changes=len(changes), updates=n_uo, events=events,
           seconds=round(best, 4), changes_per_s=round(len(changes) / best), updates_per_s=round(n_uo / best))


if __name__ == "__main__":
    main()
