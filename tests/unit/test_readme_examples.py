"""Every shell block of README.md runs as written (issue 16), so the README cannot drift from the code.

The README is read top to bottom like a user would: each ```bash block runs under `bash -e` in one
scratch directory, after the earlier blocks, with the data the README says the user has
(`trades.jsonl`, `quotes.jsonl`: synthetic trades and quotes of 2024-01-01) and the files the README
shows (a fenced block right after `<!-- readme-test: file PATH -->` is written to PATH first).
`ticktape` on the PATH is this source tree's CLI, started like the installed console script (so the
current directory is not on the import path). A block may be skipped only by the marker
`<!-- readme-test: skip (why) -->` on the line before it; every other block must exit 0.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
TS0 = 1_704_067_200_000_000_000  # 2024-01-01T00:00Z
MARKER = re.compile(r"<!--\s*readme-test:\s*(skip|file)\s*(.*?)\s*-->")
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block of the README: its language, first line number, text and marker (if any)."""

    lang: str
    line: int
    text: str
    marker: str | None  # "skip" or "file"
    argument: str  # the skip's reason, or the file's path

    @property
    def id(self) -> str:
        return f"README.md:{self.line}"


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block, with the `readme-test` marker on the nearest non-blank line before it."""
    lines = text.split("\n")
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        before = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        mark = MARKER.search(before)
        argument = mark.group(2).strip() if mark else ""
        if argument.startswith("(") and argument.endswith(")"):
            argument = argument[1:-1]
        out.append(Block(m.group(1), i + 1, "\n".join(lines[i + 1:j]), mark.group(1) if mark else None, argument))
        i = j + 1
    return out


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))
SHELL = [b for b in BLOCKS if b.lang in ("bash", "sh", "shell", "console")]


def test_the_readme_parser_sees_markers_and_every_shell_block() -> None:
    text = "a\n<!-- readme-test: skip (needs a broker) -->\n```bash\nx\n```\n\n```bash\ny\nz\n```\n"
    blocks = readme_blocks(text)
    assert [(b.line, b.text, b.marker, b.argument) for b in blocks] == [
        (3, "x", "skip", "needs a broker"), (7, "y\nz", None, "")]
    assert len(SHELL) >= 15 and sum(b.marker is None for b in SHELL) >= 4
    for b in SHELL:
        assert b.marker in (None, "skip"), f"{b.id}: a shell block cannot be a file"
        assert b.marker != "skip" or b.argument, f"{b.id}: a skip must say why"


def _write_data(root: Path) -> None:
    """What the README's user has at hand: a day of BTCUSDT trades and quotes as JSON lines."""
    trades, quotes = [], []
    for i in range(2000):
        ts = TS0 + i * 30_000_000_000
        price = round(42_000 + 400 * math.sin(i / 40) + 60 * math.sin(i / 7), 1)
        trades.append({"venue": "binance", "instrument": "BTCUSDT", "ts_event": ts, "ts_recv": ts, "price": price,
                       "size": 0.5, "aggressor_side": "BUY" if i % 2 else "SELL", "trade_id": str(i)})
        quotes.append({"venue": "binance", "instrument": "BTCUSDT", "ts_event": ts + 1, "ts_recv": ts + 1,
                       "bid_price": price - 0.1, "bid_size": 3.0, "ask_price": price + 0.1, "ask_size": 3.0})
    (root / "trades.jsonl").write_text("".join(json.dumps(t) + "\n" for t in trades))
    (root / "quotes.jsonl").write_text("".join(json.dumps(q) + "\n" for q in quotes))
    for b in BLOCKS:
        if b.marker == "file":
            path = root / b.argument
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(b.text + "\n")
            if path.suffix == ".py":  # a module in a package directory
                (path.parent / "__init__.py").touch()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The user's directory, and an environment whose `ticktape` is this tree's, run as a console script."""
    root = tmp_path_factory.mktemp("readme")
    _write_data(root)
    bin_dir = tmp_path_factory.mktemp("bin")
    script = bin_dir / "ticktape"
    # pip's console script, as written: sys.path[0] is the script's directory (not the current one),
    # and the guard lets spawned sweep workers import it
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom ticktape.cli import main\n"
                      "if __name__ == '__main__':\n    sys.exit(main())\n")
    script.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKTAPE_")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(REPO),
               TICKTAPE_LOG_FORMAT="text")
    return root, env


@pytest.mark.slow
@pytest.mark.parametrize("block", SHELL, ids=[b.id for b in SHELL])
def test_readme_shell_block_runs_as_written(block: Block, scratch: tuple[Path, dict[str, str]]) -> None:
    if block.marker == "skip":
        pytest.skip(f"{block.id}: {block.argument}")
    root, env = scratch
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.text], cwd=root, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (f"{block.id} failed (exit {proc.returncode}):\n{block.text}\n--- stderr:\n"
                                  f"{proc.stderr[-3000:]}\n--- stdout:\n{proc.stdout[-1500:]}")
