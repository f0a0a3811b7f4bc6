"""Followers of a file tape see every record exactly once, across segment rolls and writer crashes.

A follower may look at a segment while the writer is still filling it; the writer then adds
its last blocks and rolls to a new segment. Refreshing only the newest segment skipped those
blocks (and `mirror --follow` then refused to resume). Here real writer processes roll
segments hundreds of times, and are SIGKILLed and restarted, under an in-process follower,
`ticktape cat --follow` and `ticktape mirror --follow`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import make_trades
from ticktape.events import Event
from ticktape.tape.file import FileTape

REPO = Path(__file__).resolve().parents[2]
TOPIC = "md.trade"

_WRITER = textwrap.dedent("""
    import random, sys, time
    from ticktape.tape.file import FileTape
    from tests.conftest import make_trades

    root, seed, batches, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    rng = random.Random(seed)
    tape = FileTape(root, segment_bytes=int(sys.argv[5]))
    done = tape.end_offsets("md.trade").get(0, 0)  # a restarted writer goes on from the tape's end
    for _ in range(batches):
        batch = make_trades(rng.randint(1, 40), start=done)
        tape.append("md.trade", batch)
        done += len(batch)
        print(done, flush=True)  # acknowledged
        time.sleep(rng.random() * pause)
""")


def _writer(root: Path, seed: int, batches: int, pause: float, segment_bytes: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _WRITER, str(root), str(seed), str(batches), str(pause),
                             str(segment_bytes)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.slow
def test_a_follower_sees_every_record_once_across_hundreds_of_rolls(tmp_path: Path) -> None:
    root = tmp_path / "tape"
    FileTape(root).create_topic(TOPIC)
    seen: list[tuple[int, Event]] = []
    stop = threading.Event()

    def follow() -> None:
        reader = FileTape(root)
        for r in reader.read(TOPIC, follow=True, poll_interval=0.001):
            seen.append((r.offset, r.event))
            if stop.is_set() and len(seen) >= total:
                break
        reader.close()

    total = 1 << 62
    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    # ~30 KB segments: the header (~25 KB) and a few blocks, so the writer rolls every few appends
    writer = _writer(root, 1, 500, 0.002, 30_000)
    out, _ = writer.communicate(timeout=300)
    assert writer.returncode == 0
    total = int(out.split()[-1])
    stop.set()
    follower.join(timeout=60)
    rolls = len(list((root / TOPIC / "0").glob("*.avro"))) - 1
    assert rolls >= 100, f"only {rolls} segment rolls"
    assert [o for o, _ in seen] == list(range(total)), "the follower skipped or repeated records"
    assert [e for _, e in seen] == make_trades(total)


@pytest.mark.slow
def test_cat_and_mirror_follow_a_writer_killed_again_and_again(tmp_path: Path) -> None:
    """Every acknowledged record reaches `cat --follow` and the mirror exactly once; the mirror resumes."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    FileTape(src).create_topic(TOPIC)
    cli = [sys.executable, "-m", "ticktape"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cat_out = open(tmp_path / "cat.jsonl", "w")  # noqa: SIM115 - closed below
    cat = subprocess.Popen([*cli, "--tape", f"file:{src}", "cat", TOPIC, "--follow"], stdout=cat_out,
                           stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    mirror = subprocess.Popen([*cli, "mirror", "--from", f"file:{src}", "--to", f"file:{dst}", "--follow",
                               "--interval", "0.02", "--batch-size", "57"], stderr=subprocess.PIPE, text=True,
                              cwd=REPO, env=env)
    rng = random.Random(7)
    acknowledged = 0
    try:
        for round_ in range(8):
            writer = _writer(src, round_, 200, 0.003, 30_000)
            assert writer.stdout is not None
            if round_ < 7:
                time.sleep(0.3 + rng.random())
                os.kill(writer.pid, signal.SIGKILL)
            writer.wait(timeout=300)
            lines = writer.stdout.read().split()
            if lines:
                acknowledged = int(lines[-1])
        tape = FileTape(src)
        on_tape = [r.event for r in tape.read(TOPIC)]
        tape.close()
        assert len(on_tape) >= acknowledged and on_tape == make_trades(len(on_tape))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            mirrored = FileTape(dst).end_offsets(TOPIC).get(0, 0) if (dst / TOPIC).exists() else 0
            printed = (tmp_path / "cat.jsonl").read_text().count("\n")
            if mirrored >= len(on_tape) and printed >= len(on_tape):
                break
            time.sleep(0.1)
        time.sleep(0.3)  # anything extra (a repeat) would show up now
    finally:
        for proc in (cat, mirror):
            proc.terminate()
            proc.wait(timeout=30)
        cat_out.close()
    assert mirror.returncode in (0, -signal.SIGTERM), mirror.stderr.read() if mirror.stderr else ""
    rows = [json.loads(line) for line in (tmp_path / "cat.jsonl").read_text().splitlines()]
    assert [r["offset"] for r in rows] == list(range(len(on_tape))), "cat --follow skipped or repeated records"
    assert [r["trade_id"] for r in rows] == [e.trade_id for e in on_tape]  # type: ignore[attr-defined]
    assert [r.event for r in FileTape(dst).read(TOPIC)] == on_tape, "the mirror is not the source"


def test_a_follower_reads_an_empty_segment_that_a_writer_replaced(tmp_path: Path) -> None:
    """An empty last segment of another codec is replaced under its own name (same base offset):
    a reader holding the old file must switch to the new one."""
    from ticktape.tape.repair import repair

    root = tmp_path / "tape"
    with FileTape(root, compression="zstd") as tape:
        tape.append(TOPIC, make_trades(100))
    (segment,) = (root / TOPIC / "0").glob("*.avro")
    data = bytearray(segment.read_bytes())
    data[40] ^= 0x20  # a damaged header: repair quarantines the segment, an empty one starts at 100
    segment.write_bytes(bytes(data))
    repair(FileTape(root, compression="none"))  # so the empty successor is uncompressed
    follower = FileTape(root)
    assert list(follower.read(TOPIC)) == [] and follower.end_offsets(TOPIC) == {0: 100}
    with FileTape(root) as writer:  # the topic's zstd: the empty uncompressed segment is replaced
        writer.append(TOPIC, make_trades(3, start=100))
    assert [r.offset for r in follower.read(TOPIC)] == [100, 101, 102]
    follower.close()
