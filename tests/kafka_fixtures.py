"""A real Kafka broker for the tests, started by the session via `scripts/kafka`.

`TICKTAPE_KAFKA=HOST:PORT` uses a running broker instead. Without Java (or without Maven
and no cached jars) the Kafka tests are skipped locally with the reason, but in CI (`CI`
set) they fail: CI must never silently skip the real-broker tests.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "kafka"


def _rdkafka_available() -> bool:
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        return False
    return True


KAFKA_BACKENDS = ["kafka", "kafka+rdkafka"] if _rdkafka_available() or os.environ.get("CI") else ["kafka"]
"""Tape URI schemes the contract suite also runs on (confluent-kafka is in the dev extra)."""


class KafkaBroker:
    """One single-node broker process managed through `scripts/kafka` in its own directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.address: str | None = None
        atexit.register(self._atexit)  # a safety net if teardown never runs (e.g. a hard interrupt)

    def _run(self, command: str, timeout: float = 180) -> str:
        proc = subprocess.run([sys.executable, str(SCRIPT), command, "--dir", str(self.dir)],
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"scripts/kafka {command} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""

    def start(self) -> str:
        """Format fresh storage, start, wait until ready; return HOST:PORT."""
        self.address = self._run("start")
        return self.address

    def kill(self) -> None:
        """SIGKILL the broker (for fault tests)."""
        self._run("kill")

    def restart_same(self) -> str:
        """Start again on the same port and data after a kill or stop."""
        self.address = self._run("restart-same")
        return self.address

    def stop(self) -> None:
        """SIGTERM (controlled shutdown), SIGKILL after 30 s."""
        if self.address is not None:
            self._run("stop", timeout=60)
            self.address = None

    def _atexit(self) -> None:
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            self.stop()

    def log_tail(self, lines: int = 40) -> str:
        """The end of the broker's log, for failure messages."""
        try:
            return "\n".join((self.dir / "kafka.log").read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def missing_prerequisite() -> str | None:
    """Why a broker cannot be started here, or None."""
    if not SCRIPT.exists():
        return f"{SCRIPT} is missing"
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        return "Java 17+ is not installed (needed to run the Kafka broker); set TICKTAPE_KAFKA=HOST:PORT instead"
    cache = Path(os.environ.get("TICKTAPE_KAFKA_CACHE") or REPO / ".cache" / "kafka")
    if not any(cache.glob("*/.complete")) and not shutil.which("mvn"):
        return "Maven is not installed and no Kafka jars are cached (scripts/kafka fetch needs mvn)"
    return None


def start_broker(directory: Path) -> KafkaBroker:
    """Start a broker in `directory`; skip (locally) or fail (CI) when that is impossible here."""
    reason = missing_prerequisite()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Kafka tests on a real broker, but: {reason}", pytrace=False)
        pytest.skip(reason)
    broker = KafkaBroker(directory)
    try:
        broker.start()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        broker._atexit()
        pytest.fail(f"could not start the Kafka broker: {exc}\n{broker.log_tail()}", pytrace=False)
    return broker


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """HOST:PORT of the session's broker: $TICKTAPE_KAFKA, or one started for the whole session."""
    given = os.environ.get("TICKTAPE_KAFKA")
    if given:
        yield given
        return
    broker = start_broker(tmp_path_factory.mktemp("kafka-session"))
    try:
        assert broker.address is not None
        yield broker.address
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_tape_uri(kafka_broker: str) -> Callable[[str], str]:
    """`uri(backend)` -> the base tape URI of that Kafka backend on the session broker."""

    def uri(backend: str) -> str:
        if backend not in ("kafka", "kafka+rdkafka"):
            raise ValueError(f"not a Kafka backend: {backend}")
        return f"{backend}://{kafka_broker}"

    return uri
