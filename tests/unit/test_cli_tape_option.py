"""`--tape` after any subcommand (issue 16): one mechanism in the root group, for every command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click

from tests.conftest import make_trades
from ticktape.cli import _register_plugins, cli
from ticktape.codec import to_python

REPO = Path(__file__).resolve().parents[2]


def ticktape(cwd: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TICKTAPE_LOG_FORMAT": "text"}
    env.pop("TICKTAPE_TAPE", None)
    return subprocess.run([sys.executable, "-m", "ticktape", *args], input=stdin, capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


def test_put_cat_and_topics_take_tape_after_the_subcommand(tmp_path: Path) -> None:
    lines = "".join(json.dumps(to_python(e)) + "\n" for e in make_trades(5))
    put = ticktape(tmp_path, "put", "md.binance.trade", "--type", "Trade", "--tape", "file:./elsewhere", stdin=lines)
    assert put.returncode == 0, put.stderr
    assert (tmp_path / "elsewhere").is_dir() and not (tmp_path / "tape").exists()
    cat = ticktape(tmp_path, "cat", "md.binance.trade", "--tape", "file:./elsewhere")
    assert len(cat.stdout.splitlines()) == 5
    # the subcommand's --tape wins over the group's
    topics = ticktape(tmp_path, "--tape", "file:./nowhere", "topics", "--json", "--tape", "file:./elsewhere")
    assert json.loads(topics.stdout)["events"] == 5


def _leaves(command: click.Command, path: str = "ticktape") -> list[tuple[str, click.Command]]:
    if isinstance(command, click.Group):
        return [leaf for name, sub in command.commands.items() for leaf in _leaves(sub, f"{path} {name}")]
    return [(path, command)]


def test_every_command_has_exactly_one_tape_option() -> None:
    _register_plugins()
    ctx = click.Context(cli)
    for name in cli.list_commands(ctx):
        cli.get_command(ctx, name)  # where the root group attaches the option
    leaves = _leaves(cli)
    assert len(leaves) > 20
    for path, command in leaves:
        tapes = [p for p in command.params if isinstance(p, click.Option) and "--tape" in p.opts]
        assert len(tapes) == 1, f"{path}: {len(tapes)} --tape options"
