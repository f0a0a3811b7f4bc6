"""What `pip install ticktape` gets: the wheel alone, away from the repository, must work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_an_installed_wheel_works_outside_the_repository(tmp_path: Path) -> None:
    dist, site = tmp_path / "dist", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(REPO)],
                   check=True, timeout=900)
    (wheel,) = dist.glob("ticktape-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k != "TICKTAPE_SCHEMAS"}
    env["PYTHONPATH"] = str(site)  # ahead of the editable checkout the test session runs from
    where = tmp_path / "elsewhere"
    where.mkdir()

    def run(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run([sys.executable, *args], cwd=where, env=env, input=stdin, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    probe = ("import json, ticktape, ticktape.codec as c, producers.betfair.cache as b, ticktape.schemas as s;"
             "print(json.dumps([ticktape.__file__, str(s.default_schema_dir()),"
             " c.VM is not None, b.FAST is not None]))")
    package, schemas, avrovm, ladders = json.loads(run("-c", probe))
    assert package.startswith(str(site)) and schemas == str(site / "ticktape" / "_schemas")
    assert avrovm and ladders  # both C extensions are in the wheel
    listed = run("-m", "ticktape", "schemas", "list")
    assert len(listed.splitlines()) == len(list((REPO / "schemas").glob("*.avsc")))
    trade = {"venue": "binance", "instrument": "BTCUSDT", "ts_event": 1, "ts_recv": 2, "price": 1.5, "size": 2.0,
             "aggressor_side": "BUY", "trade_id": "7"}
    run("-m", "ticktape", "--tape", "file:t", "put", "md.trade", "--type", "Trade", stdin=json.dumps(trade) + "\n")
    (line,) = run("-m", "ticktape", "--tape", "file:t", "cat", "md.trade").splitlines()
    assert json.loads(line)["trade_id"] == "7"
