"""Binance data files (data.binance.vision layouts) and REST paging, onto a real file tape."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from producers.binance.files import import_bytes, import_file, interval_from_name
from producers.binance.rest import agg_trade_pages, import_agg_trades, import_klines, kline_pages
from producers.common import ImportRun, file_identity, find_import
from ticktape.cli import _register_plugins, cli
from ticktape.events import Bar, DeadLetter, Trade
from ticktape.tape import open_tape

FIX = Path(__file__).parents[2] / "fixtures" / "binance"
MS = 1_000_000


def _import(tmp_path: Path, name: str, kind: str, **kw: Any) -> tuple[Any, Any]:
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    path = FIX / name
    run = ImportRun(tape, source="binance", kind=kind, name=name, source_id=file_identity(path))
    import_file(run, path, kind=kind, symbol=kw.pop("symbol", "BTCUSDT"), **kw)
    return tape, run.finish()


def _events(tape: Any, topic: str) -> list[Any]:
    return [r.event for r in tape.read(topic)]


def test_spot_klines_without_header(tmp_path: Path) -> None:
    tape, s = _import(tmp_path, "BTCUSDT-1m-2024-01-01.csv", "klines")
    bars = _events(tape, "md.binance.bar")
    assert s.events == {"md.binance.bar": 3} and s.dead_letters == 0
    assert bars[0] == Bar("binance", "BTCUSDT", 1704067260000 * MS, 1704067260000 * MS, "1m", 42283.58, 42298.62,
                          42283.57, 42298.61, 35.92724, quote_volume=1519603.4236787, trades=1327,
                          taker_buy_base_volume=23.18766, taker_buy_quote_volume=980784.5710149)
    assert [b.ts_event for b in bars] == [(1704067260000 + 60000 * i) * MS for i in range(3)]


def test_futures_klines_with_header_and_microsecond_klines(tmp_path: Path) -> None:
    tape, _s = _import(tmp_path, "ETHUSDT-1h-2024-01-01-futures.csv", "klines", symbol="ETHUSDT")
    bars = _events(tape, "md.binance.bar")
    assert [(b.interval, b.ts_event, b.close) for b in bars] == [("1h", 1704070800000 * MS, 2280.01),
                                                                  ("1h", 1704074400000 * MS, 2289.5)]
    tape2, _ = _import(tmp_path / "us", "BTCUSDT-1s-2025-01-01.csv", "klines")
    assert [b.ts_event for b in _events(tape2, "md.binance.bar")] == [1735689601000000000, 1735689602000000000]


def test_agg_trades_spot_zip_futures_header_and_trades_in_microseconds(tmp_path: Path) -> None:
    tape, _s = _import(tmp_path, "BTCUSDT-aggTrades-2024-01-01.zip", "aggTrades")
    trades = _events(tape, "md.binance.aggtrade")
    assert trades[0] == Trade("binance", "BTCUSDT", 1704067200000 * MS, 1704067200000 * MS, 42283.58, 0.001, "SELL",
                              "2984720153", first_trade_id=3346487012, last_trade_id=3346487012, is_best_match=True)
    assert [(t.first_trade_id, t.last_trade_id) for t in trades[1:]] == [(3346487013, 3346487015),
                                                                         (3346487016, 3346487016)]
    assert [t.aggressor_side for t in trades] == ["SELL", "BUY", "SELL"]
    tape2, _ = _import(tmp_path / "f", "BTCUSDT-aggTrades-2024-01-01-futures.csv", "aggTrades")
    # futures files have no is_best_match column: null
    assert [(t.trade_id, t.size, t.aggressor_side, t.first_trade_id, t.last_trade_id, t.is_best_match)
            for t in _events(tape2, "md.binance.aggtrade")] == [
        ("1907712913", 0.01, "SELL", 4408442401, 4408442401, None),
        ("1907712914", 0.35, "BUY", 4408442402, 4408442404, None)]
    tape3, _ = _import(tmp_path / "t", "BTCUSDT-trades-2025-01-01.csv", "trades")
    # trades files have is_best_match but no first/last trade id
    assert [(t.ts_event, t.trade_id, t.aggressor_side, t.first_trade_id, t.is_best_match)
            for t in _events(tape3, "md.binance.trade")] == [
        (1735689600012345000, "4370303301", "BUY", None, True), (1735689600012999000, "4370303302", "SELL", None, True)]


def test_bad_rows_are_dead_lettered_with_line_numbers_and_the_rest_imports(tmp_path: Path) -> None:
    tape, s = _import(tmp_path, "BTCUSDT-1m-bad.csv", "klines", interval="1m")
    lines = (FIX / "BTCUSDT-1m-bad.csv").read_bytes().splitlines()
    assert s.events == {"md.binance.bar": 2} and s.dead_letters == 3
    dls = _events(tape, "dlq.binance")
    assert [(d.position, d.raw) for d in dls] == [("line 2", lines[1]), ("line 3", lines[2]), ("line 4", lines[3])]
    assert "column 'high'='abc'" in dls[0].error
    assert "4 columns, expected 12" in dls[1].error
    assert dls[2].error == "high below low"
    assert all(isinstance(d, DeadLetter) and d.source == "binance:BTCUSDT-1m-bad.csv" for d in dls)
    assert [b.open for b in _events(tape, "md.binance.bar")] == [42283.58, 42310.0]


def test_block_boundaries_do_not_change_the_result(tmp_path: Path) -> None:
    data = (FIX / "BTCUSDT-1m-bad.csv").read_bytes() * 50
    results = []
    for block in (64, 1000, 1 << 20):
        tape = open_tape(f"file:{tmp_path / str(block)}")
        run = ImportRun(tape, source="binance", kind="klines", name="x", source_id=str(block))
        from producers.binance.files import LAYOUTS, BlockImporter

        imp = BlockImporter(run, LAYOUTS["klines"], "BTCUSDT", "1m")
        import io

        imp.feed(io.BytesIO(data), block)
        run.finish()
        results.append((_events(tape, "md.binance.bar"), [(d.position, d.raw) for d in _events(tape, "dlq.binance")]))
    assert results[0] == results[1] == results[2]
    assert len(results[0][0]) == 100 and len(results[0][1]) == 150
    assert results[0][1][-1][0] == "line 249"


def test_wrong_kind_is_a_clear_error(tmp_path: Path) -> None:
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    run = ImportRun(tape, source="binance", kind="k", name="x", source_id="x")
    with pytest.raises(ValueError, match=r"the columns do not fit --kind trades: 12 columns, a Binance trades file "
                                         r"has 6 or 7 \(it looks like --kind klines\)"):
        import_bytes(run, (FIX / "BTCUSDT-1m-2024-01-01.csv").read_bytes(), kind="trades", symbol="BTCUSDT")
    assert interval_from_name("BTCUSDT-15m-2024-01.zip") == "15m" and interval_from_name("x.csv") is None
    # klines without an interval in the name: the columns are the problem, said once, not the name
    with pytest.raises(ValueError) as err:
        import_file(run, FIX / "BTCUSDT-aggTrades-2024-01-01.zip", kind="klines", symbol="BTCUSDT")
    assert str(err.value) == ("the columns do not fit --kind klines: 8 columns, a Binance klines file has 11 or 12 "
                              "(it looks like --kind aggTrades)")


def test_one_boolean_rule_for_both_parsers(tmp_path: Path) -> None:
    """1/0 booleans import, and one bad row (which sends its block to the line-by-line parser)
    dead-letters that row only, not the 1/0 rows around it."""
    rows = [f"{100 + i},42000.5,0.01,{200 + i},{200 + i},{1704067200000 + i},{i % 2},1" for i in range(32)]
    clean = open_tape(f"file:{tmp_path / 'clean'}")
    run = ImportRun(clean, source="binance", kind="aggTrades", name="x", source_id="x")
    import_bytes(run, ("\n".join(rows) + "\n").encode(), kind="aggTrades", symbol="BTCUSDT")
    assert run.finish().events == {"md.binance.aggtrade": 32}
    rows[5] = rows[5].replace("42000.5", "abc")
    tape = open_tape(f"file:{tmp_path / 'bad'}")
    run = ImportRun(tape, source="binance", kind="aggTrades", name="x", source_id="x")
    import_bytes(run, ("\n".join(rows) + "\n").encode(), kind="aggTrades", symbol="BTCUSDT")
    summary = run.finish()
    assert summary.events == {"md.binance.aggtrade": 31} and summary.dead_letters == 1
    assert [d.position for d in _events(tape, "dlq.binance")] == ["line 6"]
    sides = [t.aggressor_side for t in _events(tape, "md.binance.aggtrade")]
    assert sides == [t.aggressor_side for i, t in enumerate(_events(clean, "md.binance.aggtrade")) if i != 5]


def test_cli_import_twice_adds_nothing_and_strict_fails_on_bad_rows(tmp_path: Path) -> None:
    _register_plugins()
    src = tmp_path / "BTCUSDT-1m-2024-01-01.csv"
    shutil.copy(FIX / "BTCUSDT-1m-2024-01-01.csv", src)
    copy = tmp_path / "renamed.csv"
    shutil.copy(src, copy)
    runner = CliRunner()
    args = ["--tape", f"file:{tmp_path / 'tape'}", "import", "binance", "--kind", "klines", "--json"]
    first = runner.invoke(cli, [*args, str(src)])
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["events"] == 3
    again = runner.invoke(cli, [*args, "--symbol", "BTCUSDT", "--interval", "1m", str(copy)])  # same bytes
    assert again.exit_code == 0 and json.loads(again.output)["outcome"] == "skipped"
    other = ["--tape", f"file:{tmp_path / 'other'}", *args[2:]]
    both = runner.invoke(cli, [*other, str(src), str(copy)])  # one command: the second is a repeat
    assert [json.loads(x)["outcome"] for x in both.output.splitlines()] == ["imported", "skipped"]
    bad = runner.invoke(cli, [*args, "--interval", "1m", "--strict", str(FIX / "BTCUSDT-1m-bad.csv")])
    assert bad.exit_code == 1
    # its first bar (00:00) is the first file's first bar: left out, not on the tape twice
    bad_summary = json.loads(bad.output.splitlines()[0])
    assert (bad_summary["dead_letters"], bad_summary["duplicates"]) == (3, 1)
    # run again: nothing is imported twice, and --strict still fails (it used to exit 0 here)
    rerun = runner.invoke(cli, [*args, "--interval", "1m", "--strict", str(FIX / "BTCUSDT-1m-bad.csv")])
    assert rerun.exit_code == 1, rerun.output
    summary = json.loads(rerun.output.splitlines()[0])
    assert (summary["outcome"], summary["dead_letters"], summary["events"]) == ("skipped", 3, 0)
    lenient = runner.invoke(cli, [*args, "--interval", "1m", str(FIX / "BTCUSDT-1m-bad.csv")])
    assert lenient.exit_code == 0, lenient.output
    shown = runner.invoke(cli, ["--tape", f"file:{tmp_path / 'tape'}", "cat", "dlq.binance", "--limit", "1"])
    assert shown.exit_code == 0, shown.output  # raw bytes print as Avro-JSON (latin-1) text
    line2 = (FIX / "BTCUSDT-1m-bad.csv").read_bytes().splitlines()[1]
    assert json.loads(shown.output)["raw"].encode("latin-1") == line2
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    closes = [r.event.ts_event for r in tape.read("md.binance.bar")]
    assert len(closes) == len(set(closes)) == 4
    assert find_import(tape, file_identity(src)) is not None
    tape.close()
    zipped = tmp_path / "BTCUSDT-aggTrades-2024-01-01.zip"
    shutil.copy(FIX / zipped.name, zipped)
    checksum = zipped.with_name(zipped.name + ".CHECKSUM")
    checksum.write_text(f"{'0' * 64}  {zipped.name}\n")
    corrupt = runner.invoke(cli, [*args[:-2], "aggTrades", str(zipped)])
    assert corrupt.exit_code != 0 and "sha256 does not match" in corrupt.output
    checksum.write_text(f"{file_identity(zipped).removeprefix('sha256:')}  {zipped.name}\n")
    ok = runner.invoke(cli, [*args[:-2], "aggTrades", str(zipped)])
    assert ok.exit_code == 0 and "3 events" in ok.output


class RecordedPages:
    """A history client returning recorded API pages, and logging the calls (paging under test)."""

    def __init__(self, klines: list[list[Any]] | None = None, aggs: list[dict[str, Any]] | None = None) -> None:
        self.klines = klines or []
        self.aggs = aggs or []
        self.calls: list[dict[str, Any]] = []

    def get_klines(self, **p: Any) -> list[list[Any]]:
        self.calls.append(p)
        rows = [k for k in self.klines if p["startTime"] <= k[0] <= p["endTime"]]
        return rows[:p["limit"]]

    def get_aggregate_trades(self, **p: Any) -> list[dict[str, Any]]:
        self.calls.append(p)
        if "fromId" in p:
            return [t for t in self.aggs if t["a"] >= p["fromId"]][:p["limit"]]
        return [t for t in self.aggs if p["startTime"] <= t["T"] <= p["endTime"]][:500]


def _kline(open_ms: int) -> list[Any]:
    return [open_ms, "10.0", "11.0", "9.5", "10.5", "3.0", open_ms + 59_999, "30.0", 5, "1.0", "10.0", "0"]


def test_kline_paging_streams_every_row_once_and_leaves_out_the_open_bar(tmp_path: Path) -> None:
    t0 = 1_704_067_200_000
    client = RecordedPages(klines=[_kline(t0 + 60_000 * i) for i in range(25)])
    pages = list(kline_pages(client, "BTCUSDT", "1m", t0, t0 + 60_000 * 25, limit=10))
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [c["startTime"] for c in client.calls] == [t0, t0 + 600_000, t0 + 1_200_000]
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    run = ImportRun(tape, source="binance", kind="rest", name="q", source_id="q")
    end = t0 + 60_000 * 24 + 30_000  # the 25th bar is still open at the end of the range
    assert import_klines(run, RecordedPages(klines=client.klines), "BTCUSDT", "1m", t0, end) == 24
    run.finish()
    bars = [r.event for r in tape.read("md.binance.bar")]
    assert len({b.ts_event for b in bars}) == 24 and bars[-1].ts_event == (t0 + 60_000 * 24) * MS


def test_agg_trade_paging_finds_the_first_trade_by_time_then_pages_by_id(tmp_path: Path) -> None:
    t0 = 1_704_067_200_000
    aggs = [{"a": 100 + i, "p": "42000.5", "q": "0.1", "f": 1, "l": 1, "T": t0 + 2 * 3_600_000 + 1000 * i,
             "m": bool(i % 2), "M": True} for i in range(2500)]
    client = RecordedPages(aggs=aggs)
    end = t0 + 2 * 3_600_000 + 1000 * 2200
    pages = list(agg_trade_pages(client, "BTCUSDT", t0, end, limit=1000))
    ids = [t["a"] for p in pages for t in p]
    assert ids == list(range(100, 2300))  # every trade of the range once, in order
    assert [("fromId" in c) for c in client.calls] == [False, False, False, True, True]
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    run = ImportRun(tape, source="binance", kind="rest", name="q", source_id="q")
    aggs[5]["p"] = "NaN?"
    assert import_agg_trades(run, RecordedPages(aggs=aggs), "BTCUSDT", t0, end) == 2199
    s = run.finish()
    assert s.dead_letters == 1 and "field 'p'" in s.errors[0]


def test_the_same_rows_from_other_files_land_once(tmp_path: Path) -> None:
    """Binance publishes X.csv and X.zip (and daily inside monthly files): rows are de-duplicated by
    (symbol, kind, trade id) across files; --force is the explicit override."""
    import io
    import zipfile

    _register_plugins()
    rows = [f"{100 + i},42000.5,0.01,{200 + i},{200 + i},{1704067200000 + i},{i % 2},True" for i in range(40)]
    day1 = tmp_path / "BTCUSDT-aggTrades-2024-01-01.csv"
    day1.write_text("\n".join(rows[:25]) + "\n")
    zipped = tmp_path / "BTCUSDT-aggTrades-2024-01.zip"  # overlaps day1 (ids 115..124) and goes further
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("BTCUSDT-aggTrades-2024-01.csv", "\n".join(rows[15:]) + "\n")
    zipped.write_bytes(buf.getvalue())
    runner = CliRunner()
    args = ["--tape", f"file:{tmp_path / 'tape'}", "import", "binance", "--kind", "aggTrades", "--json"]
    first = json.loads(runner.invoke(cli, [*args, str(day1)]).output)
    second = json.loads(runner.invoke(cli, [*args, str(zipped)]).output)
    assert (first["events"], first["duplicates"]) == (25, 0)
    assert (second["events"], second["duplicates"]) == (15, 10)
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    ids = [t.trade_id for t in _events(tape, "md.binance.aggtrade")]
    assert ids == [str(100 + i) for i in range(40)]  # each trade once, in id order
    tape.close()
    forced = runner.invoke(cli, [*args, "--force", str(zipped)])
    assert json.loads(forced.output)["events"] == 25  # the override imports every row again


def test_id_ranges_cover_what_a_file_holds_only() -> None:
    import numpy as np

    from producers.binance.seen import contiguous_runs, merged

    assert contiguous_runs(np.array([5, 6, 7, 9, 10]), 1) == [(5, 7), (9, 10)]  # a gap is not covered
    assert contiguous_runs(np.array([9, 5, 7, 6, 6]), 1) == [(5, 7), (9, 9)]  # any order, repeats
    assert contiguous_runs(np.array([60, 120, 240]), 60) == [(60, 120), (240, 240)]  # klines step by the interval
    assert merged([(9, 10), (1, 3), (4, 5)]) == [(1, 5), (9, 10)]


def test_a_gap_in_one_file_is_filled_by_another(tmp_path: Path) -> None:
    _register_plugins()
    rows = [f"{100 + i},42000.5,0.01,{200 + i},{200 + i},{1704067200000 + i},True,True" for i in range(10)]
    holey = tmp_path / "BTCUSDT-aggTrades-a.csv"
    holey.write_text("\n".join(rows[:4] + rows[6:]) + "\n")  # ids 104, 105 missing
    full = tmp_path / "BTCUSDT-aggTrades-b.csv"
    full.write_text("\n".join(rows) + "\n")
    args = ["--tape", f"file:{tmp_path / 'tape'}", "import", "binance", "--kind", "aggTrades", "--json"]
    runner = CliRunner()
    assert json.loads(runner.invoke(cli, [*args, str(holey)]).output)["events"] == 8
    second = json.loads(runner.invoke(cli, [*args, str(full)]).output)
    assert (second["events"], second["duplicates"]) == (2, 8)
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    assert sorted(int(t.trade_id) for t in _events(tape, "md.binance.aggtrade")) == list(range(100, 110))
    tape.close()
