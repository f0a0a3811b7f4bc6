"""A real Ray cluster for the tests: a head and one worker node on 127.0.0.1, one CPU each.

Started once per session with `ray start` in a new process group of its own, in a temp dir;
stopped at the end by signalling that group only (never `ray stop`, which stops every Ray on the
machine, other people's too). `TICKTAPE_RAY=HOST:PORT` uses a running cluster instead. Without Ray
the tests are skipped locally with the reason, but in CI (`CI` set) they fail: CI must never
silently skip the real-cluster tests.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray_cli() -> str | None:
    return shutil.which("ray", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))


class RayCluster:
    """`ray start --head` plus one `ray start --address=...` node, each in a process group of its own."""

    def __init__(self) -> None:
        # Short: Ray's unix socket paths live under it (a socket path has ~107 bytes at most).
        self.dir = Path(tempfile.mkdtemp(prefix="tt-ray-", dir="/tmp"))
        self.address: str | None = None
        self.pgids: list[int] = []  # the head's group, then the worker node's
        self.log = self.dir / "start.log"
        atexit.register(self.stop)  # a safety net if teardown never runs

    def _env(self) -> dict[str, str]:
        # Workers import ticktape from this checkout (the raylets pass their environment on to them).
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
        return {**os.environ, "PYTHONPATH": path, "RAY_USAGE_STATS_ENABLED": "0"}

    def _ray(self, *args: str) -> None:
        with open(self.log, "a") as log:
            # A new session: every daemon this `ray start` leaves behind stays in its process group.
            proc = subprocess.Popen([_ray_cli() or "ray", "start", *args, "--num-cpus=1", "--disable-usage-stats",
                                     "--node-ip-address=127.0.0.1"], env=self._env(), stdout=log,
                                    stderr=subprocess.STDOUT, cwd=self.dir, start_new_session=True)
            self.pgids.append(proc.pid)
            if proc.wait(timeout=120) != 0:
                raise RuntimeError(f"ray start {' '.join(args)} failed (exit {proc.returncode})")

    def start(self, worker_nodes: int = 1) -> str:
        """The head and `worker_nodes` more nodes (one CPU each); return the head's HOST:PORT."""
        port = _free_port()
        self._ray("--head", f"--port={port}", f"--temp-dir={self.dir / 't'}", "--include-dashboard=false")
        self.address = f"127.0.0.1:{port}"
        for _ in range(worker_nodes):
            self.add_node()
        return self.address

    def add_node(self) -> None:
        """One more node with one CPU, joined to the head."""
        self._ray(f"--address={self.address}")

    def _members(self) -> list[tuple[int, int, str]]:
        """(pid, parent pid, command line) of every live process of this cluster: in our process groups, or
        a child of one of them (Ray puts each worker process in a group of its own, under its raylet)."""
        procs: dict[int, tuple[int, int, str]] = {}  # pid -> (pgid, ppid, cmdline)
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
                if stat[0] == "Z":  # a zombie has exited already
                    continue
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            procs[int(d.name)] = (int(stat[2]), int(stat[1]), cmd)
        ours = {pid for pid, (pgid, _, _) in procs.items() if pgid in self.pgids}
        return [(pid, ppid, cmd) for pid, (_, ppid, cmd) in procs.items() if pid in ours or ppid in ours]

    def pids(self, title_prefix: str = "") -> list[int]:
        """Live processes of this cluster whose command line starts with `title_prefix` (e.g. `ray::run_point`)."""
        return [pid for pid, _, cmd in self._members() if cmd.startswith(title_prefix)]

    def stop(self) -> None:
        """SIGTERM to every process of the cluster, SIGKILL to what is left after 3 s; remove the temp dir."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 3
            while pids and self.pids() and time.monotonic() < deadline:
                time.sleep(0.2)
        self.pgids = []
        self.address = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the `ray start` output, for failure messages."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def missing_prerequisite() -> str | None:
    """Why a Ray cluster cannot be started here, or None."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return "Ray is not installed (pip install 'ticktape[ray]'); set TICKTAPE_RAY=HOST:PORT to use a cluster"
    if _ray_cli() is None:
        return "the `ray` command is not on PATH"
    return None


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """The session's cluster: $TICKTAPE_RAY (`address` only), or a head + one worker node started here."""
    reason = missing_prerequisite()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Ray tests on a real cluster, but: {reason}", pytrace=False)
        pytest.skip(reason)
    cluster = RayCluster()
    given = os.environ.get("TICKTAPE_RAY")
    if given:
        cluster.address = given
        yield cluster
        return
    try:
        cluster.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        tail = cluster.log_tail()
        cluster.stop()
        pytest.fail(f"could not start the Ray cluster: {exc}\n{tail}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()
