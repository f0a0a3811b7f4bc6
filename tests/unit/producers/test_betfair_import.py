"""`ticktape import betfair`: files onto a real file tape, compressed inputs, dead letters, re-imports."""

from __future__ import annotations

import bz2
import gzip
import io
import shutil
import tarfile
from pathlib import Path

import pytest
from betfair_helpers import FIXTURES, REAL_MARKETS, SHARED, ladder, reference_books
from click.testing import CliRunner

from producers.betfair.historical import import_file
from producers.betfair.parse import MARKET_TOPIC, ORDERS_TOPIC
from producers.common import IMPORTS_TOPIC
from ticktape.cli import _register_plugins, cli
from ticktape.events import DeadLetter, Event, MarketBook, MarketDefinition
from ticktape.tape import Tape, open_tape
from ticktape.timeutil import VirtualClock


def _events(tape: Tape, topic: str) -> list[Event]:
    return [r.event for p in range(tape.partitions(topic)) for r in tape.read(topic, p)]


@pytest.fixture
def tape(tmp_path: Path) -> Tape:
    return open_tape(f"file:{tmp_path / 'tape'}")


def test_import_reads_back_the_decoded_events(tape: Tape) -> None:
    summary = import_file(tape, FIXTURES / "market.stream", clock=VirtualClock(1))
    events = _events(tape, MARKET_TOPIC)
    assert summary.events == {MARKET_TOPIC: 9} and summary.dead_letters == 0
    assert [type(e).__name__ for e in events].count("MarketBook") == 6
    assert [type(e).__name__ for e in events].count("MarketDefinition") == 3
    first_def, first_book = events[0], events[1]
    assert isinstance(first_def, MarketDefinition) and isinstance(first_book, MarketBook)  # definition first
    assert ladder(first_book.runners[0].available_to_back) == [(2.02, 3), (2.0, 10), (1.98, 5)]
    assert all(r.key == "1.100" for r in tape.read(MARKET_TOPIC))  # keyed by market id


def test_importing_the_same_file_twice_adds_nothing(tape: Tape, tmp_path: Path) -> None:
    first = import_file(tape, FIXTURES / "market.stream", clock=VirtualClock(1))
    copy = tmp_path / "renamed.stream"
    shutil.copy(FIXTURES / "market.stream", copy)
    again = import_file(tape, copy, clock=VirtualClock(2))  # same bytes, other name: same input
    assert not first.skipped and again.skipped
    assert sum(tape.end_offsets(MARKET_TOPIC).values()) == 9
    assert len(_events(tape, IMPORTS_TOPIC)) == 1
    forced = import_file(tape, copy, clock=VirtualClock(3), force=True)
    assert not forced.skipped and sum(tape.end_offsets(MARKET_TOPIC).values()) == 18


def test_bad_lines_go_to_the_dead_letter_topic_and_the_import_continues(tape: Tape) -> None:
    summary = import_file(tape, FIXTURES / "bad.stream", clock=VirtualClock(7))
    assert summary.dead_letters == 3
    dead = _events(tape, "dlq.betfair")
    assert all(isinstance(d, DeadLetter) for d in dead)
    assert [d.position for d in dead] == ["line 2", "line 3", "line 4"]  # type: ignore[union-attr]
    assert dead[0].raw == b"this is not json"  # type: ignore[union-attr]
    assert dead[0].source.endswith("bad.stream") and "not JSON" in dead[0].error  # type: ignore[union-attr]
    assert "publish time" in dead[1].error and "KeyError" in dead[2].error  # type: ignore[union-attr]
    books = [e for e in _events(tape, MARKET_TOPIC) if isinstance(e, MarketBook)]
    assert len(books) == 2  # the good lines before and after the bad ones
    assert ladder(books[-1].runners[0].available_to_back) == [(1.55, 2), (1.5, 10)]


def _compressed_variants(tmp_path: Path) -> list[Path]:
    data = (FIXTURES / "market.stream").read_bytes()
    gz = tmp_path / "1.100.gz"
    gz.write_bytes(gzip.compress(data))
    bz = tmp_path / "1.100.bz2"
    bz.write_bytes(bz2.compress(data))
    tar = tmp_path / "archive.tar"
    with tarfile.open(tar, "w") as t:
        for name, payload in (("PRO/2023/Nov/14/1.100.bz2", bz2.compress(data)),
                              ("PRO/2023/Nov/14/orders.bz2", bz2.compress((FIXTURES / "orders.stream").read_bytes()))):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            t.addfile(info, io.BytesIO(payload))
    return [gz, bz, tar]


def test_gzip_bzip2_and_tar_archives_import_like_the_plain_file(tmp_path: Path) -> None:
    plain = open_tape(f"file:{tmp_path / 'plain'}")
    import_file(plain, FIXTURES / "market.stream", clock=VirtualClock(1))
    expected = _events(plain, MARKET_TOPIC)
    for i, path in enumerate(_compressed_variants(tmp_path)):
        tape = open_tape(f"file:{tmp_path / f't{i}'}")
        summary = import_file(tape, path, clock=VirtualClock(1))
        assert _events(tape, MARKET_TOPIC) == expected, path.name
        if path.suffix == ".tar":
            assert summary.events[ORDERS_TOPIC] == 6  # the second member, with its own decoder


def test_catalogue_next_to_the_file_names_runners(tape: Tape, tmp_path: Path) -> None:
    stream = tmp_path / "1.100"
    shutil.copy(FIXTURES / "market.stream", stream)
    (tmp_path / "1.100.catalogue.json").write_text(
        '{"marketId":"1.100","marketName":"R1 1000m","runners":[{"selectionId":11,"runnerName":"1. Fast",'
        '"handicap":0.0,"sortPriority":1},{"selectionId":22,"runnerName":"2. Slow","handicap":0.0,"sortPriority":2}]}')
    import_file(tape, stream, clock=VirtualClock(1))
    first = _events(tape, MARKET_TOPIC)[0]
    assert isinstance(first, MarketDefinition)
    assert [r.name for r in first.runners] == ["1. Fast", "2. Slow"]


def test_cli_import_strict_exit_code_and_summary(tmp_path: Path) -> None:
    _register_plugins()
    runner = CliRunner()
    uri = f"file:{tmp_path / 'tape'}"
    ok = runner.invoke(cli, ["--tape", uri, "import", "betfair", str(FIXTURES / "market.stream")])
    assert ok.exit_code == 0, ok.output
    assert "9 events" in ok.output and "0 dead letters" in ok.output
    lax = runner.invoke(cli, ["--tape", uri, "import", "betfair", str(FIXTURES / "bad.stream")])
    assert lax.exit_code == 0 and "3 dead letters" in lax.output and "line 2" in lax.output
    strict = runner.invoke(cli, ["--tape", uri, "import", "betfair", "--strict", "--force",
                                 str(FIXTURES / "bad.stream")])
    assert strict.exit_code == 1
    again = runner.invoke(cli, ["--tape", uri, "import", "betfair", str(FIXTURES / "market.stream")])
    assert again.exit_code == 0 and "skipped" in again.output


needs_shared = pytest.mark.shared_data(*(f"betfair/{m}" for m in REAL_MARKETS))


@needs_shared
@pytest.mark.usefixtures("runner_impl")
@pytest.mark.parametrize("market", REAL_MARKETS)
def test_real_market_matches_betfairlightweight_update_by_update(market: str, tmp_path: Path) -> None:
    """The issue's check: every update, read back from the tape, equals betfairlightweight's book."""
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    import_file(tape, SHARED / market, clock=VirtualClock(1))
    tape.close()
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    ours = [e for e in _events(tape, MARKET_TOPIC) if isinstance(e, MarketBook)]
    theirs = reference_books(SHARED / market)
    assert len(ours) == len(theirs) > 100
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        where = f"{market} update {i}"
        assert a.market_id == b.market_id and a.ts_event == b.publish_time_epoch * 1_000_000, where
        assert (a.status, a.in_play, a.total_matched) == (b.status, b.inplay, b.total_matched), where
        assert len(a.runners) == len(b.runners), where
        for ra, rb in zip(a.runners, b.runners, strict=True):
            assert (ra.selection_id, ra.status) == (rb.selection_id, rb.status), where
            assert (ra.last_price_traded, ra.total_matched) == (rb.last_price_traded, rb.total_matched), where
            assert ladder(ra.available_to_back, 3) == ladder(rb.ex.available_to_back, 3), where
            assert ladder(ra.available_to_lay, 3) == ladder(rb.ex.available_to_lay, 3), where
            # beyond the check: the full ladders and traded volume are the same too
            assert ladder(ra.available_to_back) == ladder(rb.ex.available_to_back), where
            assert ladder(ra.available_to_lay) == ladder(rb.ex.available_to_lay), where
            assert ladder(ra.traded_volume) == ladder(rb.ex.traded_volume), where
    assert ours[-1].status == "CLOSED" and any(b.in_play for b in ours) is any(b.inplay for b in theirs)


@needs_shared
def test_real_order_stream_files_import(tape: Tape) -> None:
    s1 = import_file(tape, SHARED / "ORDER-1.177596575", clock=VirtualClock(1))
    s2 = import_file(tape, SHARED / "streaming_ocm_FULL_IMAGE.json", clock=VirtualClock(1))
    assert s1.dead_letters == s2.dead_letters == 0
    by_order: dict[tuple[str, str | None], list[str]] = {}
    for e in _events(tape, ORDERS_TOPIC):
        by_order.setdefault((e.instrument, e.venue_order_id), []).append(type(e).__name__)  # type: ignore[union-attr]
    # ORDER-1.177596575: placed then cancelled (sc 0.8); a second order placed, then lapsed when the
    # stream closes the market; the full image: five matched orders (one bet id on two runners).
    assert by_order.pop(("1.177596575:38077860", "221073337451")) == ["OrderAccepted", "OrderCancelled"]
    assert by_order.pop(("1.177596575:37711602", "221073362321")) == ["OrderAccepted", "OrderCancelled"]
    assert len(by_order) == 5 and all(kinds == ["OrderAccepted", "OrderFilled"] for kinds in by_order.values())


@needs_shared
def test_real_catalogue_file_imports_as_a_definition(tape: Tape) -> None:
    import_file(tape, SHARED / "1.197931750.catalogue.json", clock=VirtualClock(5))
    (d,) = _events(tape, MARKET_TOPIC)
    assert isinstance(d, MarketDefinition) and d.status == "CATALOGUE" and d.ts_event == 5
    assert (d.market_name, d.venue, d.event_type_id) == ("OR 280m", "Sheffield", "4339")
    assert d.runners[0].name == "1. Paradise Mission"


@needs_shared
@pytest.mark.usefixtures("runner_impl")
def test_two_real_markets_interleaved_in_one_stream_match_betfairlightweight(tmp_path: Path) -> None:
    """Like a live stream carrying several markets: lines of both files merged by publish time."""
    import orjson

    lines = [line for m in REAL_MARKETS for line in (SHARED / m).read_bytes().splitlines()]
    lines.sort(key=lambda line: orjson.loads(line)["pt"])  # stable: ties keep file order
    merged = tmp_path / "merged.stream"
    merged.write_bytes(b"\n".join(lines) + b"\n")
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    import_file(tape, merged, clock=VirtualClock(1))
    ours = [e for e in _events(tape, MARKET_TOPIC) if isinstance(e, MarketBook)]
    theirs = reference_books(merged)
    assert len(ours) == len(theirs) == 332
    assert {b.market_id for b in ours[:2]} == set(REAL_MARKETS)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert (a.market_id, a.status, a.in_play, a.total_matched) == (b.market_id, b.status, b.inplay,
                                                                       b.total_matched), i
        for ra, rb in zip(a.runners, b.runners, strict=True):
            assert (ra.status, ra.last_price_traded, ra.total_matched) == (rb.status, rb.last_price_traded,
                                                                           rb.total_matched), i
            assert ladder(ra.available_to_back) == ladder(rb.ex.available_to_back), i
            assert ladder(ra.available_to_lay) == ladder(rb.ex.available_to_lay), i
            assert ladder(ra.traded_volume) == ladder(rb.ex.traded_volume), i


def test_progress_reports_bytes_read_up_to_the_file_size(tmp_path: Path) -> None:
    big = tmp_path / "big.stream"
    lines = (FIXTURES / "market.stream").read_bytes().splitlines()
    # 5000 copies of the second line (a delta) after the first: enough lines for intermediate reports
    big.write_bytes(b"\n".join([lines[0]] + [lines[1]] * 5000) + b"\n")
    for path in [big, *_compressed_variants(tmp_path)]:
        seen: list[int] = []
        import_file(open_tape(f"file:{tmp_path / ('t-' + path.name)}"), path, clock=VirtualClock(1),
                    progress=seen.append)
        assert seen and seen == sorted(seen) and seen[-1] == path.stat().st_size, path.name
        if path == big:
            assert len(seen) > 1  # intermediate reports, not only the final one


def test_a_directory_imports_every_stream_file_and_uses_catalogues_for_names(tmp_path: Path) -> None:
    tree = tmp_path / "PRO" / "2023" / "Nov" / "14" / "31"
    tree.mkdir(parents=True)
    shutil.copy(FIXTURES / "market.stream", tree / "1.100")
    (tree / "1.100.catalogue.json").write_text(
        '{"marketId":"1.100","marketName":"R1","runners":[{"selectionId":11,"runnerName":"1. Fast"}]}')
    shutil.copy(FIXTURES / "orders.stream", tree / "orders")
    _register_plugins()
    uri = f"file:{tmp_path / 'tape'}"
    result = CliRunner().invoke(cli, ["--tape", uri, "import", "betfair", str(tmp_path / "PRO")])
    assert result.exit_code == 0, result.output
    # one import of the two stream files merged by publish time: 9 market events + 6 order events + 1 race
    assert "2 files merged by publish time" in result.output and ": 16 events" in result.output, result.output
    assert "catalogue.json" not in result.output  # read for names, not imported on its own
    separate = CliRunner().invoke(cli, ["--tape", f"file:{tmp_path / 'tape2'}", "import", "betfair", "--no-merge",
                                        str(tmp_path / "PRO")])
    assert "1.100: 9 events" in separate.output and "orders: 7 events" in separate.output
    tape = open_tape(uri)
    first = _events(tape, MARKET_TOPIC)[0]
    assert isinstance(first, MarketDefinition) and first.runners[0].name == "1. Fast"


@needs_shared
def test_the_pure_python_import_in_another_process_writes_the_same_records(tmp_path: Path) -> None:
    """`TICKTAPE_NO_CEXT=1` (no C anywhere: Python ladders, codec, tape encoder) in a second process
    writes the same records, byte for byte, as this process's C path."""
    import os
    import subprocess
    import sys

    market = SHARED / REAL_MARKETS[0]
    code = ("import sys; from producers.betfair.historical import import_file; from ticktape.tape import open_tape;"
            "from ticktape.timeutil import VirtualClock; t = open_tape('file:' + sys.argv[1]);"
            "import_file(t, sys.argv[2], clock=VirtualClock(1)); t.close()")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "pure"), str(market)], check=True,
                   env={**os.environ, "TICKTAPE_NO_CEXT": "1"})
    fast = open_tape(f"file:{tmp_path / 'fast'}")
    import_file(fast, market, clock=VirtualClock(1))
    pure = open_tape(f"file:{tmp_path / 'pure'}")
    from ticktape.codec import default_codec

    codec = default_codec()
    a = [(r.offset, r.key, codec.encode(r.event)) for r in fast.read(MARKET_TOPIC)]
    b = [(r.offset, r.key, codec.encode(r.event)) for r in pure.read(MARKET_TOPIC)]
    assert len(a) > 160 and a == b
