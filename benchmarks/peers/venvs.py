"""The peers' own virtual environments under .cache/bench-venvs/ (benchmark-only, never ticktape deps).

A venv is reused when its pinned packages are installed at the pinned versions; otherwise it is
(re)created and pip installs the pins. The peers never share ticktape's interpreter, so their
dependency pins cannot disturb ticktape's, nor ticktape's theirs.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

PEERS: dict[str, dict[str, str | None]] = {
    # name -> {distribution: pinned version, or None for "whatever pip picks" (helpers only)}
    "nautilus": {"nautilus_trader": "1.221.0", "pyarrow": None, "pandas": None},
    "backtrader": {"backtrader": "1.9.78.123", "pyarrow": None, "pandas": None},
    "flumine": {"flumine": "3.3.2", "betfairlightweight": None},
}


def venv_root(repo: Path) -> Path:
    """Where the peers' venvs live (git-ignored through `.cache/`)."""
    return repo / ".cache" / "bench-venvs"


def python_of(repo: Path, name: str) -> Path:
    """The interpreter of peer `name`'s venv."""
    return venv_root(repo) / name / "bin" / "python"


def installed(python: Path, dists: list[str]) -> dict[str, str | None]:
    """Installed versions of `dists` in the venv of `python` (None for a missing one)."""
    if not python.exists():
        return dict.fromkeys(dists)
    code = ("import importlib.metadata as m, json, sys\n"
            "out = {}\n"
            "for d in sys.argv[1:]:\n"
            "    try: out[d] = m.version(d)\n"
            "    except m.PackageNotFoundError: out[d] = None\n"
            "print(json.dumps(out))")
    proc = subprocess.run([str(python), "-c", code, *dists], capture_output=True, text=True)
    if proc.returncode != 0:
        return dict.fromkeys(dists)
    import json

    got: dict[str, str | None] = json.loads(proc.stdout)
    return got


def ensure(repo: Path, name: str, log: Path | None = None) -> dict[str, str | None]:
    """Make peer `name`'s venv hold its pins (reusing it when it does); return the installed versions."""
    pins = PEERS[name]
    py = python_of(repo, name)
    have = installed(py, list(pins))
    if all(v is not None and (want is None or v == want) for (d, want), v in zip(pins.items(), have.values(),
                                                                                  strict=True)):
        return have
    if not py.exists():
        venv.create(venv_root(repo) / name, with_pip=True, clear=True)
    reqs = [f"{d}=={v}" if v else d for d, v in pins.items()]
    print(f"peers: installing {' '.join(reqs)} into {venv_root(repo) / name}", file=sys.stderr)
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", *reqs], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pip install into the {name} venv failed:\n{proc.stderr[-3000:]}")
    return installed(py, list(pins))
