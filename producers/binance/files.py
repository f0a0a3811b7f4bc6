"""Binance public historical data files (data.binance.vision): klines, aggTrades, trades.

Column layouts as documented (spot files have no header row; USD-M futures files have one and
drop the trailing `is_best_match`/`ignore` columns where the spot ones have them):

* klines: open_time, open, high, low, close, volume, close_time, quote_volume, count,
  taker_buy_volume, taker_buy_quote_volume, ignore -> `Bar` (ts_event = close_time + 1 unit,
  the bar's close boundary; quote_volume, trades, taker_buy_base_volume, taker_buy_quote_volume)
  on `md.binance.bar`.
* aggTrades: agg_trade_id, price, quantity, first_trade_id, last_trade_id, transact_time,
  is_buyer_maker[, is_best_match] -> `Trade` (first/last trade id, is_best_match) on
  `md.binance.aggtrade`.
* trades: id, price, qty, quote_qty, time, is_buyer_maker[, is_best_match] -> `Trade` on
  `md.binance.trade` (is_best_match; no first/last trade id: null).

A column a layout may lack (is_best_match in futures files) gives null fields.

Times are ms, or µs in spot files from 2025 on; each value's unit is told by its magnitude.
Historical rows have no capture time: ts_recv = ts_event, so importing is deterministic.

Speed: the file is read in blocks cut at line ends; each block is parsed column-wise by
pyarrow's CSV reader and the events are built column-wise (`tuple.__new__` over zipped
columns, no Python per-field work). A block with any bad row is re-parsed line by line so
good rows are kept and each bad line becomes a dead letter with its line number and bytes.
Memory is bounded by the block size, whatever the file size.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import repeat
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from producers.binance.parsers import TOPIC_AGGTRADE, TOPIC_BAR, TOPIC_TRADE, VENUE
from producers.binance.seen import IDS_TOPIC, SeenIds, contiguous_runs, ids_event, ids_key, merged
from producers.common import ImportRun, gc_paused
from ticktape.bars import interval_ns
from ticktape.errors import ValidationError
from ticktape.events import Bar, Event, Trade

BLOCK_BYTES = 4 << 20
INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1mo")
TS_MIN, TS_MAX = 946_684_800 * 10**9, 4_102_444_800 * 10**9  # 2000-01-01 .. 2100-01-01: anything else is garbage

_new_bar = partial(tuple.__new__, Bar)
_new_trade = partial(tuple.__new__, Trade)


@dataclass(frozen=True)
class Layout:
    """One file kind: column names by count, the columns used (name -> arrow type); a used column
    missing from a width (is_best_match in futures files) is null."""

    kind: str
    topic: str
    widths: dict[int, tuple[str, ...]]
    used: dict[str, pa.DataType]

    def present(self, names: tuple[str, ...]) -> dict[str, pa.DataType]:
        """The used columns a file of these column names has."""
        return {n: t for n, t in self.used.items() if n in names}


KLINE_COLS = ("open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
              "taker_buy_volume", "taker_buy_quote_volume", "ignore")
AGG_COLS = ("agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time",
            "is_buyer_maker", "is_best_match")
TRADE_COLS = ("id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match")

F64, I64, BOOL = pa.float64(), pa.int64(), pa.bool_()
LAYOUTS = {
    "klines": Layout("klines", TOPIC_BAR, {12: KLINE_COLS, 11: KLINE_COLS[:11]},
                     {"open": F64, "high": F64, "low": F64, "close": F64, "volume": F64, "close_time": I64,
                      "quote_volume": F64, "count": I64, "taker_buy_volume": F64, "taker_buy_quote_volume": F64}),
    "aggTrades": Layout("aggTrades", TOPIC_AGGTRADE, {8: AGG_COLS, 7: AGG_COLS[:7]},
                        {"agg_trade_id": I64, "price": F64, "quantity": F64, "transact_time": I64,
                         "is_buyer_maker": BOOL, "first_trade_id": I64, "last_trade_id": I64,
                         "is_best_match": BOOL}),
    "trades": Layout("trades", TOPIC_TRADE, {7: TRADE_COLS, 6: TRADE_COLS[:6]},
                     {"id": I64, "price": F64, "qty": F64, "time": I64, "is_buyer_maker": BOOL,
                      "is_best_match": BOOL}),
}

Columns = dict[str, np.ndarray[Any, Any]]


def interval_from_name(name: str) -> str | None:
    """The kline interval in a data.binance.vision file name (`BTCUSDT-1m-2024-01.zip` -> `1m`)."""
    m = re.search(r"-(" + "|".join(INTERVALS) + r")-", Path(name).name)
    return m.group(1) if m else None


def symbol_from_name(name: str) -> str | None:
    """The symbol in a data.binance.vision file name (`BTCUSDT-aggTrades-2024-01-01.csv` -> `BTCUSDT`)."""
    m = re.match(r"([A-Z0-9]+)-", Path(name).name)
    return m.group(1) if m else None


def _ts_ns(t: np.ndarray[Any, Any], plus_one_unit: bool = False) -> np.ndarray[Any, Any]:
    """ms or µs (told by magnitude, per value) -> ns; optionally + 1 unit (kline close boundary)."""
    ms = t < 100_000_000_000_000
    ns = np.where(ms, t * 1_000_000, t * 1_000)
    if plus_one_unit:
        ns = ns + np.where(ms, 1_000_000, 1_000)
    return ns


def _problems(layout: Layout, cols: Columns) -> np.ndarray[Any, Any] | None:
    """Per-row reason a parsed row is still wrong (None when all rows are good)."""
    if layout.kind == "klines":
        ts = cols["close_time"]
        prices = np.stack([cols["open"], cols["high"], cols["low"], cols["close"]])
        ok_price = np.isfinite(prices).all(axis=0) & (prices > 0).all(axis=0)
        volumes = np.stack([cols[n] for n in ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume")])
        ok_size = np.isfinite(volumes).all(axis=0) & (volumes >= 0).all(axis=0) & (cols["count"] >= 0)
        ok_hl = cols["high"] >= cols["low"]
    else:
        ts = cols["transact_time" if layout.kind == "aggTrades" else "time"]
        size = cols["quantity" if layout.kind == "aggTrades" else "qty"]
        ok_price = np.isfinite(cols["price"]) & (cols["price"] > 0)
        ok_size = np.isfinite(size) & (size >= 0)
        ok_hl = np.ones(len(ts), dtype=bool)
    ns = _ts_ns(ts)
    ok_ts = (ns >= TS_MIN) & (ns <= TS_MAX)
    if bool((ok_ts & ok_price & ok_size & ok_hl).all()):
        return None
    reasons = np.full(len(ts), "", dtype=object)
    reasons[~ok_hl] = "high below low"
    reasons[~ok_size] = "volume or trade count not a finite number >= 0" if layout.kind == "klines" else \
        "size not a finite number >= 0"
    reasons[~ok_price] = "price not a finite number > 0"
    reasons[~ok_ts] = "time out of range (expected ms or µs since 1970, year 2000-2100)"
    return reasons


def build_events(layout: Layout, cols: Columns, symbol: str, interval: str) -> list[Event]:
    """Events from typed columns, column-wise (no per-field Python work)."""
    n = len(next(iter(cols.values())))

    def col(name: str) -> Iterable[Any]:
        """A column's values, or None for each row when the file (or kind) has no such column."""
        return cols[name].tolist() if name in cols else repeat(None, n)

    if layout.kind == "klines":
        ts = _ts_ns(cols["close_time"], plus_one_unit=True).tolist()
        return list(map(_new_bar, zip(repeat(VENUE, n), repeat(symbol, n), ts, ts, repeat(interval, n),
                                      cols["open"].tolist(), cols["high"].tolist(), cols["low"].tolist(),
                                      cols["close"].tolist(), cols["volume"].tolist(), col("quote_volume"),
                                      col("count"), col("taker_buy_volume"), col("taker_buy_quote_volume"),
                                      strict=True)))
    agg = layout.kind == "aggTrades"
    ts = _ts_ns(cols["transact_time" if agg else "time"]).tolist()
    ids = list(map(str, cols["agg_trade_id" if agg else "id"].tolist()))
    # The taker is the aggressor: buyer is maker -> a seller hit the bid. Indexing a tuple by
    # bool reuses two interned strings instead of allocating one per row.
    side = list(map(("BUY", "SELL").__getitem__, cols["is_buyer_maker"].tolist()))
    return list(map(_new_trade, zip(repeat(VENUE, n), repeat(symbol, n), ts, ts, cols["price"].tolist(),
                                    cols["quantity" if agg else "qty"].tolist(), side, ids, col("first_trade_id"),
                                    col("last_trade_id"), col("is_best_match"), strict=True)))


TRUE_VALUES = ("true", "True", "TRUE", "1")
FALSE_VALUES = ("false", "False", "FALSE", "0")
"""Booleans as Binance writes them (`True`/`False`, or `1`/`0` in some files): one rule for the
column-wise reader and the line-by-line fallback, so a bad row never turns good rows bad."""
_BOOLS = {**dict.fromkeys(TRUE_VALUES, True), **dict.fromkeys(FALSE_VALUES, False)}


def _convert(value: str, typ: pa.DataType) -> Any:
    if typ == F64:
        return float(value)
    if typ == I64:
        return int(value)
    b = _BOOLS.get(value)
    if b is None:
        raise ValueError(f"expected one of {', '.join(TRUE_VALUES + FALSE_VALUES)}")
    return b


def row_ids(layout: Layout, cols: Columns) -> np.ndarray[Any, Any]:
    """What identifies a row across files: the trade id, or a kline's close time in ns."""
    if layout.kind == "klines":
        return _ts_ns(cols["close_time"])
    return cols["agg_trade_id" if layout.kind == "aggTrades" else "id"]


class BlockImporter:
    """Parses a CSV byte stream block by block into one `ImportRun`.

    With `seen`, rows whose id is on the tape already (another file had them) are left out and
    counted in `duplicates`; `ranges` collects the id runs this stream covered.
    """

    def __init__(self, run: ImportRun, layout: Layout, symbol: str, interval: str, where: str = "",
                 seen: SeenIds | None = None) -> None:
        self.run = run
        self.layout = layout
        self.symbol = symbol
        self.interval = interval
        self.where = where  # prefix of positions, e.g. the zip member
        self.names: tuple[str, ...] | None = None
        self.rows = 0
        self.duplicates = 0
        self.seen = seen
        self.key = ids_key(symbol, layout.kind, interval)
        self.step = (interval_ns(interval) or 1) if layout.kind == "klines" else 1
        self.ranges: list[tuple[int, int]] = []

    def _emit(self, cols: Columns) -> None:
        """Emit the rows of typed columns that are not on the tape yet; note the ids they cover."""
        if self.seen is not None:
            ids = row_ids(self.layout, cols)
            self.ranges = merged(self.ranges + contiguous_runs(ids, self.step), self.step)
            fresh = self.seen.fresh(self.key, ids)
            if not fresh.all():
                self.duplicates += int(len(fresh) - fresh.sum())
                cols = {n: c[fresh] for n, c in cols.items()}
        n = len(next(iter(cols.values())))
        if n:
            self.run.emit_many(self.layout.topic, build_events(self.layout, cols, self.symbol, self.interval),
                               self.symbol)
            self.rows += n

    def _pos(self, line: int) -> str:
        return f"{self.where}line {line}"

    def feed(self, stream: IO[bytes], block_bytes: int = BLOCK_BYTES,
             progress: Callable[[int], object] | None = None) -> None:
        """Import a whole byte stream (a CSV file or zip member)."""
        line_no = 1  # line number of the block's first line
        rest = b""
        first = True
        while True:
            chunk = stream.read(block_bytes)
            if progress is not None:
                progress(len(chunk))
            data = rest + chunk
            if not chunk:
                if data.strip():
                    self._block(data if data.endswith(b"\n") else data + b"\n", line_no, first)
                return
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                rest = data
                continue
            block, rest = data[:cut], data[cut:]
            line_no += self._block(block, line_no, first)
            first = False

    def _block(self, block: bytes, line_no: int, first: bool) -> int:
        lines = block.count(b"\n")
        body, body_line, body_lines = block, line_no, lines
        if first:
            first_line = block[:block.find(b"\n")]
            self.names = self._detect(block, line_no)
            header = first_line.split(b",", 1)[0].strip().decode("utf-8", "replace")
            if header in {names[0] for names in self.layout.widths.values()}:  # a header row: skip it
                body, body_line, body_lines = block[len(first_line) + 1:], line_no + 1, lines - 1
        if body.strip():
            try:
                self._fast(body, body_lines)
            except (pa.ArrowInvalid, ValueError):
                self._slow(body, body_line)
        return lines

    def _detect(self, block: bytes, line_no: int) -> tuple[str, ...]:
        """The layout's column names, by the width of the first of the first lines that has a known width
        (a damaged first line alone must not make the file unreadable)."""
        widths = [line.count(b",") + 1 for line in block.split(b"\n", 8)[:8] if line.strip()]
        for width in widths:
            if width in self.layout.widths:
                return self.layout.widths[width]
        raise _width_error(self.layout, widths[0] if widths else 0, f"{self.where}line {line_no}: ")

    def _fast(self, body: bytes, lines: int) -> None:
        assert self.names is not None
        used = self.layout.present(self.names)
        table = pacsv.read_csv(
            pa.BufferReader(body),
            read_options=pacsv.ReadOptions(column_names=list(self.names), use_threads=False,
                                           block_size=max(len(body) + 1, 1 << 20)),
            convert_options=pacsv.ConvertOptions(column_types=used, include_columns=list(used),
                                                 true_values=list(TRUE_VALUES), false_values=list(FALSE_VALUES)))
        if table.num_rows != lines or any(c.null_count for c in table.columns):
            raise ValueError("row count or nulls disagree: use the line-by-line path")
        cols = {name: table.column(name).to_numpy() for name in used}
        if _problems(self.layout, cols) is not None:
            raise ValueError("invalid values: use the line-by-line path")
        self._emit(cols)

    def _slow(self, body: bytes, line_no: int) -> None:
        assert self.names is not None
        index = {n: i for i, n in enumerate(self.names)}
        used = self.layout.present(self.names)
        good: list[list[Any]] = []
        raw_good: list[tuple[int, bytes]] = []
        bad: list[tuple[int, str, bytes]] = []  # dead-lettered in line order, whatever the reason
        for i, raw in enumerate(body.split(b"\n")[:-1] if body.endswith(b"\n") else body.split(b"\n")):
            if not raw.strip():
                continue
            fields = raw.rstrip(b"\r").decode("utf-8", "replace").split(",")
            try:
                if len(fields) != len(self.names):
                    raise ValueError(f"{len(fields)} columns, expected {len(self.names)}")
                row = []
                for name, typ in used.items():
                    try:
                        row.append(_convert(fields[index[name]], typ))
                    except ValueError as exc:
                        raise ValueError(f"column {name!r}={fields[index[name]]!r}: {exc}") from None
            except ValueError as exc:
                bad.append((line_no + i, str(exc), raw))
                continue
            good.append(row)
            raw_good.append((line_no + i, raw))
        if not good:
            self._dead(bad)
            return
        cols = {n: np.array([r[j] for r in good], dtype=_np_type(typ)) for j, (n, typ) in enumerate(used.items())}
        reasons = _problems(self.layout, cols)
        if reasons is not None:
            keep = reasons == ""
            bad += [(ln, str(why), raw) for (ln, raw), why in zip(raw_good, reasons, strict=True) if why]
            cols = {n: c[keep] for n, c in cols.items()}
        self._dead(bad)
        self._emit(cols)


    def _dead(self, bad: list[tuple[int, str, bytes]]) -> None:
        for line, error, raw in sorted(bad, key=lambda b: b[0]):
            self.run.dead_letter(self._pos(line), error, raw)


def _np_type(typ: pa.DataType) -> Any:
    return np.float64 if typ == F64 else (np.int64 if typ == I64 else np.bool_)


def verify_checksum(path: Path, identity: str) -> bool | None:
    """Check a download against data.binance.vision's `FILE.CHECKSUM` (`<sha256>  <name>`) next to it.

    `identity` is `file_identity(path)` (computed anyway for the bookmark). None when there is
    no checksum file; raises ValueError when it does not match (a corrupt or partial download).
    """
    check = path.with_name(path.name + ".CHECKSUM")
    if not check.exists():
        return None
    expected = check.read_text().split()[0].strip().lower() if check.read_text().strip() else ""
    if identity.removeprefix("sha256:") != expected:
        raise ValueError(f"sha256 does not match {check.name} (corrupt or partial download?)")
    return True


ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)
"""What a damaged .zip raises while it is opened or read: a bad directory, CRC or deflate stream, a
cut-off file (NotImplementedError: a compression method zipfile lacks)."""


def _bad_zip(path: Path, exc: Exception) -> ValidationError:
    return ValidationError(f"not a readable zip file ({exc or type(exc).__name__})", where=str(path))


def data_size(path: Path) -> int:
    """Bytes `import_file` will read: the file, or the uncompressed CSVs inside a zip."""
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                return sum(i.file_size for i in zf.infolist() if i.filename.lower().endswith(".csv"))
        except ZIP_ERRORS as exc:
            raise _bad_zip(path, exc) from exc
    return path.stat().st_size


def csv_streams(path: Path) -> Iterator[tuple[str, IO[bytes]]]:
    """(position prefix, byte stream) for a .csv file or each .csv member of a .zip."""
    if path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.namelist() if m.lower().endswith(".csv")]
            if not members:
                raise ValueError(f"{path}: no .csv inside the zip")
            for m in members:
                with zf.open(m) as f:
                    yield (f"{m} " if len(members) > 1 else ""), f
    else:
        with open(path, "rb") as f:
            yield "", f


def import_file(run: ImportRun, path: Path, *, kind: str, symbol: str, interval: str | None = None,
                block_bytes: int = BLOCK_BYTES, progress: Callable[[int], object] | None = None,
                seen: SeenIds | None = None) -> int:
    """Import one Binance data file into `run` (the caller finishes it); returns rows imported.

    `progress(n)` is called with the number of (uncompressed) bytes read, block by block. With
    `seen` (`producers.binance.seen`), rows already on the tape from other files are skipped
    (`run.duplicates` counts them) and the id ranges the file covers are recorded with it.
    """
    layout = LAYOUTS.get(kind)
    if layout is None:
        raise ValueError(f"unknown --kind {kind!r}: use {', '.join(LAYOUTS)}")
    if kind == "klines" and not interval:
        interval = interval_from_name(path.name)
        if not interval:
            _check_width(path, layout)  # a file of another kind: say that, not that the name lacks an interval
            raise ValueError("cannot tell the kline interval from the name; pass --interval")
    rows = 0
    try:
        with gc_paused():
            for where, stream in csv_streams(path):
                imp = BlockImporter(run, layout, symbol, interval or "", where, seen)
                imp.feed(stream, block_bytes, progress)
                rows += imp.rows
                run.duplicates += imp.duplicates
                if seen is not None and imp.ranges:
                    seen.record(imp.key, imp.ranges)
                    run.emit(IDS_TOPIC, ids_event(imp.key, imp.ranges, run.source_id, run.clock.now()))
    except ZIP_ERRORS as exc:  # the zip's directory, or a member found damaged while it was read
        raise _bad_zip(path, exc) from exc
    return rows


def _check_width(path: Path, layout: Layout) -> None:
    """ValueError when the file's first lines have no width of `layout` (the columns do not fit --kind)."""
    for where, stream in csv_streams(path):
        head = stream.read(64 << 10)
        lines = [line for line in head.split(b"\n")[:8] if line.strip()]
        widths = [line.count(b",") + 1 for line in lines]
        if widths and not any(w in layout.widths for w in widths):
            raise _width_error(layout, widths[0], where)
        return


def _width_error(layout: Layout, width: int, where: str) -> ValueError:
    expected = " or ".join(str(w) for w in sorted(layout.widths))
    fits = [k for k, other in LAYOUTS.items() if width in other.widths]
    hint = f" (it looks like --kind {' or '.join(fits)})" if fits else " (is --kind right?)"
    return ValueError(f"{where}the columns do not fit --kind {layout.kind}: {width} columns, a Binance "
                      f"{layout.kind} file has {expected}{hint}")


def import_bytes(run: ImportRun, data: bytes, *, kind: str, symbol: str, interval: str = "") -> int:
    """Import CSV bytes already in memory (tests, small REST-like dumps)."""
    imp = BlockImporter(run, LAYOUTS[kind], symbol, interval)
    imp.feed(io.BytesIO(data))
    return imp.rows

