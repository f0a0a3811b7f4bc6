"""Robots by name: built-ins (`ema_cross`) or any `module:Class` on the import path."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from robots import purity
from robots.api import Robot, RobotError

BUILTIN: dict[str, str] = {
    "ema_cross": "robots.builtin.ema_cross:EmaCross",
    "market_maker": "robots.builtin.market_maker:MarketMaker",
    "betfair_lay_lowest": "robots.builtin.betfair_lay_lowest:BetfairLayLowest",
    "betfair_back_favourite": "robots.builtin.betfair_back_favourite:BetfairBackFavourite",
}
"""Built-in name -> `module:Class`."""


def robot_class(name: str, *, allow_impure: bool = False) -> type[Robot[Any, Any]]:
    """The class for a built-in name or a `module:Class` reference.

    Its module is checked by `robots.purity` (no I/O, clock or randomness imports or calls);
    a finding is a RobotError naming the line, unless `allow_impure`.
    """
    ref = BUILTIN.get(name, name)
    module_name, colon, cls_name = ref.partition(":")
    if not colon or not module_name or not cls_name:
        known = ", ".join(sorted(BUILTIN))
        raise RobotError(f"unknown robot {name!r}: use a built-in name ({known}) or module:Class")
    try:
        module = _import_robot_module(module_name)
    except ImportError as exc:
        raise RobotError(f"robot {name!r}: cannot import {module_name!r}: {exc}") from exc
    cls = getattr(module, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Robot)):
        raise RobotError(f"robot {name!r}: {module_name}.{cls_name} is not a robots.api.Robot subclass")
    if not allow_impure:
        found = purity.problems(cls)
        if found:
            raise RobotError(f"robot {name!r} is not pure (robots do no I/O, read no clock, use no unseeded "
                             f"randomness): {'; '.join(found[:5])}")
    return cls


def _import_robot_module(module_name: str) -> ModuleType:
    """Import a robot's module; one not found on the path is looked for in the current directory too.

    `ticktape backtest mypkg.robots:Breakout` run beside `mypkg/` finds it as `python -m` would,
    without `PYTHONPATH=.`. The directory goes at the end of the path, so it never shadows an
    installed module, and only when the robot's own module (or its package) is what was missing.
    """
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        parts = module_name.split(".")
        own = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        here = os.getcwd()
        if exc.name not in own or here in sys.path or "" in sys.path:
            raise
        sys.path.append(here)
        importlib.invalidate_caches()
        return importlib.import_module(module_name)


def get_robot(name: str, params: Mapping[str, object] | None = None, *, robot_id: str | None = None,
              allow_impure: bool = False) -> Robot[Any, Any]:
    """Load a robot by name with params (strings from `--param k=v`, or typed values)."""
    cls = robot_class(name, allow_impure=allow_impure)
    return cls(cls.params_type.parse(params or {}), robot_id=robot_id)


def available() -> list[str]:
    """Built-in names whose module is present."""
    out = []
    for name, ref in sorted(BUILTIN.items()):
        try:
            importlib.import_module(ref.partition(":")[0])
        except ImportError:
            continue
        out.append(name)
    return out
