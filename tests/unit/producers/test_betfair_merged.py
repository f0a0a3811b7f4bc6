"""`import betfair` of several stream files merged by publish time (producers.betfair.merged)."""

from __future__ import annotations

import heapq
import io
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from betfair_helpers import FIXTURES, REAL_MARKETS, SHARED
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from producers.betfair.historical import expand_inputs, import_file
from producers.betfair.merged import import_merged, line_pt, merged_lines
from ticktape.cli import _register_plugins, cli
from ticktape.tape.file import FileTape

needs_real = pytest.mark.shared_data(*(f"betfair/{m}" for m in REAL_MARKETS))


def _market_dir(tmp: Path, *extra: Path) -> Path:
    d = tmp / "markets"
    d.mkdir()
    for m in REAL_MARKETS:
        shutil.copy(SHARED / m, d / m)
    for f in extra:
        shutil.copy(f, d / f.name)
    return d


def _events(tape: FileTape, topic: str = "md.betfair.market") -> list[object]:
    return list(tape.read_events(topic))


def test_line_pt() -> None:
    assert line_pt(b'{"op":"mcm","clk":"AB","pt":1650392700473,"mc":[]}', 7) == 1650392700473
    assert line_pt(b'{"op":"mcm","mc":[]}', 7) == 7  # no pt: the stream's last one
    assert line_pt(b'{"op":"mcm","pt":"x"}', 7) == 7


@needs_real
def _timed(k: int, lines: list[bytes]) -> Iterator[tuple[int, int, int, bytes]]:
    """The merge's first form, the reference: (pt, file, line number, line), a line without pt keeps the last."""
    pt = 0
    for lineno, line in enumerate(lines, 1):
        pt = line_pt(line, pt)
        yield pt, k, lineno, line


_LINE = st.one_of(st.integers(0, 5).map(lambda pt: b'{"op":"mcm","pt":%d,"mc":[]}\n' % pt),
                  st.just(b'{"op":"mcm","mc":[]}\n'), st.just(b"\n"), st.just(b"  \t\n"),
                  st.just(b'{"op":"mcm","pt":3}'))  # no newline: joins the next (the last line of a file)


@given(st.lists(st.lists(_LINE, max_size=8), max_size=5))
def test_merged_lines_is_heapq_merge_of_the_timed_lines(files: list[list[bytes]]) -> None:
    """Same order as `heapq.merge` of each file's (pt, index, line number, line), pts out of order
    within a file, lines without pt and blank lines included."""
    data = [b"".join(f) for f in files]
    expected = [(k, n, line) for _, k, n, line in heapq.merge(*(_timed(k, list(io.BytesIO(d)))
                                                                for k, d in enumerate(data)))]
    assert list(merged_lines([io.BytesIO(d) for d in data])) == expected


def test_two_markets_are_interleaved_by_publish_time(tmp_path: Path) -> None:
    paths = expand_inputs([_market_dir(tmp_path)])
    merged = FileTape(tmp_path / "merged")
    [summary] = import_merged(merged, paths)
    one_by_one = FileTape(tmp_path / "separate")
    for p in paths:
        import_file(one_by_one, p)
    ours, theirs = _events(merged), _events(one_by_one)
    assert Counter(map(repr, ours)) == Counter(map(repr, theirs))  # the same events ...
    times = [e.ts_event for e in ours]  # type: ignore[attr-defined]
    assert times == sorted(times)  # ... in publish-time order
    assert [e.ts_event for e in theirs] != sorted(e.ts_event for e in theirs)  # type: ignore[attr-defined]
    for market in REAL_MARKETS:  # each market's own order is kept
        assert ([repr(e) for e in ours if e.market_id == market]  # type: ignore[attr-defined]
                == [repr(e) for e in theirs if e.market_id == market])  # type: ignore[attr-defined]
    assert summary.total_events == len(ours) and summary.dead_letters == 0


@needs_real
def test_no_file_lands_twice_however_it_is_imported(tmp_path: Path) -> None:
    d = _market_dir(tmp_path, FIXTURES / "market.stream")
    paths = expand_inputs([d])
    tape = FileTape(tmp_path / "tape")
    first = import_file(tape, paths[0])  # one file alone first
    n = len(_events(tape))
    summaries = import_merged(tape, paths)
    assert summaries[0].skipped and summaries[0].source_id == first.source_id
    assert "2 files merged by publish time" in summaries[1].name
    after = len(_events(tape))
    assert after > n
    assert all(s.skipped for s in import_merged(tape, paths))  # the directory again: nothing
    assert all(import_file(tape, p).skipped for p in paths)  # any file alone: nothing
    assert len(_events(tape)) == after


def test_bad_lines_are_named_by_file_and_line(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    for name in ("bad.stream", "market.stream"):
        shutil.copy(FIXTURES / name, d / name)
    tape = FileTape(tmp_path / "tape")
    [summary] = import_merged(tape, expand_inputs([d]))
    letters = list(tape.read_events("dlq.betfair"))
    assert summary.dead_letters == len(letters) > 0
    assert all(f"{d / 'bad.stream'} line " in dl.position for dl in letters)  # type: ignore[attr-defined]
    again = import_file(tape, d / "bad.stream")
    assert again.skipped and again.dead_letters == summary.dead_letters  # --strict still fails on it


@needs_real
def test_an_interrupted_merge_resumes_without_repeating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("producers.betfair.merged.PROGRESS_EVERY", 100)  # a tick (and the stop) within the files
    paths = expand_inputs([_market_dir(tmp_path)])
    reference = FileTape(tmp_path / "reference")
    import_merged(reference, paths)

    class Interrupted(Exception):
        pass

    def stop(done: int, total: int) -> None:
        if done < total:
            raise Interrupted

    tape = FileTape(tmp_path / "tape")
    with pytest.raises(Interrupted):
        import_merged(tape, paths, batch_size=30, progress=stop)  # stops at the first progress tick
    part = len(_events(tape))
    assert 0 < part < len(_events(reference))
    [summary] = import_merged(tape, paths, batch_size=30)
    assert summary.resumed == part
    assert [repr(e) for e in _events(tape)] == [repr(e) for e in _events(reference)]


@needs_real
def test_the_command_merges_a_directory_unless_told_not_to(tmp_path: Path) -> None:
    _register_plugins()
    d = _market_dir(tmp_path)
    runner = CliRunner()
    done = runner.invoke(cli, ["--tape", f"file:{tmp_path / 'a'}", "import", "betfair", str(d)])
    assert done.exit_code == 0, done.output
    assert "2 files merged by publish time" in done.output
    times = [e.ts_event for e in _events(FileTape(tmp_path / "a"))]  # type: ignore[attr-defined]
    assert times == sorted(times)
    done = runner.invoke(cli, ["--tape", f"file:{tmp_path / 'b'}", "import", "betfair", "--no-merge", str(d)])
    assert done.exit_code == 0 and "merged" not in done.output
