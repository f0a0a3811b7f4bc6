"""Deterministic inputs of the peer comparison: synthetic trades and the 200-market Betfair set.

Trades are a seeded random walk written once as Parquet (what the peers read) and once as a
Binance trades CSV that `ticktape import binance --kind trades` puts on a file tape: the tape is
filled by ticktape's own importer, not by the benchmark, and `check_tape_matches` proves that
the tape holds exactly the Parquet's trades. Prices are whole cents and sizes whole thousandths
so both text and binary forms hold them exactly.

The Betfair set copies the recorded markets in the shared data folder, each copy with a new
market id and its times (publish times, market/suspend/settle times) shifted, so that many
markets are open at once and their updates interleave, as in a recording of a busy day.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

SYMBOL = "BTCUSDT"
TRADE_TOPIC = "md.binance.trade"
T0_MS = 1_700_000_000_000  # 2023-11-14: inside the importer's accepted time range
STEP_MS = 100  # one trade every 100 ms
BETFAIR_MARKETS = ("1.197931750", "1.197931751")
SHIFT_MS = 37_000  # copy c starts c * 37 s later: copies overlap, their updates interleave
_TIME_FIELD = re.compile(rb'"(marketTime|suspendTime|settledTime|openDate)":"([^"]+)"')


class PeerDataError(Exception):
    """Benchmark input that cannot be built or does not match (names the file and what was wrong)."""


def shared_data() -> Path:
    """The shared data folder: $TICKTAPE_SHARED_DATA, else ../shared/data beside the repo."""
    env = os.environ.get("TICKTAPE_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def make_trades(n: int, seed: int) -> pa.Table:
    """`n` trades of a seeded random walk (ids, ms times, prices, sizes, taker side) as an Arrow table."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    # Steps in whole cents keep every price exactly representable in CSV text and in float64.
    cents = 3_000_000 + np.cumsum(rng.integers(-50, 51, size=n, dtype=np.int64))
    cents = np.maximum(cents, 100)  # a walk long enough could reach zero; a price stays > 0
    size_milli = rng.integers(1, 2_000, size=n, dtype=np.int64)
    return pa.table({
        "id": pa.array(np.arange(1, n + 1, dtype=np.int64)),
        "price": pa.array(cents / 100.0),
        "qty": pa.array(size_milli / 1000.0),
        "time_ms": pa.array(T0_MS + STEP_MS * np.arange(n, dtype=np.int64)),
        "is_buyer_maker": pa.array(rng.integers(0, 2, size=n).astype(bool)),
    })


def write_parquet(table: pa.Table, path: Path) -> None:
    """The peers' input; no statistics or timestamps that could vary between runs."""
    import pyarrow.parquet as pq

    pq.write_table(table, path, compression="zstd", write_statistics=False, row_group_size=1 << 20)


def write_binance_csv(table: pa.Table, path: Path) -> None:
    """The same trades in the spot trades file layout (no header) `ticktape import binance` reads."""
    cols = table.to_pydict()
    with open(path, "w", encoding="ascii", newline="\n") as f:
        for i, p, q, t, m in zip(cols["id"], cols["price"], cols["qty"], cols["time_ms"], cols["is_buyer_maker"],
                                 strict=True):
            # repr of a float is its shortest exact round-trip text; quote_qty is rounded like Binance's
            f.write(f"{i},{p!r},{q!r},{round(p * q, 8)!r},{t},{m},True\n")


def import_into_tape(csv_path: Path, tape_uri: str) -> None:
    """Put the CSV's trades on the tape through the `ticktape import binance` command."""
    cmd = [sys.executable, "-m", "ticktape", "--tape", tape_uri, "import", "binance", str(csv_path),
           "--kind", "trades", "--symbol", SYMBOL, "--strict"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise PeerDataError(f"{csv_path}: ticktape import failed ({proc.returncode}): {proc.stderr[-2000:]}")


def check_tape_matches(tape_uri: str, table: pa.Table) -> int:
    """Raise unless the tape's trades are exactly the table's (time, price, size, side, id); return the count."""
    from ticktape.tape import open_tape

    cols = table.to_pydict()
    want = zip(cols["time_ms"], cols["price"], cols["qty"], cols["is_buyer_maker"], cols["id"], strict=True)
    tape = open_tape(tape_uri)
    try:
        n = 0
        events = iter(tape.read_events(TRADE_TOPIC, 0))  # type: ignore[attr-defined]  # file tapes only
        for n, (t, p, q, maker, tid) in enumerate(want, 1):
            e = next(events, None)
            if e is None:
                raise PeerDataError(f"{tape_uri}: tape has {n - 1} trades, Parquet has {len(table)}")
            got = (e.ts_event, e.price, e.size, e.aggressor_side, e.trade_id)
            exp = (t * 1_000_000, p, q, "SELL" if maker else "BUY", str(tid))
            if got != exp:
                raise PeerDataError(f"{tape_uri}: trade {n} differs: tape {got}, Parquet {exp}")
        if next(events, None) is not None:
            raise PeerDataError(f"{tape_uri}: tape has more trades than the Parquet's {len(table)}")
        return n
    finally:
        tape.close()


@dataclass(frozen=True)
class BetfairSet:
    """Where the per-market files (flumine's input) and the interleaved stream (ticktape's) are."""

    files: list[Path]
    stream: Path
    updates: int  # stream lines (market change messages)
    market_ids: list[str]


def betfair_market_id(copy: int, k: int) -> str:
    """Copy `copy` of source market `k`: 1.9 + 6 digits of copy + 2 of k, so ids never collide."""
    return f"1.9{copy:06d}{k:02d}"


def _shift_iso(value: bytes, shift_ms: int) -> bytes:
    t = dt.datetime.strptime(value.decode(), "%Y-%m-%dT%H:%M:%S.%fZ") + dt.timedelta(milliseconds=shift_ms)
    return (t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z").encode()


def make_betfair_set(src: Path, markets: int, out: Path) -> BetfairSet:
    """`markets` markets (cycling over the recorded ones), ids rewritten, copy c shifted c * SHIFT_MS."""
    import orjson

    sources = []
    for market in BETFAIR_MARKETS:
        path = src / market
        if not path.exists():
            raise PeerDataError(f"{path}: recorded Betfair market not found (set TICKTAPE_SHARED_DATA)")
        sources.append((market, [line for line in path.read_bytes().splitlines() if line.strip()]))
    (out / "markets").mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    ids: list[str] = []
    rows: list[tuple[int, int, int, bytes]] = []
    for m in range(markets):
        k, copy = m % len(sources), m // len(sources)
        market, lines = sources[k]
        new_id = betfair_market_id(copy, k)
        shift = copy * SHIFT_MS
        new_lines = []
        for i, line in enumerate(lines):
            msg: dict[str, Any] = orjson.loads(line)
            pt = int(msg["pt"]) + shift
            text = line.replace(f'"{market}"'.encode(), f'"{new_id}"'.encode())
            text = text.replace(f'"pt":{msg["pt"]}'.encode(), f'"pt":{pt}'.encode(), 1)
            text = _TIME_FIELD.sub(lambda mo, s=shift: b'"' + mo.group(1) + b'":"' + _shift_iso(mo.group(2), s)
                                   + b'"', text)
            new_lines.append(text)
            rows.append((pt, m, i, text))
        path = out / "markets" / new_id
        path.write_bytes(b"\n".join(new_lines) + b"\n")
        files.append(path)
        ids.append(new_id)
    rows.sort()  # by publish time; ties by market then line: a deterministic interleaving
    stream = out / "interleaved.stream"
    stream.write_bytes(b"\n".join(r[3] for r in rows) + b"\n")
    return BetfairSet(files=files, stream=stream, updates=len(rows), market_ids=ids)
