"""Done-when: a backtest run loads into DuckDB, its metrics agree with the run, it replays, its audit
passes, and an altered recorded intent makes the audit fail at exactly that position."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from analyzer.api import Analyzer
from analyzer.audit import INTENT_TOPIC, audit
from analyzer.replay import replay, state_at
from robots.backtest import backtest
from ticktape.codec import default_codec
from ticktape.events import Trade
from ticktape.tape.file import FileTape

REPO = Path(__file__).resolve().parents[3]
TS0 = 1_700_000_000_000_000_000


def wave(n: int) -> list[Trade]:
    """A deterministic price path with enough EMA crosses to trade."""
    return [Trade("sim", "BTCUSDT", TS0 + i * 100_000_000, TS0 + i * 100_000_000,
                  round(30_000 + 200 * math.sin(i / 300) + (i * 7919 % 13) - 6, 2), 0.01, "BUY", str(i))
            for i in range(n)]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("runs")
    with FileTape(root / "md") as md:
        md.append("md.sim.trade", wave(6000))
    res = backtest("ema_cross", tape=f"file:{root / 'md'}", out_tape=f"file:{root / 'out'}", run_id="run1",
                   params={"fast": 10, "slow": 50})
    assert res.summary["intents"] > 20  # the fixture must exercise the audit
    return {"root": root, "summary": res.summary, "out": f"file:{root / 'out'}", "md": f"file:{root / 'md'}"}


def test_backtest_loads_and_metrics_agree_with_the_run(run: dict[str, object], tmp_path: Path) -> None:
    a = Analyzer(str(tmp_path / "a.duckdb"), exact=True)
    a.load(str(run["out"]))
    a.load(str(run["md"]))
    summary: dict[str, object] = run["summary"]  # type: ignore[assignment]
    runs = a.runs()
    assert runs["run"].tolist() == ["run1"] and runs["intents"].tolist() == [summary["intents"]]
    assert a.sql("SELECT count(*) AS n FROM place_order WHERE _key = 'run1'")["n"][0] == summary["intents"]
    pnl = a.pnl_summary("run1").iloc[0]
    assert pnl["fills"] == summary["fills"]
    # the exact DECIMAL views reproduce the runner's exact ledger
    assert pnl["total_pnl"] == Decimal(str(summary["pnl_exact"]))
    assert pnl["fees"] == Decimal(str(summary["fees_exact"]))
    assert a.run_stats("run1")["total_pnl"][0] == Decimal(str(summary["pnl_exact"]))
    a.close()


def test_audit_passes_and_replay_stores_state_and_intents(run: dict[str, object], tmp_path: Path) -> None:
    with FileTape(Path(str(run["out"])[5:])) as out:
        result = audit(out, "run1")
        assert result.identical and result.recomputed == result.recorded == run["summary"]["intents"]  # type: ignore[index]
        assert result.intents_sha256 == run["summary"]["intents_sha256"]  # type: ignore[index]
        a = Analyzer(str(tmp_path / "r.duckdb"))
        s = replay(out, "run1", a.con)
        assert s.intents == result.recorded and s.intents_sha256 == result.intents_sha256
        recorded = [r.event.client_order_id for r in out.read(INTENT_TOPIC) if r.key == "run1"]
    replayed = a.sql("SELECT client_order_id, input_offset, k FROM replay_intents ORDER BY input_offset, k")
    assert replayed["client_order_id"].tolist() == recorded
    # client order ids carry the step number: the intents are keyed by the right input position
    assert all(c == f"ema_cross-{o}-{k}" for c, o, k in replayed.values.tolist())
    first = int(replayed["input_offset"][0])
    state = state_at(a.con, "run1", first)
    before = state_at(a.con, "run1", first - 1)
    assert state["pending"] and not before["pending"]  # the order in flight appeared at that step
    assert state_at(a.con, "run1", -1)["seen"] == 0
    # replaying again replaces, not duplicates; --every N keeps every N-th step and the intent steps only
    changed = a.sql("SELECT count(*) AS n FROM robot_state")["n"][0]
    with FileTape(Path(str(run["out"])[5:])) as out:
        again = replay(out, "run1", a.con, every=1000)
    assert a.sql("SELECT count(*) AS n FROM replay_intents")["n"][0] == len(recorded)
    kept = a.sql("SELECT input_offset, intents FROM robot_state WHERE input_offset >= 0")
    periodic = [o for o in kept["input_offset"] if o % 1000 == 0]
    assert len(periodic) == (again.steps - 1) // 1000 + 1
    assert set(kept["input_offset"]) == set(periodic) | set(replayed["input_offset"])
    assert len(kept) + 1 == again.states < changed
    a.close()


def _tampered_copy(src: str, dst: Path, index: int) -> tuple[str, str]:
    """Copy a run's output tape, doubling the size of intent #index; return (altered, original) JSON."""
    codec = default_codec()
    with FileTape(Path(src[5:])) as a, FileTape(dst) as b:
        for topic in ("runs", "orders.event", INTENT_TOPIC):
            recs = list(a.read(topic))
            events = [r.event for r in recs]
            if topic == INTENT_TOPIC:
                original = events[index]
                events[index] = original._replace(size=original.size * 2)
                altered = events[index]
            b.append(topic, events, keys=[r.key for r in recs])
    assert codec.encode(altered) != codec.encode(original)
    return json.dumps(altered._asdict()), json.dumps(original._asdict())


def test_an_altered_recorded_intent_fails_the_audit_at_exactly_that_position(run: dict[str, object],
                                                                            tmp_path: Path) -> None:
    index = 7
    _tampered_copy(str(run["out"]), tmp_path / "bad", index)
    with FileTape(tmp_path / "bad") as bad:
        result = audit(bad, "run1")
        recorded = [r.event for r in bad.read(INTENT_TOPIC)]
    assert not result.identical and result.divergence is not None
    d = result.divergence
    assert d.index == index
    assert d.expected == recorded[index] and d.actual == recorded[index]._replace(size=recorded[index].size / 2)
    assert d.input_offset == int(recorded[index].client_order_id.split("-")[-2])
    assert d.recorded_offset == index
    assert d.state_before is not None and json.loads(d.state_before)["seen"] > 0

    ok = subprocess.run([sys.executable, "-m", "ticktape", "audit", "--tape", str(run["out"]), "--run", "run1"],
                        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith("audit ok: run run1") and len(ok.stdout.splitlines()) == 1
    fail = subprocess.run([sys.executable, "-m", "ticktape", "audit", "--tape", f"file:{tmp_path / 'bad'}",
                           "--run", "run1"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert fail.returncode == 1
    assert f"first divergence at intent #{index}, input position {d.input_offset}" in fail.stdout
    assert "expected (recorded)" in fail.stdout and "robot state before" in fail.stdout
    unknown = subprocess.run([sys.executable, "-m", "ticktape", "audit", "--tape", str(run["out"]), "--run", "nope"],
                             capture_output=True, text=True, cwd=REPO, timeout=120)
    assert unknown.returncode == 2 and "no run 'nope'" in unknown.stderr  # an error, not a divergence


def test_a_missing_recorded_intent_is_a_divergence(run: dict[str, object], tmp_path: Path) -> None:
    with FileTape(Path(str(run["out"])[5:])) as a, FileTape(tmp_path / "short") as b:
        for topic in ("runs", INTENT_TOPIC):
            recs = list(a.read(topic))
            if topic == INTENT_TOPIC:
                recs = recs[:-1]
            b.append(topic, [r.event for r in recs], keys=[r.key for r in recs])
        total = run["summary"]["intents"]  # type: ignore[index]
        result = audit(b, "run1")
    assert result.divergence is not None and result.divergence.index == total - 1
    assert result.divergence.expected is None and result.divergence.actual is not None


def test_report_is_self_contained_html_with_the_plots(run: dict[str, object], tmp_path: Path) -> None:
    db = tmp_path / "rep.duckdb"
    a = Analyzer(str(db))
    a.load(str(run["out"]))
    a.load(str(run["md"]))
    a.close()
    out = tmp_path / "report.html"
    r = subprocess.run([sys.executable, "-m", "ticktape", "report", "run1", "--db", str(db), "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    html = out.read_text()
    summary: dict[str, object] = run["summary"]  # type: ignore[assignment]
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    for title in ("Equity (total PnL) and drawdown", "Position", "BTCUSDT: price with fills", "PnL by instrument"):
        assert title in html
    assert html.count("<svg") == 4
    fills = summary["fills"]
    assert html.count('class="marker-buy"') + html.count('class="marker-sell"') == fills
    assert str(Decimal(str(summary["pnl_exact"])).normalize()) in html  # the headline total PnL, exact
    assert str(summary["intents_sha256"]) in html
    # nothing to fetch: no scripts, no external resources (the only URL is the SVG namespace)
    assert "<script" not in html and "src=" not in html and "<link" not in html
    assert set(re_urls(html)) == {"http://www.w3.org/2000/svg"}
    missing = subprocess.run([sys.executable, "-m", "ticktape", "report", "nope", "--db", str(db)],
                             capture_output=True, text=True, cwd=REPO, timeout=120)
    assert missing.returncode != 0 and "no run 'nope'" in missing.stderr


def re_urls(text: str) -> list[str]:
    import re

    return re.findall(r"https?://[^\s\"'<>]+", text)
