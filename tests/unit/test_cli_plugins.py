"""Command plugins come from the `ticktape.commands` entry points; a broken one is an error naming it."""

from __future__ import annotations

import json
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


def _fresh(code: str) -> str:
    """`code` run in a fresh interpreter (nothing registered yet); its stdout."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          check=True).stdout.strip()


def test_each_builtin_plugin_adds_the_commands_it_declares() -> None:
    """`BUILTIN_PROVIDES` is what each plugin's `register` really adds (a command loads only its plugin)."""
    code = ("import json; from ticktape import cli as c\n"
            "added = {}\n"
            "for name, target in c.BUILTIN_COMMANDS.items():\n"
            "    before = set(c.cli.commands); c._load_plugin(name, target)\n"
            "    added[name] = sorted(set(c.cli.commands) - before)\n"
            "print(json.dumps(added))")
    from ticktape.cli import BUILTIN_PROVIDES
    assert json.loads(_fresh(code)) == {name: sorted(cmds) for name, cmds in BUILTIN_PROVIDES.items()}


def test_a_command_loads_only_its_own_plugin_and_help_loads_them_all() -> None:
    code = ("import sys; from ticktape import cli as c; import click\n"
            "ctx = click.Context(c.cli)\n"
            "print(c.cli.get_command(ctx, 'import').name, sorted(c._registered))\n"
            "print(sorted(c.cli.list_commands(ctx)) == sorted({'cat', 'put', 'schemas', 'topics'}.union("
            "*c.BUILTIN_PROVIDES.values())), sorted(c._registered) == sorted(c.BUILTIN_COMMANDS))\n"
            "print(c.cli.get_command(ctx, 'no-such-command'))")
    lines = _fresh(code).splitlines()
    assert lines[0] == "import ['producers']"
    assert lines[1] == "True True"  # the core commands and every plugin's
    assert lines[2] == "None"


def test_an_import_betfair_run_loads_no_other_venue_or_command_group(tmp_path: Path) -> None:
    """The start-up cost of `ticktape import betfair`: only the producers' plugin is imported."""
    code = ("import sys; from ticktape.cli import main\n"
            f"sys.argv = ['ticktape', '--tape', 'file:{tmp_path / 'tape'}', 'import', 'betfair', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('robots.cli', 'analyzer.cli', 'ticktape.mongo.cli', 'ticktape.demo',"
            " 'robots.live.cli', 'producers.cli', 'producers.binance.parsers') if m in sys.modules))")
    assert _fresh(code).splitlines()[-1] == "['producers.cli']"
