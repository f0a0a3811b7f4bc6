"""Damaged file tapes: no acknowledged event is lost, altered or hidden without an error naming it.

Truncations and single-byte flips at random positions of every segment and index of a
partition (sealed segments and the last one, uncompressed and zstd), then a reader, a writer
and `ticktape repair`. After each: every acknowledged event reads back exactly once, or the
read stops with an error naming the damaged file, having yielded only a correct prefix; a
writer never cuts intact bytes; repair keeps every block it can verify at its offset, moves
the damaged file untouched to the quarantine, and never hands out an offset twice.
"""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_trades, segment_header_bytes
from ticktape.errors import DecodeError, TapeError, TicktapeError
from ticktape.events import Event, Trade
from ticktape.tape.container import read_header
from ticktape.tape.file import FileTape
from ticktape.tape.index import INDEX_MAGIC, V2, parse_entries
from ticktape.tape.repair import repair

REPO = Path(__file__).resolve().parents[2]
TOPIC = "md.trade"
BATCHES = [37, 50, 12, 50, 1, 50, 44, 50, 50, 20, 50, 50]  # 12 blocks over 3 segments
ORIGINAL = make_trades(sum(BATCHES))


def _build(root: Path, compression: str) -> None:
    # 3 segments of 3-5 blocks each (the header alone is ~25 KB)
    room = {"none": 8_594, "zstd": 2_589}[compression]
    tape = FileTape(root, segment_bytes=segment_header_bytes(compression) + room, compression=compression)
    start = 0
    for n in BATCHES:
        tape.append(TOPIC, ORIGINAL[start:start + n])
        start += n
    tape.close()


@pytest.fixture(scope="module", params=["none", "zstd"])
def pristine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp(f"pristine-{request.param}") / "tape"
    _build(root, request.param)
    assert len(_files(root, "*.avro")) == 3, "the suite needs sealed segments and a last one"
    assert all(len(_blocks(seg)) >= 3 for seg in _files(root, "*.avro"))
    return root


def _files(root: Path, pattern: str) -> list[Path]:
    return sorted((root / TOPIC / "0").glob(pattern))


def _read(root: Path) -> tuple[list[tuple[int, Event]], TicktapeError | None]:
    got: list[tuple[int, Event]] = []
    tape = FileTape(root)
    try:
        for r in tape.read(TOPIC):
            got.append((r.offset, r.event))
    except TicktapeError as exc:
        return got, exc
    finally:
        tape.close()
    return got, None


def _check_read(root: Path, expected: list[Trade], damaged: Path) -> bool:
    """Reads give exactly `expected`, or a correct prefix and an error naming the file; True if complete."""
    got, error = _read(root)
    assert got == list(enumerate(expected))[:len(got)], "a read returned an event that is not the acknowledged one"
    if error is None:
        assert len(got) == len(expected), "a read stopped early without an error"
        return True
    assert f"topic {TOPIC} partition 0" in str(error), error
    if damaged.suffix == ".avro":
        assert str(damaged) in str(error), f"the error does not name {damaged.name}: {error}"
    return False


def _damage(root: Path, target: Path, kind: str, rng: random.Random) -> str:
    data = bytearray(target.read_bytes())
    if kind == "truncate":
        cut = rng.randint(1, len(data))
        target.write_bytes(bytes(data[:-cut]))
        return f"cut {cut} of {len(data)} bytes"
    # Half the flips anywhere, half among the blocks (the header is most of a small segment).
    start = _header_size(target) if target.suffix == ".avro" and rng.random() < 0.5 else 0
    at = rng.randrange(start, len(data))
    data[at] ^= rng.randint(1, 255)
    target.write_bytes(bytes(data))
    return f"flipped byte {at} of {len(data)}"


def _header_size(segment: Path) -> int:
    with open(segment, "rb") as f:
        return read_header(f, str(segment)).size


def _check_writer(root: Path, expected: list[Trade], damaged: Path) -> list[Trade]:
    """A writer appends after the damage or refuses naming it; it never cuts intact bytes."""
    before = {p: p.read_bytes() for p in _files(root, "*.avro")}
    marker = make_trades(3, start=len(ORIGINAL))
    tape = FileTape(root)
    try:
        tape.append(TOPIC, marker)
        appended = True
    except TapeError as exc:
        assert f"{TOPIC} partition 0" in str(exc), exc
        appended = False
    finally:
        tape.close()
    for path, data in before.items():
        assert path.read_bytes()[:len(data)] == data, f"the writer changed {path.name}"
    return expected + marker if appended else expected


def _check_repair(root: Path, damaged_copy: dict[str, bytes]) -> None:
    """Repair leaves a readable partition of verified events at their offsets and reuses no offset."""
    tape = FileTape(root)
    reports = repair(tape)
    tape.close()
    for report in reports:
        assert report.quarantined is not None
        assert Path(report.quarantined).read_bytes() == damaged_copy[report.segment], "quarantine altered the file"
    got, error = _read(root)
    assert error is None, f"still unreadable after repair: {error}"
    original = dict(enumerate(ORIGINAL))
    offsets = [o for o, _ in got]
    assert offsets == sorted(set(offsets)), "an offset twice after repair"
    assert all(original.get(o) == e or o >= len(ORIGINAL) for o, e in got), "repair moved an event to another offset"
    lost = {o for r in reports for lo, hi in r.lost for o in range(lo, hi)}
    assert set(original) - {o for o, _ in got} <= lost, "events vanished that the report does not list"
    tape = FileTape(root)
    first = tape.append(TOPIC, make_trades(1, start=10_000))[0].offset
    tape.close()
    assert first >= len(ORIGINAL), f"after repair a new event got offset {first}, which was already used"


CASES_PER_FILE = {("*.avro", "flip"): 40, ("*.avro", "truncate"): 15, ("*.idx", "flip"): 15, ("*.idx", "truncate"): 5}


@pytest.mark.parametrize(("pattern", "kind"), list(CASES_PER_FILE))
def test_damage_is_read_exactly_or_named(pristine: Path, tmp_path: Path, pattern: str, kind: str) -> None:
    """≥ 225 cases per compression over 3 segments and 3 indexes; each with a reader, a writer and repair."""
    rng = random.Random(f"{pristine}-{pattern}-{kind}")
    checked = 0
    for file_index in range(len(_files(pristine, pattern))):
        for case in range(CASES_PER_FILE[(pattern, kind)]):
            root = tmp_path / f"{file_index}-{case}" / "tape"
            shutil.copytree(pristine, root)
            target = _files(root, pattern)[file_index]
            what = _damage(root, target, kind, rng)
            try:
                complete = _check_read(root, ORIGINAL, target)
                if pattern == "*.idx":
                    assert complete, "an index is an accelerator: its damage must not stop readers"
                if pattern == "*.avro" and kind == "truncate":
                    assert not complete, "acknowledged bytes were cut and nobody said so"
                expected = _check_writer(root, ORIGINAL, target)
                _check_read(root, expected, target)
                _check_repair(root, {p.name: p.read_bytes() for p in _files(root, "*.avro")})
            except AssertionError as exc:
                raise AssertionError(f"{target.name}, {what}: {exc}") from exc
            checked += 1
            shutil.rmtree(root.parent)
    assert checked >= 3 * CASES_PER_FILE[(pattern, kind)]


@pytest.mark.parametrize("blocks_cut", [1, 2])
def test_a_cut_exactly_at_a_block_boundary_is_named_and_repaired(pristine: Path, tmp_path: Path,
                                                                 blocks_cut: int) -> None:
    """Every byte left verifies, so only the index shows the loss: readers name it and repair fixes it.
    (Found by the random cuts above: one that removed exactly the last block left repair with
    nothing to do and the partition unreadable.)"""
    for file_index in range(len(_files(pristine, "*.avro"))):
        root = tmp_path / f"{file_index}" / "tape"
        shutil.copytree(pristine, root)
        target = _files(root, "*.avro")[file_index]
        pos, _ = _blocks(target)[-blocks_cut]
        target.write_bytes(target.read_bytes()[:pos])
        try:
            assert not _check_read(root, ORIGINAL, target), "acknowledged blocks were cut and nobody said so"
            expected = _check_writer(root, ORIGINAL, target)
            _check_read(root, expected, target)
            _check_repair(root, {p.name: p.read_bytes() for p in _files(root, "*.avro")})
        except AssertionError as exc:
            raise AssertionError(f"{target.name}, cut at block boundary {pos}: {exc}") from exc


def _ten_block_tape(root: Path) -> Path:
    tape = FileTape(root)
    for i in range(10):
        tape.append(TOPIC, make_trades(100, start=i * 100))
    tape.close()
    (seg,) = _files(root, "*.avro")
    return seg


def _blocks(seg: Path) -> list[tuple[int, int]]:
    """(position, size) of each block, from the segment's index."""
    entries = parse_entries(seg.with_suffix(".idx").read_bytes()[len(INDEX_MAGIC):], V2).entries
    return [(e.pos, e.size) for e in entries]


def test_lost_index_and_a_flipped_sync_byte_in_block_3_is_damage_not_a_torn_tail(tmp_path: Path) -> None:
    root = tmp_path / "tape"
    seg = _ten_block_tape(root)
    pos, size = _blocks(seg)[2]
    seg.with_suffix(".idx").unlink()
    data = bytearray(seg.read_bytes())
    data[pos + size - 1] ^= 0x01  # the last byte of block 3's sync marker
    seg.write_bytes(bytes(data))
    with pytest.raises(DecodeError, match=rf"{seg}.*bytes {pos}\.\.{len(data)}.*damaged.*ticktape repair"):
        list(FileTape(root).read(TOPIC))
    with pytest.raises(TapeError, match="not appending"):
        FileTape(root).append(TOPIC, make_trades(1))
    assert seg.read_bytes() == bytes(data), "the 7 intact blocks after the damage must stay"
    (report,) = repair(FileTape(root))
    assert (report.kept_blocks, report.kept_records, report.lost) == (9, 900, [(200, 300)])
    got = [(r.offset, r.event) for r in FileTape(root).read(TOPIC)]
    assert got == [(o, e) for o, e in enumerate(make_trades(1000)) if not 200 <= o < 300]


def test_a_damaged_header_of_a_lone_segment_is_refused_then_quarantined_and_offsets_not_reused(tmp_path: Path) -> None:
    root = tmp_path / "tape"
    seg = _ten_block_tape(root)
    data = bytearray(seg.read_bytes())
    data[40] ^= 0x20  # inside the schema JSON
    seg.write_bytes(bytes(data))
    with pytest.raises(DecodeError, match=rf"{seg}.*header.*damaged"):
        list(FileTape(root).read(TOPIC))
    with pytest.raises(TapeError, match="header"):
        FileTape(root).append(TOPIC, make_trades(1))
    assert seg.read_bytes() == bytes(data)
    (report,) = repair(FileTape(root))
    assert report.lost == [(0, 1000)] and not report.estimated  # the end from the index
    assert Path(report.quarantined or "").read_bytes() == bytes(data)
    tape = FileTape(root)
    assert list(tape.read(TOPIC)) == []
    assert tape.append(TOPIC, make_trades(1))[0].offset == 1000


def test_a_truncated_last_segment_with_its_index_intact_is_refused_not_acknowledged(tmp_path: Path) -> None:
    root = tmp_path / "tape"
    seg = _ten_block_tape(root)
    seg.write_bytes(seg.read_bytes()[:-500])  # into block 10, whose index entry stays
    with pytest.raises(TapeError, match=r"offset 900 .*truncated"):
        FileTape(root).append(TOPIC, make_trades(1, start=1000))
    (report,) = repair(FileTape(root))
    assert report.lost == [(900, 1000)]
    tape = FileTape(root)
    assert [r.event for r in tape.read(TOPIC)] == make_trades(900)
    assert tape.append(TOPIC, make_trades(1, start=1000))[0].offset == 1000


def test_a_flipped_mantissa_bit_is_a_checksum_error_not_a_wrong_price(tmp_path: Path) -> None:
    root = tmp_path / "tape"
    tape = FileTape(root)
    trade = make_trades(1)[0]._replace(price=150.0)
    tape.append(TOPIC, [trade, *make_trades(9, start=1)])
    tape.close()
    (seg,) = _files(root, "*.avro")
    data = bytearray(seg.read_bytes())
    at = data.index(struct.pack("<d", 150.0))
    data[at + 6] ^= 0x01  # a mantissa bit: 150.0 -> 158.0
    assert struct.unpack_from("<d", data, at)[0] == 158.0
    seg.write_bytes(bytes(data))
    with pytest.raises(DecodeError, match=r"block at offset 0 .*fails its checksum"):
        list(FileTape(root).read(TOPIC))


def test_only_a_torn_tail_is_cut_and_repair_leaves_it_to_the_writer(tmp_path: Path) -> None:
    root = tmp_path / "tape"
    seg = _ten_block_tape(root)
    with open(seg, "ab") as f:
        f.write(b"\x02\x80\x01partial block, no sync marker")
    assert repair(FileTape(root)) == []
    tape = FileTape(root)
    assert tape.append(TOPIC, make_trades(1, start=1000))[0].offset == 1000
    assert len(tape.torn_tails) == 1


def test_a_sealed_segment_damaged_in_the_middle_keeps_its_blocks_after_repair(tmp_path: Path) -> None:
    root = tmp_path / "tape"
    _build(root, "none")
    first = _files(root, "*.avro")[0]
    pos, size = _blocks(first)[1]
    data = bytearray(first.read_bytes())
    data[pos + size // 2] ^= 0xFF
    first.write_bytes(bytes(data))
    (report,) = repair(FileTape(root))
    lo, hi = BATCHES[0], BATCHES[0] + BATCHES[1]
    assert report.lost == [(lo, hi)] and not report.estimated
    got = [(r.offset, r.event) for r in FileTape(root).read(TOPIC)]
    assert got == [(o, e) for o, e in enumerate(ORIGINAL) if not lo <= o < hi]
    moved = Path(report.quarantined or "")
    assert moved.read_bytes() == bytes(data) and moved.with_suffix(".idx").exists()
    assert moved.with_suffix(".report.json").exists()


def test_repair_refuses_while_a_writer_runs(tmp_path: Path) -> None:
    root = tmp_path / "tape"
    writer = FileTape(root)
    writer.append(TOPIC, make_trades(1))
    with pytest.raises(TapeError, match="has a writer running"):
        repair(FileTape(root))
    writer.close()


def test_new_segments_carry_a_header_checksum(tmp_path: Path) -> None:
    root = tmp_path / "tape"
    FileTape(root).append(TOPIC, make_trades(1))
    (seg,) = _files(root, "*.avro")
    with open(seg, "rb") as f:
        assert read_header(f, str(seg)).checksummed


def test_repair_command_reports_then_repairs(tmp_path: Path) -> None:
    root = tmp_path / "tape"
    seg = _ten_block_tape(root)
    pos, size = _blocks(seg)[4]
    data = bytearray(seg.read_bytes())
    data[pos + size // 2] ^= 0x40
    seg.write_bytes(bytes(data))
    cli = [sys.executable, "-m", "ticktape", "--tape", f"file:{root}"]
    dry = subprocess.run([*cli, "repair", "--dry-run"], capture_output=True, text=True, cwd=REPO)
    assert dry.returncode == 0, dry.stderr
    assert "offsets lost: 400..499" in dry.stdout and "(dry run)" in dry.stdout
    assert seg.read_bytes() == bytes(data)
    done = subprocess.run([*cli, "repair", TOPIC], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "fails its checksum; keeps 900 events in 9 blocks; offsets lost: 400..499; moved to" in done.stdout
    again = subprocess.run([*cli, "repair"], capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 0 and "no damage found" in again.stderr
    assert len(list(FileTape(root).read(TOPIC))) == 900
