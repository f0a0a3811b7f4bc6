"""MongoDB for tests: a real MongoDB-protocol server (FerretDB built by `scripts/mongo`), or the
server `TICKTAPE_MONGO` names (any real MongoDB). Each test gets a database of its own."""

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


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mongodb://127.0.0.1:PORT` of a server for the whole session."""
    given = os.environ.get("TICKTAPE_MONGO")
    if given:
        yield given.rstrip("/")
        return
    run_dir = tmp_path_factory.mktemp("mongo")
    started = subprocess.run([sys.executable, str(SCRIPT), "start", "--dir", str(run_dir)], capture_output=True,
                             text=True, timeout=900)
    if started.returncode != 0:
        raise RuntimeError(f"scripts/mongo start failed:\n{started.stderr[-3000:]}")
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([sys.executable, str(SCRIPT), "stop", "--dir", str(run_dir)], capture_output=True, timeout=60)


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
