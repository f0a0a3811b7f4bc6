"""A full disk mid-append: the batch fails with one clear error, nothing half-written stays,
and the same writer carries on once there is space — every acknowledged event readable once.

Two real ways for `write()` to fail part-way: a small tmpfs filled by a filler file (a real
ENOSPC, needs permission to mount; skipped where there is none), and RLIMIT_FSIZE in a child
process (the kernel refuses to grow a file past the limit with EFBIG, no privileges needed).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import make_trades
from ticktape.errors import TapeError
from ticktape.events import Trade
from ticktape.tape.file import FileTape

REPO = Path(__file__).resolve().parents[2]
TOPIC = "md.trade"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """`mount(bytes) -> directory` on a fresh tmpfs of that size."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the RLIMIT_FSIZE test covers this")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.parametrize("seed", range(24))
def test_disk_full_then_space_freed(small_disk: Callable[[int], Path], seed: int) -> None:
    rng = random.Random(seed)
    disk = small_disk(1024 * 1024)
    compression = "zstd" if seed % 3 == 2 else "none"
    tape = FileTape(disk / "tape", segment_bytes=rng.choice([40_000, 60_000, 200_000]), compression=compression)
    tape.create_topic(TOPIC)
    filler = disk / "filler"
    # Leave a random amount of room: the disk fills in a block, an index entry or a new segment.
    filler.write_bytes(b"\0" * (shutil.disk_usage(disk).free - rng.randint(4_096, 160_000)))
    acknowledged: list[Trade] = []
    failures = 0
    for _ in range(400):
        batch = make_trades(rng.randint(1, 400), start=len(acknowledged))
        try:
            tape.append(TOPIC, batch)
        except TapeError as exc:
            assert "disk is full" in str(exc), exc
            assert "Traceback" not in str(exc) and "\n" not in str(exc)
            failures += 1
            if failures == 3:  # the same writer tried again twice on a full disk
                break
            continue
        acknowledged += batch
    assert failures == 3, "the disk never filled"
    filler.unlink()
    for _ in range(10):
        batch = make_trades(rng.randint(1, 400), start=len(acknowledged))
        tape.append(TOPIC, batch)
        acknowledged += batch
    assert [r.event for r in tape.read(TOPIC)] == acknowledged  # the same handle
    tape.close()
    reopened = FileTape(disk / "tape")
    assert [r.event for r in reopened.read(TOPIC)] == acknowledged  # a restart cuts nothing acknowledged
    reopened.append(TOPIC, make_trades(1, start=len(acknowledged)))
    assert reopened.torn_tails == []
    assert [r.event for r in reopened.read(TOPIC)] == make_trades(len(acknowledged) + 1)
    reopened.close()


_RLIMIT_WRITER = textwrap.dedent("""
    import random, resource, signal, sys
    from ticktape.errors import TapeError
    from ticktape.tape.file import FileTape
    from tests.conftest import make_trades

    root, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    tape = FileTape(root, segment_bytes=10_000_000)
    acknowledged = failures = 0
    resource.setrlimit(resource.RLIMIT_FSIZE, (rng.randint(30_000, 300_000), hard))
    while failures < 3:
        batch = make_trades(rng.randint(1, 400), start=acknowledged)
        try:
            tape.append("md.trade", batch)
            acknowledged += len(batch)
        except TapeError as exc:
            failures += 1
            print("failed:", exc, file=sys.stderr)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
    for _ in range(5):
        batch = make_trades(rng.randint(1, 400), start=acknowledged)
        tape.append("md.trade", batch)
        acknowledged += len(batch)
    print(acknowledged)
""")


@pytest.mark.parametrize("seed", range(6))
def test_file_size_limit_mid_append_then_lifted(tmp_path: Path, seed: int) -> None:
    done = subprocess.run([sys.executable, "-c", _RLIMIT_WRITER, str(tmp_path / "tape"), str(seed)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("failed:") == 3 and "File too large" in done.stderr
    acknowledged = int(done.stdout.split()[-1])
    tape = FileTape(tmp_path / "tape")
    assert [r.event for r in tape.read(TOPIC)] == make_trades(acknowledged)
    tape.append(TOPIC, make_trades(1, start=acknowledged))
    assert tape.torn_tails == []


def test_topic_creation_and_offset_commits_on_a_full_disk(small_disk: Callable[[int], Path]) -> None:
    disk = small_disk(256 * 1024)
    tape = FileTape(disk / "tape")
    tape.append(TOPIC, make_trades(10))
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # every last byte
        for chunk in (65_536, 4_096, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass
    with pytest.raises(TapeError, match=r"topic.json: the disk is full"):
        tape.append("md.other", make_trades(1))
    assert tape.partitions("md.other") == 0
    with pytest.raises(TapeError, match=r"cannot commit c's offset .*the disk is full"):
        tape.commit("c", TOPIC, 0, 5)
    assert tape.committed("c", TOPIC, 0) is None
    filler.unlink()
    tape.commit("c", TOPIC, 0, 5)
    tape.append("md.other", make_trades(1))
    assert (tape.committed("c", TOPIC, 0), tape.partitions("md.other")) == (5, 1)
    tape.close()
