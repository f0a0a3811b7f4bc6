"""What only the embedded file tape promises: crash safety, one writer, segments, Avro files."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import fastavro
import pytest

from tests.conftest import make_trades, segment_header_bytes
from ticktape.codec import HEADER_SIZE, VM, Codec
from ticktape.demo import synthetic_betfair
from ticktape.errors import WriterLockedError
from ticktape.events import CustomData
from ticktape.schemas import SchemaRegistry, default_schema_dir
from ticktape.tape import Encoded
from ticktape.tape.base import SINGLE_OBJECT_HEADER, partition_for
from ticktape.tape.container import read_header
from ticktape.tape.file import FileTape, Segment

REPO = Path(__file__).resolve().parents[2]


def test_segments_are_plain_avro_files(tmp_path: Path) -> None:
    tape = FileTape(tmp_path)
    events = make_trades(100)
    tape.append("md.trade", events[:60])
    tape.append("md.trade", events[60:])
    (segment,) = tape.segment_paths("md.trade")
    with open(segment, "rb") as f:
        records = list(fastavro.reader(f, return_record_name=True))
    assert len(records) == 100
    name, body = records[42]["event"]
    assert name == "ticktape.Trade" and body["trade_id"] == "42" and records[42]["key"] == "BTCUSDT"


def test_segments_roll_and_index_seeks(tmp_path: Path) -> None:
    tape = FileTape(tmp_path, segment_bytes=20_000)
    events = make_trades(5_000, step=10)
    for i in range(0, 5_000, 100):
        tape.append("md.trade", events[i:i + 100])
    paths = tape.segment_paths("md.trade")
    assert len(paths) > 5
    assert int(paths[1].stem) > 0  # named by base offset
    reader = FileTape(tmp_path)
    decoded: list[int] = []
    original = Segment.read_block

    def counting(self: Segment, index: int) -> list:  # type: ignore[type-arg]
        decoded.append(index)
        return original(self, index)

    Segment.read_block = counting  # type: ignore[method-assign]
    try:
        assert next(reader.read("md.trade", from_offset=4_321)).event == events[4_321]
        assert reader.offset_for_time("md.trade", 0, events[3_999].ts_event) == 3_999
    finally:
        Segment.read_block = original  # type: ignore[method-assign]
    assert len(decoded) <= 3, "seeking must use the index, not scan from the start"
    assert [r.event for r in reader.read("md.trade")] == events


def test_second_writer_is_refused(tmp_path: Path) -> None:
    a = FileTape(tmp_path)
    a.append("md.trade", make_trades(1))
    b = FileTape(tmp_path)
    with pytest.raises(WriterLockedError, match=r"topic md.trade partition 0 already has a writer \(pid \d+\)"):
        b.append("md.trade", make_trades(1))
    assert len(list(b.read("md.trade"))) == 1  # readers are fine
    a.close()
    b.append("md.trade", make_trades(1, start=1))  # the lock is released on close
    assert [r.offset for r in b.read("md.trade")] == [0, 1]


def test_writer_in_another_process_is_refused(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from ticktape.tape.file import FileTape
        from tests.conftest import make_trades
        t = FileTape({str(tmp_path)!r}); t.append("md.trade", make_trades(1))
        print("ready", flush=True); time.sleep(60)
    """)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(WriterLockedError, match=f"pid {holder.pid}"):
            FileTape(tmp_path).append("md.trade", make_trades(1))
    finally:
        holder.kill()
        holder.wait()
    FileTape(tmp_path).append("md.trade", make_trades(1))  # a dead writer's lock is gone


def _torn_copy(tmp_path: Path, keep_fraction: float, compression: str = "none") -> tuple[Path, int]:
    """A tape of 10 complete batches plus the first part of an 11th block (a torn write)."""
    src = tmp_path / "src"
    tape = FileTape(src, compression=compression)
    events = make_trades(1_100)
    for i in range(0, 1_000, 100):
        tape.append("md.trade", events[i:i + 100])
    seg = tape.segment_paths("md.trade")[0]
    size_before = seg.stat().st_size
    tape.append("md.trade", events[1_000:])
    tape.close()
    full = seg.read_bytes()
    cut = size_before + max(1, int((len(full) - size_before) * keep_fraction))
    seg.write_bytes(full[:cut])
    # the 11th index entry may or may not have been written: drop it to model the worst case
    idx = seg.with_suffix(".idx")
    idx.write_bytes(idx.read_bytes()[:10 * 48])
    return src, cut - size_before


@pytest.mark.parametrize("compression", ["none", "zstd"])
@pytest.mark.parametrize("keep_fraction", [0.0001, 0.5, 0.999])
def test_torn_tail_is_reported_and_cut(tmp_path: Path, keep_fraction: float, compression: str) -> None:
    src, torn_bytes = _torn_copy(tmp_path, keep_fraction, compression)
    reader = FileTape(src)
    assert [r.event for r in reader.read("md.trade")] == make_trades(1_000)  # readers skip the torn block
    writer = FileTape(src, compression=compression)
    writer.append("md.trade", make_trades(1, start=1_000))
    assert len(writer.torn_tails) == 1
    torn = writer.torn_tails[0]
    assert (torn.topic, torn.partition, torn.bytes_cut) == ("md.trade", 0, torn_bytes)
    assert [r.event for r in FileTape(src).read("md.trade")] == make_trades(1_001)


def test_unindexed_complete_block_is_kept(tmp_path: Path) -> None:
    """Killed between the block write and its index entry: the block is complete, so it stays."""
    src, _ = _torn_copy(tmp_path, 1.0)
    writer = FileTape(src)
    assert [r.offset for r in writer.read("md.trade")][-1] == 1_099
    writer.append("md.trade", make_trades(1, start=1_100))
    assert writer.torn_tails == []
    assert [r.event for r in FileTape(src).read("md.trade")] == make_trades(1_101)


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_sigkill_mid_append_keeps_every_complete_batch(tmp_path: Path, compression: str) -> None:
    """A real writer process killed with SIGKILL at random points while appending big batches."""
    script = textwrap.dedent(f"""
        from ticktape.tape.file import FileTape
        from tests.conftest import make_trades
        tape = FileTape({str(tmp_path)!r}, compression={compression!r})
        i = 0
        while True:
            tape.append("md.trade", make_trades(20_000, start=i))
            i += 20_000
            print(i, flush=True)
    """)
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        acknowledged = int(proc.stdout.readline())  # at least one batch acknowledged
        time.sleep(0.05 + 0.1 * attempt)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        rest = proc.stdout.read().split()
        if rest:
            acknowledged = int(rest[-1])
        tape = FileTape(tmp_path)
        tape.append("md.trade", [])  # no-op append: opens nothing
        events = [r.event for r in tape.read("md.trade")]
        assert len(events) >= acknowledged, "an acknowledged batch was lost"
        assert len(events) % 20_000 == 0, "only whole batches may survive"
        assert events == make_trades(len(events))
        # open as writer (repairs), append a marker batch so the next round continues from a clean tail
        tape.append("md.trade", make_trades(0))
        tape.close()
        shutil.rmtree(tmp_path)
        tmp_path.mkdir()


def test_segments_written_with_old_schemas_are_read_through_current(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    for p in default_schema_dir().glob("*.avsc"):
        shutil.copy(p, schemas / p.name)
    current = json.loads((schemas / "CustomData.v1.avsc").read_text())
    old = copy.deepcopy(current)
    old["fields"] = [f for f in old["fields"] if f["name"] != "content_type"]
    (schemas / "CustomData.v1.avsc").write_text(json.dumps(old))
    (schemas / "CustomData.v2.avsc").write_text(json.dumps(current))
    reg = SchemaRegistry.load(schemas)
    old_entry = reg.entry_schema([reg.history("CustomData")[0]])
    part = tmp_path / "tape" / "custom.tweets" / "0"
    part.mkdir(parents=True)
    (part.parent / "topic.json").write_text(json.dumps({"partitions": 1}))
    with open(part / f"{0:020d}.avro", "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(old_entry), [
            {"key": "k", "event": ("ticktape.CustomData", {"name": "tweet", "key": "k", "ts_event": i,
                                                          "ts_recv": i, "payload": str(i)})} for i in range(5)])
    tape = FileTape(tmp_path / "tape", codec=Codec(reg))
    got = [r.event for r in tape.read("custom.tweets")]
    assert got == [CustomData("tweet", "k", i, i, str(i), "application/json") for i in range(5)]


def test_corrupt_block_names_topic_partition_offset(tmp_path: Path) -> None:
    tape = FileTape(tmp_path)
    tape.append("md.trade", make_trades(10))
    tape.append("md.trade", make_trades(10, start=10))
    tape.close()
    seg = FileTape(tmp_path).segment_paths("md.trade")[0]
    data = bytearray(seg.read_bytes())
    # An entry is: key branch 1 (0x02), len 7 (0x0e), "BTCUSDT", event branch (Trade), ...
    # Break the event branch index of offset 10, the first entry of the second block.
    marker = b"\x02\x0eBTCUSDT"
    positions = [i for i in range(len(data)) if data.startswith(marker, i)]
    assert len(positions) == 20
    data[positions[10] + len(marker)] = 0x7F  # branch -64: no such union branch

    seg.write_bytes(bytes(data))
    from ticktape.errors import DecodeError

    with pytest.raises(DecodeError, match=r"topic md.trade partition 0 .*offset 10"):
        list(FileTape(tmp_path).read("md.trade"))


def test_adding_a_new_type_keeps_old_segments_on_the_fast_path(tmp_path: Path) -> None:
    """A segment written before a new event type existed still decodes without resolution."""
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    for p in default_schema_dir().glob("*.avsc"):
        if p.name != "FeedGap.v1.avsc":
            shutil.copy(p, schemas / p.name)
    FileTape(tmp_path / "tape", codec=Codec(SchemaRegistry.load(schemas))).append("md.trade", make_trades(10))
    reader = FileTape(tmp_path / "tape")  # today's registry: one more type in the union
    assert [r.event for r in reader.read("md.trade")] == make_trades(10)
    seg = reader._log("md.trade", 0).segments[0]
    assert seg.decoder is not None and not seg.decoder.slow



def test_appending_after_a_new_type_was_added_starts_a_new_segment(tmp_path: Path) -> None:
    """Today's entries number the union's branches differently from an older segment's header."""
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    for p in default_schema_dir().glob("*.avsc"):
        if p.name != "FeedGap.v1.avsc":  # sorts before Trade: Trade's branch index moves up by one
            shutil.copy(p, schemas / p.name)
    FileTape(tmp_path / "tape", codec=Codec(SchemaRegistry.load(schemas))).append("md.trade", make_trades(10))
    tape = FileTape(tmp_path / "tape")
    tape.append("md.trade", make_trades(10, start=10))
    codec = tape.codec
    tape.append_encoded("md.trade", [Encoded(t.instrument, t.ts_event, codec.encode(t))
                                     for t in make_trades(10, start=20)])
    assert [p.name for p in tape.segment_paths("md.trade")] == [f"{0:020d}.avro", f"{10:020d}.avro"]
    assert [r.event for r in FileTape(tmp_path / "tape").read("md.trade")] == make_trades(30)

@pytest.mark.parametrize("engine", ["c", "python"])
@pytest.mark.parametrize("partitions", [1, 3])
def test_append_encoded_writes_the_same_segment_bytes_as_append(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  engine: str, partitions: int) -> None:
    if engine == "python":
        monkeypatch.setattr("ticktape.tape.file.VM", None)  # `append` through the pure-Python encoder
    elif VM is None:
        pytest.skip("the C extension is not built")
    codec = Codec()
    assert SINGLE_OBJECT_HEADER == HEADER_SIZE
    betfair = synthetic_betfair(1)
    events = [e for i, t in enumerate(make_trades(40)) for e in (
        t._replace(instrument=f"SYM{i % 4}"), *betfair[i:i + 1],
        CustomData("tweet", f"k{i}", t.ts_event, t.ts_recv, "x" * (i * 37)))]  # bodies short and > 1 KB
    keys = [None if i % 7 == 0 else codec.key_of(e) for i, e in enumerate(events)]
    plain = FileTape(tmp_path / "plain", partitions=partitions, codec=codec)
    pre = FileTape(tmp_path / "encoded", partitions=partitions, codec=codec)
    for lo, hi in ((0, 50), (50, 51), (51, len(events))):
        expected = plain.append("md.mixed", events[lo:hi], keys=keys[lo:hi])
        items = [Encoded(keys[i], events[i].ts_event, codec.encode(events[i])) for i in range(lo, hi)]
        assert pre.append_encoded("md.mixed", items) == expected
    for p in range(partitions):
        a, b = plain.segment_paths("md.mixed", p), pre.segment_paths("md.mixed", p)
        assert len(a) == len(b) == 1
        assert _without_sync(a[0]) == _without_sync(b[0])
        assert list(pre.read_events("md.mixed", p)) == list(plain.read_events("md.mixed", p))


def _without_sync(path: Path) -> tuple[object, bytes]:
    """A segment's header metadata and its blocks with the random sync marker replaced (the sync,
    and the header checksum that covers it, are the only bytes two tapes may differ in)."""
    with open(path, "rb") as f:
        header = read_header(f, str(path))
    return (header.schema, header.meta), path.read_bytes()[header.size:].replace(header.sync, b"<sync>")


def test_a_batch_across_partitions_is_atomic_per_partition_only(tmp_path: Path) -> None:
    """SIGKILL mid-append of 4-partition batches: each partition holds its share of a batch whole or
    not at all (one block per partition), every acknowledged batch is whole everywhere, and a batch
    not acknowledged may show in some partitions only (documented: atomicity is per partition)."""
    script = textwrap.dedent(f"""
        from ticktape.tape.file import FileTape
        from tests.conftest import make_trades
        tape = FileTape({str(tmp_path)!r}, partitions=4)
        b = 0
        while True:
            batch = [t._replace(instrument=f"SYM{{i % 16}}", trade_id=f"{{b}}-{{i}}")
                     for i, t in enumerate(make_trades(8_000))]
            tape.append("md.trade", batch)
            print(b, flush=True)
            b += 1
    """)
    keys = [f"SYM{i % 16}" for i in range(8_000)]
    share = {p: {f"{i}" for i, k in enumerate(keys) if partition_for(k, 4) == p} for p in range(4)}
    assert all(share.values()), "every partition gets part of each batch"
    for attempt in range(6):
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        acknowledged = int(proc.stdout.readline())
        time.sleep(0.02 + 0.05 * attempt)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        rest = proc.stdout.read().split()
        acknowledged = int(rest[-1]) if rest else acknowledged
        tape = FileTape(tmp_path)
        present: dict[int, set[str]] = {}
        for p in range(4):
            ids: dict[str, set[str]] = {}
            for r in tape.read("md.trade", p):
                batch, i = r.event.trade_id.split("-")  # type: ignore[attr-defined]
                ids.setdefault(batch, set()).add(i)
            for batch, got in ids.items():
                assert got == share[p], f"batch {batch} is partly in partition {p}"
                present.setdefault(int(batch), set()).add(p)
        assert all(present.get(b) == {0, 1, 2, 3} for b in range(acknowledged + 1)), "an acknowledged batch is lost"
        tape.close()
        shutil.rmtree(tmp_path)
        tmp_path.mkdir()


def _as_written_before_checksums(root: Path, topic: str) -> None:
    """Rewrite a partition as versions before block checksums wrote it: headers without their
    checksum entry, 48-byte index entries without sizes and CRCs."""
    from ticktape import avro_program as ap
    from ticktape.tape.container import HEADER_CRC_KEY, MAGIC
    from ticktape.tape.index import INDEX_MAGIC, V1_ENTRY, V2, parse_entries

    for seg in sorted((root / topic / "0").glob("*.avro")):
        data = seg.read_bytes()
        with open(seg, "rb") as f:
            header = read_header(f, str(seg))
        entries = {"avro.schema": json.dumps(header.schema, separators=(",", ":")), "avro.codec": header.codec,
                   **{k: v for k, v in header.meta.items() if k != HEADER_CRC_KEY}}
        old = bytearray(MAGIC)
        ap._write_long(len(entries), old)
        for k, v in entries.items():
            for part in (k.encode(), v.encode()):
                ap._write_long(len(part), old)
                old += part
        old += b"\x00" + header.sync
        shift = len(old) - header.size
        blocks = parse_entries(seg.with_suffix(".idx").read_bytes()[len(INDEX_MAGIC):], V2).entries
        seg.write_bytes(bytes(old) + data[header.size:])
        seg.with_suffix(".idx").write_bytes(b"".join(
            V1_ENTRY.pack(b.first_offset, b.pos + shift, b.records, b.ts_first, b.ts_last, b.ts_max) for b in blocks))


def test_segments_from_before_checksums_are_read_and_the_last_index_upgraded(tmp_path: Path) -> None:
    from ticktape.tape.index import INDEX_MAGIC

    tape = FileTape(tmp_path, segment_bytes=40_000)
    events = make_trades(2_000)
    for i in range(0, 2_000, 200):
        tape.append("md.trade", events[i:i + 200])
    tape.close()
    _as_written_before_checksums(tmp_path, "md.trade")
    segments = FileTape(tmp_path).segment_paths("md.trade")
    assert len(segments) > 2 and not segments[-1].with_suffix(".idx").read_bytes().startswith(INDEX_MAGIC)
    assert [r.event for r in FileTape(tmp_path).read("md.trade", from_offset=1_234)] == events[1_234:]
    writer = FileTape(tmp_path)
    writer.append("md.trade", make_trades(5, start=2_000))
    assert writer.torn_tails == []
    assert segments[-1].with_suffix(".idx").read_bytes().startswith(INDEX_MAGIC)  # upgraded, with checksums
    assert not segments[0].with_suffix(".idx").read_bytes().startswith(INDEX_MAGIC)  # sealed ones stay as they are
    assert [r.event for r in FileTape(tmp_path).read("md.trade")] == make_trades(2_005)


def test_shared_appends_from_two_processes_take_turns(tmp_path: Path) -> None:
    """`append_shared` takes the partition's lock per call and lets go: two processes interleave, nothing lost."""
    import subprocess
    import sys

    tape = FileTape(tmp_path)
    tape.create_topic("shared")
    code = (
        "import sys\nfrom pathlib import Path\nfrom ticktape.tape.file import FileTape\n"
        "from tests.conftest import make_trades\n"
        "t = FileTape(Path(sys.argv[1]))\n"
        "for e in make_trades(300, instrument=sys.argv[2]):\n"
        "    t.append_shared('shared', [e])\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), name], cwd=REPO) for name in ("A", "B")]
    assert [p.wait(120) for p in procs] == [0, 0]
    events = [r.event for r in FileTape(tmp_path).read("shared")]
    assert len(events) == 600
    for name in ("A", "B"):
        assert [e for e in events if e.instrument == name] == make_trades(300, instrument=name)


def test_a_shared_append_waits_for_a_holding_writer_then_names_it(tmp_path: Path) -> None:
    holder = FileTape(tmp_path)
    holder.append("t", make_trades(1))  # keeps its writer (and the lock)
    other = FileTape(tmp_path)
    with pytest.raises(WriterLockedError, match=r"already has a writer \(pid \d+\)"):
        other.append_shared("t", make_trades(1), wait=0.05)
    holder.release("t")
    other.append_shared("t", make_trades(2))
    assert [r.offset for r in FileTape(tmp_path).read("t")] == [0, 1, 2]


def test_a_parked_shared_writer_is_reused_only_while_nobody_else_wrote(tmp_path: Path) -> None:
    a, b = FileTape(tmp_path), FileTape(tmp_path)
    a.append_shared("t", make_trades(1))
    parked = a._parked[("t", 0)][0]
    a.append_shared("t", make_trades(1, start=1))
    assert a._parked[("t", 0)][0] is parked  # nobody else wrote: the same writer, locked again
    b.append_shared("t", make_trades(1, start=2))
    a.append_shared("t", make_trades(1, start=3))  # b wrote meanwhile: a starts a fresh writer
    assert a._parked[("t", 0)][0] is not parked
    assert [r.event for r in FileTape(tmp_path).read("t")] == make_trades(4)


def test_the_change_token_moves_with_every_append_and_segment(tmp_path: Path) -> None:
    tape = FileTape(tmp_path, segment_bytes=segment_header_bytes() + 2_000)
    reader = FileTape(tmp_path)
    tape.append("t", make_trades(1))
    list(reader.read("t"))
    tokens = {reader.change_token("t", 0)}
    for i in range(1, 12):  # several segments
        tape.append("t", make_trades(5, start=i * 5))
        token = reader.change_token("t", 0)
        assert token not in tokens
        tokens.add(token)
        list(reader.read("t"))
    assert reader.change_token("t", 0) == reader.change_token("t", 0)


def test_a_block_is_written_in_chunks_byte_for_byte(tmp_path: Path) -> None:
    """`_pwrite_all` writes at most `chunk` bytes a call (multi-megabyte single writes cost the kernel
    ~5x): the file holds exactly what one write would, at the given position."""
    from ticktape.tape.file import _pwrite_all

    data = os.urandom(10_000) + bytes(range(256)) * 7
    for chunk in (1, 999, 4096, len(data), 1 << 20):
        path = tmp_path / f"chunked-{chunk}"
        fd = os.open(path, os.O_CREAT | os.O_RDWR)
        try:
            os.pwrite(fd, b"head", 0)
            _pwrite_all(fd, data, 4, chunk)
        finally:
            os.close(fd)
        assert path.read_bytes() == b"head" + data


def test_a_batch_larger_than_the_write_chunk_reads_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A multi-megabyte block goes down in calls of at most `WRITE_CHUNK` bytes (the real writes, counted)."""
    from ticktape.tape.file import WRITE_CHUNK

    sizes: list[int] = []
    real_pwrite = os.pwrite

    def counted(fd: int, data: bytes, pos: int) -> int:
        sizes.append(len(data))
        return real_pwrite(fd, data, pos)

    monkeypatch.setattr(os, "pwrite", counted)

    events = [CustomData("blob", "k", 1_000 + i, 1_000 + i, os.urandom(4_500).hex())
              for i in range(3 * WRITE_CHUNK // 9_000)]  # one block of ~3 write chunks
    tape = FileTape(tmp_path / "tape")
    tape.append("custom.blob", events)
    tape.close()
    monkeypatch.undo()
    assert max(sizes) == WRITE_CHUNK and sum(s == WRITE_CHUNK for s in sizes) >= 2
    tape = FileTape(tmp_path / "tape")
    assert list(tape.read_events("custom.blob")) == events
    tape.close()
