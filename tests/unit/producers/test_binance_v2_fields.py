"""Trade v2 / Bar v2 fields on every Binance path: files (fast and line-by-line parser, one set of
rules), the live websocket payloads and REST history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from producers.binance.files import LAYOUTS, BlockImporter, import_bytes
from producers.binance.parsers import BinanceParseError, parse_payload
from producers.binance.rest import import_agg_trades, kline_row_bar
from producers.common import ImportRun
from ticktape.events import Bar, DeadLetter, Event, Trade
from ticktape.tape import open_tape

FIX = Path(__file__).parents[2] / "fixtures" / "binance"
MS = 1_000_000
T0 = 1_704_067_200_000


def agg_row(i: int) -> str:
    # agg id, price, qty, first id, last id, time, is_buyer_maker (1/0 as some files write), is_best_match
    return f"{100 + i},42000.5,0.01,{200 + 3 * i},{202 + 3 * i},{T0 + i},{i % 2},{'True' if i % 3 else '0'}"


def kline_row(i: int) -> str:
    o = T0 + 60_000 * i
    return f"{o},10.0,11.0,9.5,10.5,3.0,{o + 59_999},{30.5 + i},{5 + i},1.25,{12.5 + i},0"


def trade_row(i: int) -> str:
    return f"{4370303301 + i},93576.0,0.00017,15.9,{1735689600012345 + i},{'True' if i % 2 else 'False'},True"


MAKERS = {"aggTrades": agg_row, "klines": kline_row, "trades": trade_row}

# Malformed in the new columns: each must be one dead letter naming its column, on both paths.
BAD = {
    "aggTrades": [("first_trade_id", lambda r: _set(r, 3, "x1")), ("last_trade_id", lambda r: _set(r, 4, "")),
                  ("is_best_match", lambda r: _set(r, 7, "maybe"))],
    "klines": [("quote_volume", lambda r: _set(r, 7, "abc")), ("count", lambda r: _set(r, 8, "1.5")),
               ("taker_buy_volume", lambda r: _set(r, 9, "-1")),
               ("taker_buy_quote_volume", lambda r: _set(r, 10, "inf"))],
    "trades": [("is_best_match", lambda r: _set(r, 6, "yes"))],
}


def _set(row: str, i: int, value: str) -> str:
    cells = row.split(",")
    cells[i] = value
    return ",".join(cells)


class Recorder:
    """An ImportRun stand-in that keeps what the importer emits (to compare the two parsers)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.dead: list[tuple[str, str, bytes]] = []

    def emit_many(self, topic: str, events: list[Event], key: str) -> None:
        self.events += events

    def dead_letter(self, position: str, error: str, raw: bytes) -> None:
        self.dead.append((position, error, raw))


def both_paths(kind: str, rows: list[str]) -> tuple[Recorder, Recorder, bool]:
    """The same body through the column-wise parser and the line-by-line one; whether the fast one took it."""
    body = ("\n".join(rows) + "\n").encode()
    out = []
    fast_ok = True
    for path in ("fast", "slow"):
        rec = Recorder()
        imp = BlockImporter(rec, LAYOUTS[kind], "BTCUSDT", "1m")  # type: ignore[arg-type]
        imp.names = imp._detect(body, 1)
        if path == "fast":
            try:
                imp._fast(body, len(rows))
            except Exception:
                fast_ok = False
                imp._slow(body, 1)  # what _block does
        else:
            imp._slow(body, 1)
        out.append(rec)
    return out[0], out[1], fast_ok


@pytest.mark.parametrize("kind", ["aggTrades", "klines", "trades"])
def test_fast_and_line_parsers_give_the_same_events(kind: str) -> None:
    rows = [MAKERS[kind](i) for i in range(40)]
    fast, slow, fast_ok = both_paths(kind, rows)
    assert fast_ok and not fast.dead and not slow.dead
    assert fast.events == slow.events and len(fast.events) == 40
    first = fast.events[0]
    if kind == "aggTrades":
        assert isinstance(first, Trade)
        assert (first.first_trade_id, first.last_trade_id, first.is_best_match) == (200, 202, False)
        assert [(t.last_trade_id, t.is_best_match) for t in fast.events[1:3]] == [(205, True), (208, True)]  # type: ignore[union-attr]
    elif kind == "klines":
        assert isinstance(first, Bar)
        assert (first.quote_volume, first.trades, first.taker_buy_base_volume, first.taker_buy_quote_volume) == (
            30.5, 5, 1.25, 12.5)
    else:
        assert isinstance(first, Trade)
        assert (first.first_trade_id, first.last_trade_id, first.is_best_match) == (None, None, True)


@pytest.mark.parametrize("kind", ["aggTrades", "klines", "trades"])
def test_a_malformed_new_column_is_one_dead_letter_on_both_paths(kind: str) -> None:
    good = [MAKERS[kind](i) for i in range(40)]
    for column, spoil in BAD[kind]:
        rows = list(good)
        rows[7] = spoil(rows[7])
        fast, slow, fast_ok = both_paths(kind, rows)
        assert not fast_ok, column  # the column-wise reader refuses the block, the line parser takes over
        assert fast.events == slow.events
        assert len(slow.events) == 39 and [(p, raw) for p, _, raw in slow.dead] == [("line 8", rows[7].encode())]
        error = slow.dead[0][1]
        assert column in error or "not a finite number" in error, (column, error)
        # the good rows are exactly those of the clean file
        clean, _, _ = both_paths(kind, good)
        assert slow.events == clean.events[:7] + clean.events[8:]


def test_a_futures_agg_trades_file_has_no_is_best_match(tmp_path: Path) -> None:
    body = (FIX / "BTCUSDT-aggTrades-2024-01-01-futures.csv").read_bytes()
    bad = body + b"1907712915,42314.1,abc,4408442405,4408442405,1704067200100,false\n"
    for data, dead in ((body, 0), (bad, 1)):  # the second goes through the line parser
        tape = open_tape(f"file:{tmp_path / str(dead)}")
        run = ImportRun(tape, source="binance", kind="aggTrades", name="x", source_id=str(dead))
        import_bytes(run, data, kind="aggTrades", symbol="BTCUSDT")
        assert run.finish().dead_letters == dead
        trades = [r.event for r in tape.read("md.binance.aggtrade")]
        got = [(t.first_trade_id, t.last_trade_id, t.is_best_match) for t in trades]  # type: ignore[union-attr]
        assert got == [(4408442401, 4408442401, None), (4408442402, 4408442404, None)]
        if dead:
            [dl] = [r.event for r in tape.read("dlq.binance")]
            assert isinstance(dl, DeadLetter) and dl.position == "line 4"


def test_live_payloads_carry_the_new_fields() -> None:
    agg = {"e": "aggTrade", "E": T0, "s": "BTCUSDT", "a": 5, "p": "1.5", "q": "2", "f": 10, "l": 12, "T": T0,
           "m": True, "M": False}
    [(_, t)] = parse_payload(agg, 7)
    assert isinstance(t, Trade) and (t.first_trade_id, t.last_trade_id, t.is_best_match) == (10, 12, False)
    futures = {k: v for k, v in agg.items() if k != "M"}  # USD-M futures' aggTrade has no M
    [(_, t)] = parse_payload(futures, 7)
    assert (t.first_trade_id, t.last_trade_id, t.is_best_match) == (10, 12, None)  # type: ignore[union-attr]
    for field, value in (("f", "x"), ("l", 1.5), ("M", "true")):
        with pytest.raises(BinanceParseError, match=f"field '{field}'"):
            parse_payload({**agg, field: value}, 7)
    kline = json.loads((FIX / "ws_messages.jsonl").read_text().splitlines()[4])["data"]
    [(_, bar)] = parse_payload(kline, 7)
    assert isinstance(bar, Bar) and (bar.quote_volume, bar.trades, bar.taker_buy_base_volume,
                                     bar.taker_buy_quote_volume) == (456789.123, 101, 6.0, 222000.0)
    for field, value in (("q", "NaN"), ("n", "many"), ("V", None)):
        k = {**kline["k"], field: value}
        if value is None:
            [(_, b)] = parse_payload({**kline, "k": k}, 7)
            assert b.taker_buy_base_volume is None  # type: ignore[union-attr]
        else:
            with pytest.raises(BinanceParseError, match=f"field '{field}'"):
                parse_payload({**kline, "k": k}, 7)


def test_rest_history_carries_the_new_fields(tmp_path: Path) -> None:
    row: list[Any] = [T0, "10.0", "11.0", "9.5", "10.5", "3.0", T0 + 59_999, "30.0", 5, "1.0", "10.0", "0"]
    bar = kline_row_bar(row, "BTCUSDT", "1m")
    assert (bar.quote_volume, bar.trades, bar.taker_buy_base_volume, bar.taker_buy_quote_volume) == (30.0, 5, 1.0, 10.0)
    assert kline_row_bar(row[:7], "BTCUSDT", "1m").quote_volume is None  # a short row: unknown

    class Pages:
        def get_klines(self, **params: Any) -> list[list[Any]]:
            return []

        def get_aggregate_trades(self, **params: Any) -> list[dict[str, Any]]:
            if "fromId" in params:
                return []
            return [{"a": 1, "p": "1.5", "q": "2", "f": 3, "l": 4, "T": T0 + 1, "m": False, "M": True}]

    tape = open_tape(f"file:{tmp_path / 't'}")
    run = ImportRun(tape, source="binance", kind="rest", name="q", source_id="q")
    assert import_agg_trades(run, Pages(), "BTCUSDT", T0, T0 + 1000) == 1
    run.finish()
    [t] = [r.event for r in tape.read("md.binance.aggtrade")]
    assert isinstance(t, Trade) and (t.first_trade_id, t.last_trade_id, t.is_best_match) == (3, 4, True)
