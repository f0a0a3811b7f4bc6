"""Commands that only read refuse a tape or database that is not there, naming it, and create nothing.

Before: `topics`, `cat`, `load`, `sql` and `report` on a mistyped path created an empty tape
directory or DuckDB file and exited 0 with empty output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ticktape.errors import TapeError
from ticktape.tape import open_existing_tape, open_tape

REPO = Path(__file__).resolve().parents[2]


def ticktape(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "ticktape", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=120)


@pytest.mark.parametrize("args", [
    ["--tape", "file:./typo", "topics"],
    ["--tape", "file:./typo", "cat", "md.sim.trade"],
    ["load", "--tape", "file:./typo", "--db", "runs.duckdb"],
    ["audit", "--tape", "file:./typo", "--run", "r1"],
    ["--tape", "file:./typo", "mongo", "sync", "--mongo", "mongodb://127.0.0.1:1/x"],
], ids=["topics", "cat", "load", "audit", "mongo-sync"])
def test_a_tape_that_is_not_there(tmp_path: Path, args: list[str]) -> None:
    result = ticktape(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert "no tape at ./typo" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "typo").exists() and not (tmp_path / "runs.duckdb").exists()


@pytest.mark.parametrize("args", [
    ["sql", "typo.duckdb", "SELECT 1"],
    ["report", "r1", "--db", "typo.duckdb"],
], ids=["sql", "report"])
def test_a_database_that_is_not_there(tmp_path: Path, args: list[str]) -> None:
    result = ticktape(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert "no database typo.duckdb" in result.stderr and "ticktape load" in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_file_where_the_tape_should_be_is_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(TapeError, match="is a file, not a directory"):
        open_existing_tape(f"file:{tmp_path / 'notes.txt'}")


def test_an_existing_tape_opens_and_writers_still_create_one(tmp_path: Path) -> None:
    open_tape(f"file:{tmp_path / 'new'}").close()  # writers create it
    tape = open_existing_tape(f"file:{tmp_path / 'new'}")
    assert tape.topics() == []
    tape.close()
    result = ticktape("--tape", "file:./new", "topics", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
