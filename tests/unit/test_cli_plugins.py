"""Command plugins come from the `ticktape.commands` entry points; a broken one is an error naming it."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from ticktape.cli import BUILTIN_COMMANDS, PLUGIN_GROUP

REPO = Path(__file__).resolve().parents[2]


def test_the_declared_entry_points_are_the_builtin_commands() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"][PLUGIN_GROUP]
    assert declared == BUILTIN_COMMANDS


def _with_plugin(tmp_path: Path, name: str, target: str, module_source: str | None) -> dict[str, str]:
    """A real installed distribution (a .dist-info with entry_points.txt) on PYTHONPATH."""
    dist = tmp_path / "extra_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: extra-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{PLUGIN_GROUP}]\n{name} = {target}\n")
    if module_source is not None:
        (tmp_path / f"{target.split(':')[0]}.py").write_text(module_source)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO), env.get("PYTHONPATH", "")])
    return env


def _ticktape(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ticktape", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_plugin_adds_its_command(tmp_path: Path) -> None:
    env = _with_plugin(tmp_path, "hello", "hello_plugin:register", (
        "import click\n"
        "@click.command()\n"
        "def hello():\n"
        "    click.echo('hello from a plugin')\n"
        "def register(cli):\n"
        "    cli.add_command(hello)\n"))
    done = _ticktape(env, "hello")
    assert done.returncode == 0 and done.stdout.strip() == "hello from a plugin"


def test_a_broken_plugin_is_named_instead_of_silently_dropped(tmp_path: Path) -> None:
    env = _with_plugin(tmp_path, "broken", "broken_plugin:register", "import not_a_module_anywhere\n")
    done = _ticktape(env, "topics")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: command plugin 'broken' (broken_plugin:register) failed to load: "
        "ModuleNotFoundError: No module named 'not_a_module_anywhere'"]


def test_a_plugin_cannot_take_a_builtin_name(tmp_path: Path) -> None:
    env = _with_plugin(tmp_path, "robots", "other:register", None)
    done = _ticktape(env, "topics")
    assert done.returncode == 2 and "clashes with ticktape's own robots.cli:register" in done.stderr


def test_binance_kinds_are_the_file_layouts() -> None:
    from producers.binance.cli import KINDS
    from producers.binance.files import LAYOUTS

    assert tuple(LAYOUTS) == KINDS


def test_help_imports_no_data_library() -> None:
    """`ticktape --help` (every command registered) loads no pandas or pyarrow: they cost ~0.2 s and
    ~40 MB at every start and only commands that read frames or files need them."""
    code = ("import sys; from ticktape.cli import _register_plugins; _register_plugins();"
            "print(sorted(m for m in ('pandas', 'pyarrow') if m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          check=True)
    assert done.stdout.strip() == "[]"
