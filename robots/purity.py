"""What can be enforced of a robot's purity, by reading its module's source before it runs.

A robot must not do I/O, read the wall clock or use unseeded randomness (see `robots.api`).
Python cannot prove that, but the usual ways in are visible in the source: importing I/O, clock,
randomness, network or storage modules, and calling `open`, `input`, `eval`, `exec`,
`__import__`, `hash` (str hashes differ per process) or `datetime.now()`-style functions. The
registry refuses robots whose module does any of these (`allow_impure=True` to override, e.g.
for a research notebook); the message names the line.
"""

from __future__ import annotations

import ast
import functools
import inspect
import sys
from typing import Any

FORBIDDEN_MODULES = frozenset({
    "time", "random", "secrets", "uuid", "os", "io", "pathlib", "shutil", "tempfile", "glob", "socket",
    "ssl", "select", "selectors", "subprocess", "threading", "multiprocessing", "concurrent", "asyncio",
    "signal", "urllib", "http", "requests", "aiohttp", "kafka", "confluent_kafka", "duckdb", "pymongo",
    "sqlite3", "betfairlightweight", "binance", "tqdm", "logging", "ticktape.tape", "ticktape.config",
    "producers", "analyzer",
})
"""Modules (and their submodules) a robot module may not import."""

FORBIDDEN_CALLS = frozenset({"open", "input", "eval", "exec", "__import__", "hash", "breakpoint"})
WALL_CLOCK_ATTRS = frozenset({"now", "utcnow", "today", "time_ns", "perf_counter", "monotonic"})


def _forbidden(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in FORBIDDEN_MODULES)


def problems_in_source(source: str, filename: str = "<robot>") -> list[str]:
    """Every impurity found in a module's source, as 'file:line: what'."""
    out: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            out += [f"{filename}:{node.lineno}: imports {a.name}" for a in node.names if _forbidden(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and _forbidden(node.module):
            out.append(f"{filename}:{node.lineno}: imports from {node.module}")
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in FORBIDDEN_CALLS:
                out.append(f"{filename}:{node.lineno}: calls {f.id}()")
            elif isinstance(f, ast.Attribute) and f.attr in WALL_CLOCK_ATTRS:
                out.append(f"{filename}:{node.lineno}: calls .{f.attr}() (wall clock)")
    return out


def problems(cls: type[Any]) -> list[str]:
    """Impurities in the module defining `cls` (empty when its source is not available); cached."""
    return _module_problems(cls.__module__)


@functools.cache
def _module_problems(name: str) -> list[str]:
    module = sys.modules.get(name)
    if module is None:
        return []
    try:
        source = inspect.getsource(module)
        filename = inspect.getsourcefile(module) or name
    except (OSError, TypeError):
        return []
    return problems_in_source(source, filename)
