"""One rule for numbers entering the tape: finite (no NaN, ±Infinity, nor 1e400), at every entry point,
unless the schema marks the field `"ticktape.nonfinite": true`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from producers.binance.files import import_bytes
from producers.binance.parsers import BinanceParseError, parse_trade
from producers.binance.rest import kline_row_bar
from producers.common import ImportRun
from producers.frames import add_bars, add_data
from tests.conftest import make_trades
from ticktape.codec import NONFINITE, Codec, default_codec, finite, to_python
from ticktape.errors import ValidationError
from ticktape.schemas import SchemaRegistry, default_schema_dir
from ticktape.tape import open_tape

NON_FINITE_JSON = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", '"nan"', '"-inf"', '"1e400"']
"""How a non-finite number can be written in `put`'s JSON lines (Python's json reads the first five)."""


def trade_line(price: str) -> str:
    data = to_python(make_trades(1)[0])
    return json.dumps(data).replace(f'"price": {data["price"]}', f'"price": {price}')


@pytest.mark.parametrize("price", NON_FINITE_JSON)
def test_put_converter_refuses_non_finite_numbers(price: str) -> None:
    with pytest.raises(ValidationError, match=r"line 3, field 'price': -?(nan|inf) is not a finite number"):
        default_codec().from_dict("Trade", json.loads(trade_line(price)), where="line 3")


def test_put_refuses_them_end_to_end_and_writes_nothing(tmp_path: Path) -> None:
    lines = [trade_line("30000.5"), trade_line("Infinity"), trade_line("1.0")]
    done = subprocess.run([sys.executable, "-m", "ticktape", "--tape", f"file:{tmp_path / 'tape'}", "put", "md.trade",
                           "--type", "Trade"], input="\n".join(lines) + "\n", capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: line 2, field 'price': inf is not a finite number (NaN, ±Infinity and numbers beyond ±1.8e308 are "
        "refused)"]
    assert open_tape(f"file:{tmp_path / 'tape'}").topics() == []


def test_dataframe_bars_refuse_them(tmp_path: Path) -> None:
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    df = pd.DataFrame({"open": [1.0, 2.0], "high": [2.0, np.inf], "low": [0.5, 1.0], "close": [1.5, 1.5],
                       "volume": [1.0, 1.0]}, index=pd.date_range("2024-01-01", periods=2, freq="1min", tz="UTC"))
    with pytest.raises(ValidationError, match=r"column 'high': row 1 .* is (np.float64\()?inf\)?, not a finite number"):
        add_bars(df, venue="sim", instrument="X", interval="1m", tape=tape)
    assert tape.topics() == []


def test_add_data_refuses_infinity_and_writes_nan_as_null(tmp_path: Path) -> None:
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    times = pd.to_datetime(["2024-01-01T00:00:01Z", "2024-01-01T00:00:02Z"])
    with pytest.raises(ValidationError, match=r"column 'score': row 1 .* is -inf, not a finite number"):
        add_data("signals", pd.DataFrame({"time": times, "score": [1.0, -np.inf]}), tape=tape)
    assert tape.topics() == []
    add_data("signals", pd.DataFrame({"time": times, "score": [1.0, np.nan]}), tape=tape)
    payloads = [json.loads(r.event.payload) for r in tape.read("custom.signals")]
    assert payloads == [{"score": 1.0}, {"score": None}]  # NaN is pandas' missing value


def test_binance_payloads_files_and_rest_refuse_them(tmp_path: Path) -> None:
    for price in ("NaN", "inf", "1e400"):
        with pytest.raises(BinanceParseError, match="not a finite number"):
            parse_trade({"s": "BTCUSDT", "T": 1, "p": price, "q": "1", "m": True, "t": 7}, 5)
        with pytest.raises(ValueError, match="not a finite number"):
            kline_row_bar([0, "1", price, "1", "1", "1", 59_999, "0", 1, "0", "0", "0"], "BTCUSDT", "1m")
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    run = ImportRun(tape, source="binance", kind="binance.aggTrades", name="x.csv", source_id="sha256:x")
    rows = [f"{i},{p},1.0,{i},{i},1704067200000,true,true" for i, p in enumerate(["100.5", "inf", "nan", "1e400"])]
    assert import_bytes(run, "\n".join(rows).encode() + b"\n", kind="aggTrades", symbol="BTCUSDT") == 1
    summary = run.finish()
    assert summary.events == {"md.binance.aggtrade": 1} and summary.dead_letters == 3
    assert {r.event.error for r in tape.read("dlq.binance")} == {"price not a finite number > 0"}


def test_finite_is_the_rule() -> None:
    assert finite(1e308) == 1e308 and finite(-0.0) == 0.0
    for x in (math.nan, math.inf, -math.inf, float("1e400")):
        with pytest.raises(ValueError, match="is not a finite number"):
            finite(x)


def _marked_schemas(tmp_path: Path) -> Path:
    """A copy of the schemas where `Trade.price` (only) may be non-finite."""
    out = tmp_path / "schemas"
    out.mkdir()
    for path in default_schema_dir().glob("*.avsc"):
        schema = json.loads(path.read_text())
        if schema["name"] == "Trade":
            for f in schema["fields"]:
                if f["name"] == "price":
                    f[NONFINITE] = True
        (out / path.name).write_text(json.dumps(schema))
    return out


def test_a_field_marked_nonfinite_takes_them_and_its_neighbours_do_not(tmp_path: Path) -> None:
    marked = SchemaRegistry.load(_marked_schemas(tmp_path))
    assert marked.current["Trade"].fingerprint == default_codec().registry.current["Trade"].fingerprint
    codec = Codec(marked)
    event = codec.from_dict("Trade", json.loads(trade_line("NaN")))
    assert math.isnan(event.price)
    with pytest.raises(ValidationError, match="field 'size': inf is not a finite number"):
        codec.from_dict("Trade", {**json.loads(trade_line("NaN")), "size": math.inf})


def test_put_follows_the_mark_of_the_schemas_in_use(tmp_path: Path) -> None:
    env = {**os.environ, "TICKTAPE_SCHEMAS": str(_marked_schemas(tmp_path))}
    uri = f"file:{tmp_path / 'tape'}"
    done = subprocess.run([sys.executable, "-m", "ticktape", "--tape", uri, "put", "md.trade", "--type", "Trade"],
                          input=trade_line("-Infinity") + "\n", capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert [r.event.price for r in open_tape(uri).read("md.trade")] == [-math.inf]


@pytest.mark.parametrize("encode_books", [False, True])
def test_betfair_lines_refuse_them(encode_books: bool) -> None:
    from producers.betfair.parse import StreamDecoder

    lines = (Path(__file__).parents[1] / "fixtures" / "betfair" / "market.stream").read_bytes().splitlines()
    decoder = StreamDecoder(encode_books=encode_books)
    decoder.decode_line(lines[0])
    for number in (b"1e400", b"-1e400", b"NaN", b"Infinity"):
        with pytest.raises(ValidationError, match="not JSON"):
            decoder.decode_line(lines[1].replace(b"[2.04,6]", b"[2.04," + number + b"]"))
