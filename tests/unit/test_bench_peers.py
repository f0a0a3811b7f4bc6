"""`python -m benchmarks peers`: its inputs are deterministic and equal across engines, its report
section is replaced in place, and it refuses to compare engines whose decisions differ."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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


# ---------------------------------------------------------------- the pipeline pieces

def test_pipeline_rows_met_missed_and_no_target_on_given_figures() -> None:
    from benchmarks.peers import pipeline

    results: dict[str, dict[str, Any]] = {
        "codec": {"encode_per_s": 300_000, "decode_per_s": 299_999},  # at the target is met, below it missed
        "audit": {"cpu_ratio_to_backtest": 2.0},  # "< 2": equal is missed
        "load": {"cached_events_per_cpu_s": 1_250_000, "blocks_events_per_cpu_s": 400_000},
    }
    got = {r["piece"]: r for r in pipeline.rows(results)}
    assert [r["status"] for r in pipeline.rows(results)] == ["met", "missed", "met", "no target", "missed"]
    encode = got["codec: `Codec.encode` of a Trade"]
    assert encode == {"piece": "codec: `Codec.encode` of a Trade", "figure": "300,000", "unit": "events/s",
                      "target": "≥ 300,000", "status": "met"}
    audit = got["`ticktape audit` of an `ema_cross` run, CPU vs the backtest"]
    assert (audit["figure"], audit["target"], audit["status"]) == ("2.00", "< 2", "missed")
    assert pipeline.rows({"audit": {"cpu_ratio_to_backtest": 1.1}})[0]["status"] == "met"
    # a piece that ran but lacks a figure is a failed row, not a KeyError
    assert pipeline.rows({"audit": {"other": 1}})[0]["status"] == "failed: no figure cpu_ratio_to_backtest"
    table = pipeline.markdown(results, {"date": "2026-12-05 20:00 UTC", "quick": True, "load": {"min": 1, "max": 2}})
    assert table.startswith("### Pipeline pieces\n")
    assert "| piece | figure | unit | target | met/missed |" in table
    assert "| codec: `Codec.decode` of a Trade | 299,999 | events/s | ≥ 300,000 | missed |" in table
    assert "| `ticktape load`, first load (block reader) | 400,000 | events/CPU-s | — | no target |" in table


def test_targets_compare_in_their_direction() -> None:
    from benchmarks.peers.pipeline import at_least, below

    assert at_least(100).met(100) and at_least(100).met(101) and not at_least(100).met(99.9)
    assert below(10).met(9.99) and not below(10).met(10) and not below(10).met(11)
    assert (at_least(1_000_000).text(), below(10).text()) == ("≥ 1,000,000", "< 10")


def test_a_failing_piece_is_a_failed_row_and_the_others_still_run() -> None:
    from benchmarks.peers import pipeline

    calls: list[list[str]] = []

    def measure(cmd: list[str]) -> dict[str, object]:
        calls.append(cmd)
        piece = cmd[cmd.index("benchmarks.peers.pipeline") + 1]
        if piece == "codec":
            raise RuntimeError("python -m benchmarks.peers.pipeline codec ... failed (1):\nTraceback ...\n"
                               "MemoryError: out of memory in encode")
        if piece == "file_tape":
            return {"wall_s": 1.0, "cpu_s": 1.0, "maxrss_mb": 50.0, "stdout": "not json\n"}
        return {"wall_s": 1.0, "cpu_s": 1.0, "maxrss_mb": 50.0,
                "stdout": '{"updates_per_s": 25000, "cpu_ratio_to_backtest": 1.2}\n'}

    def broker() -> str:
        raise RuntimeError("scripts/kafka start failed (1): broker did not come up")

    res = pipeline.run_pieces(measure, quick=True, kafka=broker, skip={"binance_import": "no reason"})
    assert res["codec"] == {"error": "MemoryError: out of memory in encode"}
    assert "error" in res["file_tape"]
    assert res["kafka"] == {"error": "scripts/kafka start failed (1): broker did not come up"}
    assert res["binance_import"] == {"skipped": "no reason"}
    assert res["betfair_import"]["updates_per_s"] == 25000 and res["betfair_import"]["process"]["wall_s"] == 1.0
    assert res["audit"]["cpu_ratio_to_backtest"] == 1.2
    assert all("--quick" in c for c in calls) and not any("--kafka" in c for c in calls)
    status = {r["piece"]: r["status"] for r in pipeline.rows(res)}
    assert status["codec: `Codec.encode` of a Trade"] == "failed: MemoryError: out of memory in encode"
    assert status["Kafka produce, kafka-python"].startswith("failed: scripts/kafka start failed")
    assert status["`ticktape import binance` klines"] == "skipped: no reason"
    assert status["`ticktape import betfair`, end to end in its process"] == "met"
    assert status["`ticktape audit` of an `ema_cross` run, CPU vs the backtest"] == "met"
    # the whole report renders with them (a --pipeline-only result: no engine figures)
    from benchmarks.peers import run

    text = run.markdown({"date": "d", "machine": run.machine(), "params": {}, "figures": {"pipeline": res},
                         "pipeline_measured": {"date": "d", "quick": True, "load": {"min": 0.5, "max": 1.5}}})
    assert "`--pipeline-only`: the engines were not compared.\n\n### Pipeline pieces\n\n" in text
    assert "| codec: `Codec.encode` of a Trade | — | events/s | ≥ 300,000 | failed: MemoryError" in text


def test_kafka_piece_gets_the_broker_it_is_given() -> None:
    from benchmarks.peers import pipeline

    seen: list[list[str]] = []

    def measure(cmd: list[str]) -> dict[str, object]:
        seen.append(cmd)
        return {"wall_s": 1.0, "cpu_s": 1.0, "maxrss_mb": 50.0, "stdout": "{}\n"}

    pipeline.run_pieces(measure, quick=False, kafka=lambda: "127.0.0.1:9", pieces=("kafka", "codec"))
    assert seen[0][-2:] == ["--kafka", "127.0.0.1:9"] and "--quick" not in seen[0]
    assert "--kafka" not in seen[1]


def _positive_numbers(d: object) -> bool:
    if isinstance(d, dict):  # a file's size in whole MiB is 0 at a tiny size
        return all(_positive_numbers(v) for k, v in d.items() if k != "mb")
    return isinstance(d, int | float) and d > 0


@pytest.mark.parametrize("piece, sizes, keys", [
    ("codec", {"n": 2_000}, {"encode_per_s", "decode_per_s", "fastavro_encode_per_s", "fastavro_decode_per_s"}),
    ("file_tape", {"n": 5_000, "batch": 1_000},
     {"append_per_s", "bytes_per_event", "read_records_per_s", "read_events_per_s"}),
    ("binance_import", {"rows": 3_000, "repeat": 1}, {"klines", "aggTrades"}),
    ("betfair_import", {"copies": 1, "repeat": 1}, {"updates", "updates_per_s", "updates_per_cpu_s", "peak_rss_mb",
                                                    "tape_mb", "cli_updates_per_s", "cli_updates_per_cpu_s"}),
    ("load", {"n": 20_000, "segment_mb": 1}, {"blocks_events_per_cpu_s", "first_columnar_events_per_cpu_s",
                                              "cached_events_per_cpu_s", "peak_rss_mb"}),
    ("audit", {"n": 20_000}, {"events", "intents", "recomputed", "backtest_wall_s", "backtest_cpu_s", "audit_wall_s",
                              "audit_cpu_s", "cpu_ratio_to_backtest", "wall_ratio_to_backtest"}),
])
def test_each_piece_figures_at_a_tiny_size(piece: str, sizes: dict[str, int], keys: set[str]) -> None:
    from benchmarks.peers import pipeline

    if piece == "betfair_import":
        from benchmarks.bench_betfair_import import DATA, MARKETS

        if not (DATA / MARKETS[0]).exists():
            pytest.skip(f"no recorded Betfair markets at {DATA}")
    got = pipeline.measure_piece(piece, sizes)
    assert set(got) == keys
    assert _positive_numbers(got), got
    if piece == "binance_import":
        for kind in ("klines", "aggTrades"):
            assert set(got[kind]) == {"rows", "mb", "rows_per_s", "rows_per_cpu_s", "peak_rss_mb"}
            assert got[kind]["rows"] == 3_000
    if piece == "betfair_import":
        assert got["updates"] == 332  # the two recorded markets, 166 updates each
    if piece == "audit":
        assert got["events"] == 20_000 and got["recomputed"] == got["intents"] > 0
    # every row of the piece finds its figure
    assert all(r["figure"] != "—" for r in pipeline.rows({piece: got}))


def test_every_row_names_a_piece_and_the_quick_sizes_are_smaller() -> None:
    from benchmarks.peers import pipeline

    assert {r.piece for r in pipeline.ROWS} == set(pipeline.REGISTRY)
    for name, piece in pipeline.REGISTRY.items():
        assert set(piece.quick) == set(piece.full), name
        assert all(piece.quick[k] <= v for k, v in piece.full.items() if isinstance(v, int | float)), name
        # both sizes (and the broker, where needed) fit the module's figures() as keywords
        import importlib
        import inspect

        signature = inspect.signature(importlib.import_module(piece.module).figures)
        for sizes in (piece.full, piece.quick):
            signature.bind(**sizes, **({"broker": "127.0.0.1:9092"} if piece.needs_broker else {}))
    with pytest.raises(ValueError, match="needs a Kafka broker"):
        pipeline.measure_piece("kafka", pipeline.REGISTRY["kafka"].quick)


def test_readme_check_covers_pipeline_figures() -> None:
    figures = {"pipeline": {"betfair_import": {"updates_per_s": 30_000}, "codec": {"error": "boom"}}}
    readme = ("import at <!-- peers:pipeline.betfair_import.updates_per_s --> 29,000 updates/s, "
              "<!-- peers:pipeline.codec.encode_per_s --> 1,900,000")
    flags = report.check_readme(readme, figures)
    assert len(flags) == 1 and "pipeline.codec.encode_per_s" in flags[0] and "no such figure" in flags[0]
    assert "<!-- peers:pipeline.betfair_import.updates_per_s -->" in (REPO / "README.md").read_text()


def test_a_piece_that_hangs_is_killed_with_its_children_and_fails(tmp_path: Path) -> None:
    from benchmarks.peers import run

    pid_file = tmp_path / "grandchild.pid"
    script = ("import subprocess, sys, time\n"
              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
              "time.sleep(60)\n")
    with pytest.raises(RuntimeError, match="timed out after 2 s"):
        run.run_measured([sys.executable, "-c", script], timeout=2)
    grandchild = int(pid_file.read_text())
    import time

    for _ in range(50):  # killed with its group (a zombie until init reaps it counts as gone)
        try:
            if Path(f"/proc/{grandchild}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the piece's child {grandchild} outlived the timeout")
    assert run.run_measured([sys.executable, "-c", "print('ok')"], timeout=60)["stdout"] == "ok\n"


def test_without_java_the_kafka_rows_are_skipped_with_the_reason(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import bench_kafka
    from benchmarks.peers import pipeline, run

    monkeypatch.setattr(bench_kafka, "missing_prerequisite", lambda: "Java 17+ is not installed")
    monkeypatch.setattr(bench_kafka, "start_broker", lambda run_dir: pytest.fail("no broker may be started"))
    res = run.pipeline_section(True, None, [], pieces=("kafka",))
    assert res == {"kafka": {"skipped": "Java 17+ is not installed"}}
    assert "skipping the Kafka rows: Java 17+ is not installed" in capsys.readouterr().err
    assert {r["status"] for r in pipeline.rows(res)} == {"skipped: Java 17+ is not installed"}


def test_pipeline_only_keeps_the_last_engine_comparison_in_the_files(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from benchmarks.peers import run

    (tmp_path / "results").mkdir()
    results = tmp_path / "results" / "peers.json"
    results.write_text(run.RESULTS.read_text())  # the last real comparison
    (tmp_path / "BENCHMARKS.md").write_text("# Benchmarks\n\n" + report.BEGIN + "\nold\n" + report.END + "\nnotes\n")
    pieces = {"codec": {"encode_per_s": 2_000_000, "decode_per_s": 1_000_000}, "kafka": {"skipped": "no Java"}}
    monkeypatch.setattr(run, "REPO", tmp_path)
    monkeypatch.setattr(run, "RESULTS", results)
    monkeypatch.setattr(run, "pipeline_section", lambda *args, **kwargs: pieces)
    assert run.main(["--pipeline-only"]) == 0
    saved = json.loads(results.read_text())
    assert saved["figures"]["pipeline"] == pieces and "ema" in saved["figures"] and "betfair" in saved["figures"]
    assert saved["pipeline_measured"]["quick"] is False
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "**EMA 10/50 cross" in text and "### Pipeline pieces" in text and "old" not in text
    assert "| codec: `Codec.encode` of a Trade | 2,000,000 | events/s | ≥ 300,000 | met |" in text
    assert "skipped: no Java" in text and text.endswith(report.END + "\nnotes\n")
