"""Shared fixtures: tapes of every backend for the contract suite."""

from __future__ import annotations

import functools
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.mongo_fixtures import mongo_db_uri, mongo_server, mongo_uri  # noqa: F401
from tests.ray_fixtures import ray_cluster  # noqa: F401
from tests.shared_data import check_item
from ticktape.events import Trade
from ticktape.tape import Tape, open_tape

BACKENDS = ["file", "file+zstd"]
"""Backends the contract suite runs on; the Kafka fixtures (tests/kafka_fixtures.py) extend it.

`file+zstd` is the file tape writing zstd-compressed blocks (`file:PATH?compression=zstd`)."""

try:  # the Kafka backend and its broker fixture, when that part of the project is present
    from tests.kafka_fixtures import KAFKA_BACKENDS, kafka_broker, kafka_tape_uri  # noqa: F401

    BACKENDS += KAFKA_BACKENDS
except ImportError:
    pass

TapeFactory = Callable[..., Tape]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `shared_data` need the real recorded data: skipped without it, failed under CI."""
    check_item(item)


@pytest.fixture(params=BACKENDS)
def tape_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TapeFactory]:
    """`make(**options) -> Tape`: a new handle on one fresh, isolated tape per test.

    Calling it twice gives two handles on the same tape (to test reopening).
    """
    opened: list[Tape] = []
    backend = request.param
    if backend.startswith("file"):
        base = f"file:{tmp_path / 'tape'}" + ("?compression=zstd" if backend == "file+zstd" else "")
    else:
        base = request.getfixturevalue("kafka_tape_uri")(backend)

    def make(**options: object) -> Tape:
        tape = open_tape(base, **options)
        opened.append(tape)
        return tape

    make.backend = backend  # type: ignore[attr-defined]
    yield make
    for t in opened:
        t.close()


@pytest.fixture
def topic() -> str:
    """A topic name unique to the test (brokers are shared across tests)."""
    return f"t.{uuid.uuid4().hex[:12]}"


@functools.cache
def segment_header_bytes(compression: str = "none") -> int:
    """Bytes a file-tape segment spends before its first block (its header embeds every schema, so it
    grows as schemas are added): tests that size segments to hold N blocks add to this."""
    from ticktape.tape.file import FileTape

    with tempfile.TemporaryDirectory() as d:
        tape = FileTape(Path(d), compression=None if compression == "none" else compression)
        tape.append("probe", make_trades(1))
        pos = tape._log("probe", 0).segments[0].blocks[0].pos
        tape.close()
    return pos


def make_trades(n: int, start: int = 0, instrument: str = "BTCUSDT", ts0: int = 1_700_000_000_000_000_000,
                step: int = 1_000_000) -> list[Trade]:
    """Deterministic synthetic trades: event i has ts0 + i*step and trade_id str(i)."""
    return [Trade("binance", instrument, ts0 + i * step, ts0 + i * step + 5_000, 30_000.0 + (i % 100) * 0.5,
                  0.001 * (1 + i % 7), "BUY" if i % 2 else "SELL", str(i)) for i in range(start, start + n)]
