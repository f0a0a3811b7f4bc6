"""`module:Class` robots are found in the current directory, as `python -m` finds modules (issue 16)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from robots.api import RobotError
from robots.registry import robot_class

ROBOT = '''
from dataclasses import dataclass
from robots.api import Context, Params, Robot, Subscription
from ticktape.events import Trade

@dataclass(frozen=True)
class P(Params):
    size: float = 0.1

@dataclass
class S:
    long: bool = False

class Breakout(Robot[P, S]):
    name, params_type = "breakout", P
    def subscriptions(self) -> Subscription:
        return Subscription(topics=("md.binance.trade",))
    def init_state(self) -> S:
        return S()
    def on_trade(self, state: S, event: Trade, ctx: Context) -> None:
        pass
'''


@pytest.fixture
def in_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project directory holding `mypkg/robots.py`, as the cwd, with sys.path and modules restored after."""
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "robots.py").write_text(ROBOT)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    yield tmp_path
    for name in [m for m in sys.modules if m == "mypkg" or m.startswith("mypkg.")]:
        del sys.modules[name]


def test_a_robot_module_in_the_current_directory_is_found(in_project: Path) -> None:
    cls = robot_class("mypkg.robots:Breakout")
    assert cls.__name__ == "Breakout" and cls.__module__ == "mypkg.robots"
    assert sys.path[-1] == str(in_project)  # appended: it shadows nothing installed


def test_a_module_missing_everywhere_is_still_named(in_project: Path) -> None:
    with pytest.raises(RobotError, match=r"cannot import 'otherpkg\.robots'"):
        robot_class("otherpkg.robots:Breakout")
