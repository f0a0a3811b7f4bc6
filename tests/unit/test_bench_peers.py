"""`python -m benchmarks peers`: its inputs are deterministic and equal across engines, its report
section is replaced in place, and it refuses to compare engines whose decisions differ."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from benchmarks.peers import compare, data, report

REPO = Path(__file__).resolve().parents[2]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_trades_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        t = data.make_trades(5_000, seed)
        data.write_parquet(t, tmp_path / f"{name}.parquet")
        data.write_binance_csv(t, tmp_path / f"{name}.csv")
    assert digest(tmp_path / "a.parquet") == digest(tmp_path / "b.parquet")
    assert digest(tmp_path / "a.csv") == digest(tmp_path / "b.csv")
    assert digest(tmp_path / "a.parquet") != digest(tmp_path / "c.parquet")


def test_tape_imported_by_ticktape_equals_the_parquet(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    table = data.make_trades(3_000, 11)
    data.write_parquet(table, tmp_path / "t.parquet")
    data.write_binance_csv(table, tmp_path / "BTCUSDT-trades.csv")
    data.import_into_tape(tmp_path / "BTCUSDT-trades.csv", f"file:{tmp_path / 'tape'}")
    assert data.check_tape_matches(f"file:{tmp_path / 'tape'}", pq.read_table(tmp_path / "t.parquet")) == 3_000
    # the check can fail: one trade's price moved by a cent is found
    prices = table.column("price").to_pylist()
    prices[1234] += 0.01
    import pyarrow as pa

    other = table.set_column(table.schema.get_field_index("price"), "price", pa.array(prices))
    with pytest.raises(data.PeerDataError, match="trade 1235 differs"):
        data.check_tape_matches(f"file:{tmp_path / 'tape'}", other)


def test_betfair_set_ids_unique_markets_interleave_and_deterministic(tmp_path: Path) -> None:
    src = data.shared_data() / "betfair"
    if not (src / data.BETFAIR_MARKETS[0]).exists():
        pytest.skip(f"no recorded Betfair markets at {src}")
    a = data.make_betfair_set(src, 12, tmp_path / "a")
    b = data.make_betfair_set(src, 12, tmp_path / "b")
    assert digest(a.stream) == digest(b.stream)
    assert len(set(a.market_ids)) == 12 == len(a.files)
    seen_ids = set()
    order = []  # market of each line of the interleaved stream, in stream order
    pts = []
    for line in a.stream.read_bytes().splitlines():
        msg = orjson.loads(line)
        pts.append(msg["pt"])
        ids = {mc["id"] for mc in msg.get("mc", [])}
        assert ids <= set(a.market_ids), ids - set(a.market_ids)  # no source id survived
        seen_ids |= ids
        order.extend(sorted(ids))
    assert seen_ids == set(a.market_ids)
    assert pts == sorted(pts)
    # interleaved: a later market's update comes before an earlier market's last one
    last = {m: i for i, m in enumerate(order)}
    first = {m: order.index(m) for m in a.market_ids}
    overlaps = sum(1 for m in a.market_ids for n in a.market_ids
                   if m != n and first[m] < first[n] < last[m])
    assert overlaps > len(a.market_ids)
    # times shifted per copy: copy 1 of a source market starts SHIFT_MS after copy 0, marketTime too
    f0 = [orjson.loads(x) for x in a.files[0].read_bytes().splitlines()]
    f2 = [orjson.loads(x) for x in a.files[2].read_bytes().splitlines()]
    assert f2[0]["pt"] - f0[0]["pt"] == data.SHIFT_MS
    t0 = f0[0]["mc"][0]["marketDefinition"]["marketTime"]
    t2 = f2[0]["mc"][0]["marketDefinition"]["marketTime"]
    assert (t0, t2) == ("2022-04-19T18:26:00.000Z", "2022-04-19T18:26:37.000Z")


def test_section_replaced_between_markers_and_appended_once() -> None:
    text = "# Benchmarks\n\n## Codec\nfast\n"
    once = report.replace_section(text, "## Peers\nold figures")
    assert once.startswith(text.rstrip("\n")) and "old figures" in once
    twice = report.replace_section(once + "\n## Later\nkept\n", "## Peers\nnew figures")
    assert "old figures" not in twice and "new figures" in twice
    assert twice.count(report.BEGIN) == 1 == twice.count(report.END)
    assert twice.endswith("## Later\nkept\n") and twice.startswith("# Benchmarks\n\n## Codec\nfast\n")
    with pytest.raises(ValueError, match="markers are broken"):
        report.replace_section("x\n" + report.END + "\n" + report.BEGIN, "y")


def test_readme_check_flags_figures_more_than_20_percent_off() -> None:
    figures = {"ema": {"ticktape": {"run_eps": 1_000_000}}}
    ok = "ema_cross runs at <!-- peers:ema.ticktape.run_eps --> 1,100,000 events/s"
    off = "ema_cross runs at <!-- peers:ema.ticktape.run_eps --> 1,300,000 events/s"
    unknown = "<!-- peers:ema.nautilus.run_eps --> 5"
    assert report.check_readme(ok, figures) == []
    assert "more than 20% apart" in report.check_readme(off, figures)[0]
    assert "no such figure" in report.check_readme(unknown, figures)[0]


def bet(**kw: object) -> compare.Bet:
    raw = {"market_id": "1.9", "selection_id": 7, "price": 2.5, "size": 2.0, "matched": 2.0, **kw}
    return compare.Bet.of(raw)


@pytest.mark.parametrize("field, value", [("selection_id", 8), ("price", 2.52), ("size", 4.0), ("matched", 1.0),
                                          ("market_id", "1.8")])
def test_differing_bets_are_refused(field: str, value: object) -> None:
    diffs = compare.check_bets([bet()], [bet(**{field: value})])
    assert diffs
    with pytest.raises(compare.DecisionMismatch, match="engines disagree"):
        compare.require_equal("bets", diffs)


def test_equal_bets_and_orders_pass_differing_counts_refused() -> None:
    assert compare.check_bets([bet(), bet(market_id="1.8")], [bet(market_id="1.8"), bet()]) == []
    compare.require_equal("bets", [])
    assert compare.check_orders({"ticktape": (5, 5), "nautilus": (5, 5)}) == []
    with pytest.raises(compare.DecisionMismatch, match="backtrader: 5 buys / 4 sells"):
        compare.require_equal("orders", compare.check_orders({"ticktape": (5, 5), "backtrader": (5, 4)}))


@pytest.mark.skipif(os.environ.get("TICKTAPE_BENCH_PEERS") != "1",
                    reason="the full peer run needs the peers' venvs and minutes: set TICKTAPE_BENCH_PEERS=1")
def test_quick_peer_run_agrees_across_engines(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "peers", "--quick", "--work", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Same decisions in all three" in proc.stdout and "fill prices differing" in proc.stdout
