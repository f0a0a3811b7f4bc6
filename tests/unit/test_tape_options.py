"""File tape settings and paths that are refused with a `TapeError` saying why, before anything is written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import make_trades
from ticktape.errors import TapeError
from ticktape.tape import open_tape
from ticktape.tape.file import FileTape


@pytest.mark.parametrize(("query", "why"), [
    ("segment_bytes=0", "segment_bytes must be at least 1, not 0"),
    ("segment_bytes=-5", "segment_bytes must be at least 1, not -5"),
    ("segment_bytes=1e6", "segment_bytes must be a whole number, not '1e6'"),
    ("partitions=0", "partitions must be at least 1, not 0"),
    ("partitions=-1", "partitions must be at least 1, not -1"),
    ("partitions=abc", "partitions must be a whole number, not 'abc'"),
])
def test_bad_file_tape_options_are_refused(tmp_path: Path, query: str, why: str) -> None:
    with pytest.raises(TapeError, match=why):
        open_tape(f"file:{tmp_path / 'tape'}?{query}")
    assert not (tmp_path / "tape").exists()


@pytest.mark.parametrize("option", ["segment_bytes", "partitions"])
@pytest.mark.parametrize("value", [0, -1, True, 2.5])
def test_bad_file_tape_arguments_are_refused(tmp_path: Path, option: str, value: object) -> None:
    with pytest.raises(TapeError, match=option):
        FileTape(tmp_path / "tape", **{option: value})  # type: ignore[arg-type]


def test_a_partition_count_below_one_is_refused_for_a_new_topic(tmp_path: Path) -> None:
    tape = FileTape(tmp_path / "tape")
    with pytest.raises(TapeError, match="partitions must be at least 1, not 0"):
        tape.create_topic("md.trade", 0)
    assert tape.topic_names() == [] and not (tmp_path / "tape" / "md.trade").exists()


@pytest.mark.parametrize("uri", ["file:", "", "file:?partitions=2"])
def test_a_file_tape_without_a_path_is_refused(tmp_path: Path, uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # where `file:` used to spread its topics
    with pytest.raises(TapeError, match="a file tape needs a directory: file:PATH"):
        open_tape(uri)
    assert os.listdir(tmp_path) == []


def test_a_file_tape_on_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a tape")
    with pytest.raises(TapeError, match=r"notes\.txt: it is a file, not a directory"):
        open_tape(f"file:{tmp_path / 'notes.txt'}")
    with pytest.raises(TapeError, match="cannot create the directory: Not a directory"):
        open_tape(f"file:{tmp_path / 'notes.txt' / 'tape'}")


def test_the_smallest_segments_still_work(tmp_path: Path) -> None:
    """segment_bytes=1 is allowed: a segment per block (what the roll tests use in spirit)."""
    tape = FileTape(tmp_path / "tape", segment_bytes=1)
    for i in range(3):
        tape.append("md.trade", make_trades(2, start=2 * i))
    assert [r.offset for r in tape.read("md.trade")] == list(range(6))
    assert len(tape.segment_paths("md.trade")) == 3
    tape.close()


@pytest.mark.parametrize(("query", "why"), [
    ("partitions=0", "partitions must be at least 1, not 0"),
    ("partitions=x", "partitions must be a whole number, not 'x'"),
    ("replication=-2", "replication must be at least -1, not -2"),
    ("linger_ms=-1", "linger_ms must be at least 0, not -1"),
    ("timeout=abc", "timeout must be a number of seconds, not 'abc'"),
    ("timeout=0", "timeout must be a positive number of seconds, not '0'"),
    ("timeout=nan", "timeout must be a positive number of seconds, not 'nan'"),
])
def test_bad_kafka_tape_options_are_refused_before_connecting(query: str, why: str) -> None:
    with pytest.raises(TapeError, match=why):
        open_tape(f"kafka://127.0.0.1:9?{query}")  # port 9 (discard): nothing listens, nothing is tried
