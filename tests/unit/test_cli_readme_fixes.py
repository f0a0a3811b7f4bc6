"""CLI surface the README shows (issue 16): one-shot dot-commands in `sql`, `schemas show`, and
`sweep --json`'s help saying what it prints."""

from __future__ import annotations

import json
import math
from pathlib import Path

from click.testing import CliRunner

from robots.backtest import backtest
from ticktape.cli import _register_plugins, cli
from ticktape.events import Trade
from ticktape.tape import open_tape

TS0 = 1_700_000_000_000_000_000


def invoke(*args: str) -> tuple[int, str]:
    _register_plugins()
    res = CliRunner().invoke(cli, ["--log-level", "error", *args])
    return res.exit_code, res.output


def db_with_a_run(tmp_path: Path) -> str:
    uri = f"file:{tmp_path / 'tape'}"
    with open_tape(uri) as tape:
        tape.append("md.sim.trade", [Trade("sim", "BTCUSDT", TS0 + i * 10**9, TS0 + i * 10**9,
                                           round(30_000 + 200 * math.sin(i / 30), 2), 0.01, "BUY", str(i))
                                     for i in range(300)])
    backtest("ema_cross", tape=uri, params={"slow": 20}, run_id="r1")
    db = str(tmp_path / "runs.duckdb")
    code, out = invoke("load", "--tape", uri, "--db", db)
    assert code == 0, out
    return db


def test_sql_takes_the_shells_dot_commands_one_shot(tmp_path: Path) -> None:
    db = db_with_a_run(tmp_path)
    code, out = invoke("sql", db, ".tables", "--format", "csv")
    assert code == 0, out
    names = {line.split(",")[0] for line in out.splitlines()[1:]}
    assert {"trade", "run_started", "pnl_summary"} <= names
    code, out = invoke("sql", db, ".schema trade", "--format", "csv")
    assert code == 0 and "price,DOUBLE" in out and "_offset,BIGINT" in out
    code, out = invoke("sql", db, ".schema nope")
    assert code != 0 and "no table or view 'nope'" in out
    code, out = invoke("sql", db, ".nonsense")
    assert code != 0 and "unknown command '.nonsense'" in out
    code, out = invoke("sql", db, "SELECT count(*) AS n FROM trade", "--format", "json")
    assert code == 0 and json.loads(out) == {"n": 300}


def test_schemas_show_prints_each_field_with_type_and_doc() -> None:
    code, out = invoke("schemas", "show", "Trade")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("Trade v2 (Trade.v2.avsc, fingerprint ")
    fields = {line.split()[0]: line for line in lines[2:]}
    assert list(fields) == ["venue", "instrument", "ts_event", "ts_recv", "price", "size", "aggressor_side",
                            "trade_id", "first_trade_id", "last_trade_id", "is_best_match"]
    assert "venue time of the event" in fields["ts_event"] and "double" in fields["price"]
    assert "enum AggressorSide{BUY|SELL|NONE}" in fields["aggressor_side"]
    code, out = invoke("schemas", "show", "Trades")
    assert code != 0 and "no schema 'Trades'" in out and "Timer, Trade" in out


def test_sweep_json_help_says_what_it_prints(tmp_path: Path) -> None:
    uri = f"file:{tmp_path / 'tape'}"
    with open_tape(uri) as tape:
        tape.append("md.sim.trade", [Trade("sim", "BTCUSDT", TS0 + i * 10**9, TS0 + i * 10**9, 30_000.0 + i % 7, 0.01,
                                           "BUY", str(i)) for i in range(100)])
    _, help_text = invoke("sweep", "--help")
    said_array = "one JSON array" in " ".join(help_text.split())
    code, out = invoke("sweep", "ema_cross", "--tape", uri, "--grid", "fast=5,10", "--param", "slow=20", "--no-out",
                       "--json")
    assert code == 0, out
    printed = json.loads(out)
    assert said_array and isinstance(printed, list) and len(printed) == 2
    _, help_text = invoke("backtest", "--help")
    assert "one JSON object" in " ".join(help_text.split())
