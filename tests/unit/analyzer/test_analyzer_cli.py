"""`ticktape load` and `ticktape sql` (one query, formats, and the shell on piped stdin)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_trades
from ticktape.tape.file import FileTape

REPO = Path(__file__).resolve().parents[3]


def ticktape(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ticktape", *args], input=stdin, capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=120)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    with FileTape(tmp_path / "tape") as t:
        t.append("md.trade", make_trades(20))
        t.append("md.trade", make_trades(5, start=20, instrument="ETHUSDT"))
    out = tmp_path / "a.duckdb"
    r = ticktape("load", "--tape", f"file:{tmp_path / 'tape'}", "--db", str(out))
    assert r.returncode == 0, r.stderr
    assert "loaded 25 events" in r.stdout
    r = ticktape("--tape", f"file:{tmp_path / 'tape'}", "load", "--db", str(out), "--topics", "md.trade")
    assert r.returncode == 0 and "loaded 0 events" in r.stdout
    return out


def test_sql_query_in_three_formats(db: Path) -> None:
    q = "SELECT instrument, count(*) AS n, sum(size) AS size FROM trade GROUP BY 1 ORDER BY 1"
    table = ticktape("sql", str(db), q)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["instrument", "n", "size"] and lines[-1] == "(2 rows)"
    assert lines[2].split()[:2] == ["BTCUSDT", "20"] and lines[3].split()[:2] == ["ETHUSDT", "5"]
    rows = list(csv.reader(io.StringIO(ticktape("sql", str(db), q, "--format", "csv").stdout)))
    assert rows[0] == ["instrument", "n", "size"] and rows[1][:2] == ["BTCUSDT", "20"]
    objs = [json.loads(line) for line in ticktape("sql", str(db), q, "--format", "json").stdout.splitlines()]
    assert [o["n"] for o in objs] == [20, 5]
    assert objs[1]["size"] == pytest.approx(sum(t.size for t in make_trades(5, start=20)))
    bad = ticktape("sql", str(db), "SELECT nope FROM trade")
    assert bad.returncode != 0 and "nope" in bad.stderr


def test_sql_shell_reads_statements_from_stdin(db: Path) -> None:
    script = ("SELECT count(*) AS n\n  FROM trade;\n.tables\n.format csv\n"
              "SELECT max(_offset) AS last FROM trade WHERE instrument = 'ETHUSDT';\n"
              "SELECT broken;\n.quit\nSELECT 'never' AS x;\n")
    r = ticktape("sql", str(db), stdin=script)
    assert r.returncode == 1  # one statement failed
    assert "n\n" in r.stdout and "25" in r.stdout
    assert "trade_v" in r.stdout and "load_bookmarks" in r.stdout
    assert "last\n24\n" in r.stdout
    assert "never" not in r.stdout
    assert "broken" in r.stderr
