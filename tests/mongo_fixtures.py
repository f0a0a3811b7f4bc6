"""MongoDB for tests: a real MongoDB-protocol server (FerretDB built by `scripts/mongo`), or the
server `TICKTAPE_MONGO` names (any real MongoDB). Each test gets a database of its own.

A test that kills or restarts a server starts its own with `start_mongo(dir)` (always FerretDB:
`TICKTAPE_MONGO`'s server is not ours to kill)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "mongo"


def _script(*args: str, timeout: float = 900) -> str:
    """Run `scripts/mongo ARGS`; its last stdout line (the URI), or an error with its stderr."""
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/mongo {' '.join(args)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else ""


class MongoServer:
    """A FerretDB server of one test, in its own directory: kill it, restart it on the same port and data."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.uri = ""

    def start(self) -> MongoServer:
        """Start on fresh storage (a free port); `uri` is `mongodb://127.0.0.1:PORT`."""
        self.uri = _script("start", "--dir", str(self.dir))
        return self

    def kill(self) -> None:
        """SIGKILL the server (a crash: no shutdown, whatever the OS has of its files stays)."""
        _script("kill", "--dir", str(self.dir), timeout=60)

    def restart(self) -> None:
        """Start again on the same port and data (after `kill` or `stop`)."""
        uri = _script("restart-same", "--dir", str(self.dir), timeout=120)
        assert uri == self.uri, f"restart-same moved the server from {self.uri} to {uri}"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers; a no-op when it is not running."""
        _script("stop", "--dir", str(self.dir), timeout=60)

    def running(self) -> bool:
        """Whether the server process is alive (`scripts/mongo status`)."""
        done = subprocess.run([sys.executable, str(SCRIPT), "status", "--dir", str(self.dir)], capture_output=True,
                              timeout=60)
        return done.returncode == 0


def start_mongo(run_dir: Path) -> MongoServer:
    """A FerretDB server of its own in `run_dir`, started; call `.stop()` when done (a fixture's finally)."""
    return MongoServer(run_dir).start()


@pytest.fixture
def mongo_server(tmp_path: Path) -> Iterator[MongoServer]:
    """A FerretDB server for this test alone (to kill and restart), stopped afterwards."""
    server = start_mongo(tmp_path / "mongo")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mongodb://127.0.0.1:PORT` of a server for the whole session."""
    given = os.environ.get("TICKTAPE_MONGO")
    if given:
        yield given.rstrip("/")
        return
    server = start_mongo(tmp_path_factory.mktemp("mongo"))
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture
def mongo_db_uri(mongo_uri: str) -> Iterator[str]:
    """`mongodb://.../t_<random>`: a database unique to the test, dropped afterwards."""
    import pymongo

    name = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{mongo_uri}/{name}"
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(mongo_uri, serverSelectionTimeoutMS=5000)
    try:
        client.drop_database(name)
    except Exception:  # the server may be down after a fault test; its files are temporary anyway
        pass
    finally:
        client.close()
