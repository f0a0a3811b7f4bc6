"""`ticktape repair`: move damaged segment bytes aside so a file-tape partition can be used again.

A damaged segment (a flipped bit, a truncated file, a header that does not parse) stops every
reader and writer of its partition with an error naming it. Repair is the explicit, offline
answer: it takes the partition's writer lock, checks every block of every segment, and for
each damaged segment

1. writes the blocks it can still verify (framing, checksum, or a full decode where no
   checksum is known) into new segment files, byte for byte, keeping their offsets;
2. moves the damaged segment and its index, untouched, to
   `ROOT/_quarantine/<time>/<topic>/<partition>/` with a `report.json` of what was lost;
3. puts the new segments in its place.

Nothing is deleted. Offsets are never reused: a lost range leaves a gap (readers skip gaps).
Offsets come from the index (its entries carry their own checksums), else from a damaged
block's own record count, else from the next segment's base counted backwards; failing all
three, the blocks after the damage are numbered from past the lost bytes (no run of records
can hold more records than bytes), so that no offset is ever given out twice.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import click
import crc32c

from ticktape import avro_program as ap
from ticktape.codec import Codec
from ticktape.errors import DecodeError, TapeError
from ticktape.tape.container import COMPRESSIONS, SYNC_SIZE, Header, decompressor, fsync_dir, probe_block, read_header
from ticktape.tape.file import FileTape, segment_header
from ticktape.tape.index import INDEX_MAGIC, V2, BlockInfo, index_bytes, index_version, parse_entries
from ticktape.tape.segment import EntryDecoder, segment_name

if TYPE_CHECKING:
    from ticktape.cli import Context

log = logging.getLogger("ticktape.tape.repair")


class Block(NamedTuple):
    """A block that verified: where it is in the damaged file and what it holds."""

    pos: int
    end: int
    records: int
    first_offset: int | None  # from the index; else None until `_number` gives it one
    ts: tuple[int, int]  # first, last ts_event


class Gap(NamedTuple):
    """Bytes between verified blocks (or after the last one) that are not a block."""

    pos: int
    end: int
    records: int | None  # a single damaged block's own record count, when its framing spans the gap


class SegmentReport(NamedTuple):
    """What repair found (and, unless a dry run, did) in one segment."""

    topic: str
    partition: int
    segment: str
    problem: str
    kept_blocks: int
    kept_records: int
    lost: list[tuple[int, int]]  # offset ranges [first, end) given up
    estimated: bool  # some offsets were inferred without the index (see the module doc)
    quarantined: str | None  # where the damaged files went (None: a dry run)


class _Verifier:
    """Checks blocks of one segment's bytes: framing, the index's checksum, and a full decode."""

    def __init__(self, data: bytes, header: Header, codec: Codec, where: str, indexed: dict[int, BlockInfo]) -> None:
        self.data = data
        self.sync = header.sync
        self.decoder = EntryDecoder(codec, header, where)
        self.inflate = decompressor(header.codec)
        self.indexed = indexed

    def block(self, pos: int) -> Block | str:
        """The block at `pos` if it verifies, else what is wrong with it."""
        probe = probe_block(self.data, pos, self.sync)
        if probe is None:
            return "not a complete block (bad framing or sync marker)"
        raw = self.data[pos:probe.end]
        entry = self.indexed.get(pos)
        if entry is not None and entry.crc is not None and (entry.size != len(raw) or crc32c.crc32c(raw) != entry.crc):
            return "fails its checksum"
        body = self.data[probe.data_pos:probe.data_pos + probe.data_size]
        try:
            if self.inflate is not None:
                body = self.inflate(body)
            entries = self.decoder.decode(body, probe.records, entry.first_offset if entry else -1)
        except (DecodeError, ValueError) as exc:
            return f"does not decode ({exc})"
        return Block(pos, probe.end, probe.records, entry.first_offset if entry else None,
                     (entries[0][1].ts_event, entries[-1][1].ts_event))

    def next_block(self, pos: int) -> int:
        """Where the first verifiable block after the damage at `pos` starts (len(data) if none does).

        Candidates: the damaged block's own framing end, each place just after a sync marker,
        and each indexed position; the nearest that verifies wins.
        """
        data = self.data
        candidates = {p for p in self.indexed if p > pos}
        framed = _framed_end(data, pos)
        if framed is not None:
            candidates.add(framed)
        at = data.find(self.sync, pos)
        while at >= 0:
            candidates.add(at + SYNC_SIZE)
            at = data.find(self.sync, at + 1)
        for cand in sorted(c for c in candidates if pos < c < len(data)):
            if isinstance(self.block(cand), Block):
                return cand
        return len(data)

    def parts(self, start: int) -> tuple[list[Block | Gap], str | None]:
        """The bytes from `start` on as verified blocks and gaps, and the first problem (None: intact)."""
        out: list[Block | Gap] = []
        problem: str | None = None
        pos = start
        while pos < len(self.data):
            block = self.block(pos)
            if isinstance(block, Block):
                out.append(block)
                pos = block.end
                continue
            problem = problem or f"the block at byte {pos} {block}"
            nxt = self.next_block(pos)
            count = _framed_count(self.data, pos) if _framed_end(self.data, pos) == nxt else None
            out.append(Gap(pos, nxt, count))
            pos = nxt
        return out, problem


def _framed_end(data: bytes, pos: int) -> int | None:
    """Where the block at `pos` ends by its own framing (however damaged it is otherwise)."""
    try:
        _, p = ap._read_long(data, pos)
        size, p = ap._read_long(data, p)
    except ValueError:
        return None
    return p + size + SYNC_SIZE if size >= 0 else None


def _framed_count(data: bytes, pos: int) -> int | None:
    try:
        count, _ = ap._read_long(data, pos)
    except ValueError:
        return None
    return count if 0 < count <= len(data) else None


def _number(parts: list[Block | Gap], base: int, end: int | None) -> tuple[list[Block], list[tuple[int, int]], bool]:
    """Give every verified block its offset: (blocks, lost offset ranges, whether any offset was estimated).

    `end` is the offset the segment ends at when known (the next segment's base, or the index's
    last entry): blocks after a gap of unknown size are counted back from it.
    """
    estimated = False
    offset = base
    blocks: list[Block] = []
    lost: list[tuple[int, int]] = []
    after_unknown_gap: int | None = None  # index in `blocks` of the first block after the last such gap
    gap: Gap | None = None
    for part in parts:
        if isinstance(part, Gap):
            gap = part
            continue
        first = part.first_offset
        if gap is not None:
            if first is None and gap.records is not None:
                first, estimated = offset + gap.records, True
            elif first is None:
                first, estimated = offset + (gap.end - gap.pos), True  # no run of records holds more records than bytes
                after_unknown_gap = len(blocks)
            lost.append((offset, first))
            gap = None
        first = offset if first is None else first
        blocks.append(part._replace(first_offset=first))
        offset = first + part.records
    if after_unknown_gap is not None and end is not None and parts and isinstance(parts[-1], Block):
        shift = offset - end  # the blocks after the gap end where the segment ends
        start = blocks[after_unknown_gap].first_offset
        assert start is not None
        gap_start = lost[-1][0]
        if start - shift >= gap_start:
            blocks[after_unknown_gap:] = [b._replace(first_offset=b.first_offset - shift)  # type: ignore[operator]
                                          for b in blocks[after_unknown_gap:]]
            lost[-1] = (gap_start, start - shift)
            offset = end
    if gap is not None:  # the segment ends in damage
        if end is None or end < offset:
            end, estimated = offset + (gap.end - gap.pos), True
        lost.append((offset, end))
    return blocks, [r for r in lost if r[1] > r[0]], estimated


def _index_entries(idx_path: Path) -> dict[int, BlockInfo]:
    """Intact v2 index entries by block position (empty for a missing or older index)."""
    try:
        data = idx_path.read_bytes()
    except FileNotFoundError:
        return {}
    if index_version(data) != V2:
        return {}
    return {e.pos: e for e in parse_entries(data[len(INDEX_MAGIC):], V2).entries}


def _runs(blocks: list[Block]) -> Iterator[list[Block]]:
    """Blocks in runs of contiguous offsets: each run becomes one segment."""
    run: list[Block] = []
    for b in blocks:
        if run and run[-1].first_offset + run[-1].records != b.first_offset:  # type: ignore[operator]
            yield run
            run = []
        run.append(b)
    if run:
        yield run


def _torn_tail(parts: list[Block | Gap], data: bytes, sync: bytes, indexed: dict[int, BlockInfo]) -> bool:
    """Whether the only damage is a torn last block (no sync marker, no index entry): a crash, not damage."""
    gaps = [p for p in parts if isinstance(p, Gap)]
    if len(gaps) != 1 or parts[-1] is not gaps[0]:
        return False
    tail = gaps[0]
    return data.find(sync, tail.pos) < 0 and not any(e.end > tail.pos for e in indexed.values())


def repair_partition(tape: FileTape, topic: str, partition: int, *, dry_run: bool = False,
                     stamp: str | None = None) -> list[SegmentReport]:
    """Check every segment of one partition; quarantine the damaged ones (see the module doc)."""
    directory = tape.root / topic / str(partition)
    stamp = stamp or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    reports: list[SegmentReport] = []
    with open(directory / "writer.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TapeError(f"topic {topic} partition {partition} has a writer running: stop it first") from None
        paths = sorted(directory.glob("*.avro"))
        for i, path in enumerate(paths):
            next_base = int(paths[i + 1].stem) if i + 1 < len(paths) else None
            found = _check_segment(tape, topic, partition, path, next_base)
            if found is None:
                continue
            report, staged = found
            if not dry_run:
                report = _quarantine(tape.root / "_quarantine" / stamp / topic / str(partition), path, report, staged)
            reports.append(report)
    return reports


Staged = list[tuple[bytes, bytes, Path]]
"""New segments to put in place: (segment bytes, index bytes, final path)."""


def _check_segment(tape: FileTape, topic: str, partition: int, path: Path, next_base: int | None
                   ) -> tuple[SegmentReport, Staged] | None:
    """What is damaged in one segment and the segments that would replace it; None if it is intact."""
    where = f"topic {topic} partition {partition} ({path})"
    base = int(path.stem)
    data = path.read_bytes()
    indexed = _index_entries(path.with_suffix(".idx"))
    indexed_end = max((e.first_offset + e.records for e in indexed.values()), default=None)
    end = next_base if next_base is not None else indexed_end
    try:
        with open(path, "rb") as f:
            header = read_header(f, "")
    except DecodeError as exc:
        lost = [(base, end if end is not None else base + len(data))]
        report = SegmentReport(topic, partition, path.name, f"the header: {exc}", 0, 0, lost, end is None, None)
        codec = COMPRESSIONS[tape.compression_of(topic)]  # the header that said it is unreadable
        return report, _successor(tape, topic, partition, path, lost[0][1], codec) if next_base is None else []
    parts, problem = _Verifier(data, header, tape.codec, where, indexed).parts(header.size)
    past_end = sorted(e.pos for e in indexed.values() if e.end > len(data))
    if past_end and (not parts or isinstance(parts[-1], Block)):
        # Cut exactly at a block boundary: every byte left verifies, but the index (which readers
        # trust) lists blocks the file no longer holds. Their offsets are lost, as after any cut.
        problem = problem or (f"the index lists a block at byte {past_end[0]} but the file ends at byte "
                              f"{len(data)} (truncated)")
        parts.append(Gap(len(data), len(data), None))
    if problem is None or (next_base is None and _torn_tail(parts, data, header.sync, indexed)):
        return None
    blocks, lost, estimated = _number(parts, base, end)
    report = SegmentReport(topic, partition, path.name, problem, len(blocks), sum(b.records for b in blocks),
                           lost, estimated, None)
    staged = _staged_segments(path, data, header, blocks)
    kept_end = blocks[-1].first_offset + blocks[-1].records if blocks else base  # type: ignore[operator]
    if next_base is None and lost and lost[-1][1] > kept_end:
        staged += _successor(tape, topic, partition, path, lost[-1][1], header.codec)
    return report, staged


def _staged_segments(path: Path, data: bytes, header: Header, blocks: list[Block]) -> Staged:
    """Each run of verified blocks as a new segment: the header and the blocks byte for byte."""
    staged = []
    ts_max = -(1 << 63)
    for run in _runs(blocks):
        pos = header.size
        infos = []
        for b in run:
            assert b.first_offset is not None
            ts_max = max(ts_max, *b.ts)
            infos.append(BlockInfo(b.first_offset, pos, b.records, b.ts[0], b.ts[1], ts_max, b.end - b.pos,
                                   crc32c.crc32c(data[b.pos:b.end])))
            pos += b.end - b.pos
        segment = data[:header.size] + b"".join(data[b.pos:b.end] for b in run)
        staged.append((segment, index_bytes(infos), path.with_name(segment_name(infos[0].first_offset))))
    return staged


def _successor(tape: FileTape, topic: str, partition: int, path: Path, base: int, avro_codec: str) -> Staged:
    """An empty segment starting after the lost offsets, so that appends never reuse them."""
    header = segment_header(tape.codec, topic, partition, base, avro_codec)
    return [(header, INDEX_MAGIC, path.with_name(segment_name(base)))]


def _quarantine(quarantine: Path, path: Path, report: SegmentReport, staged: Staged) -> SegmentReport:
    """Move the damaged segment (and its index) to `quarantine` and put `staged` in its place.

    The new files are written under temporary names first: at any moment the damaged bytes
    are either in place or in the quarantine, never only in memory.
    """
    quarantine.mkdir(parents=True, exist_ok=True)
    temporary = []
    for segment, index, final in staged:
        tmp = final.with_name(final.name + ".repairing")
        for target, content in ((tmp, segment), (tmp.with_name(tmp.name + ".idx"), index)):
            with open(target, "wb") as f:
                f.write(content)
                os.fsync(f.fileno())
        temporary.append((tmp, final))
    moved = quarantine / path.name
    os.replace(path, moved)
    if path.with_suffix(".idx").exists():
        os.replace(path.with_suffix(".idx"), moved.with_suffix(".idx"))
    report = report._replace(quarantined=str(moved))
    moved.with_suffix(".report.json").write_text(json.dumps(report._asdict(), indent=2) + "\n")
    for tmp, final in temporary:
        os.replace(tmp.with_name(tmp.name + ".idx"), final.with_suffix(".idx"))
        os.replace(tmp, final)
    fsync_dir(str(path.parent))
    log.warning("repaired %s: %s; kept %d records in %d blocks; lost offsets %s%s; the damaged files are in %s",
                path, report.problem, report.kept_records, report.kept_blocks, report.lost,
                " (estimated)" if report.estimated else "", quarantine)
    return report


def repair(tape: FileTape, topics: list[str] | None = None, *, dry_run: bool = False) -> list[SegmentReport]:
    """Repair every partition of `topics` (default: all) of a file tape."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = []
    for topic in topics or tape.topic_names():
        n = tape.partitions(topic)
        if n == 0:
            raise TapeError(f"no topic {topic!r} on {tape.uri}")
        for p in range(n):
            out += repair_partition(tape, topic, p, dry_run=dry_run, stamp=stamp)
    return out


@click.command("repair")
@click.argument("topics", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Report the damage, change nothing.")
@click.pass_obj
def repair_command(obj: Context, topics: tuple[str, ...], dry_run: bool) -> None:
    """Quarantine damaged segments of a file tape (all topics, or TOPICS) so it can be used again.

    Verified blocks stay, with their offsets; damaged files move, untouched, to
    ROOT/_quarantine/ with a report of the offsets lost. Stop the partition's writer first.
    """
    tape = obj.tape()
    if not isinstance(tape, FileTape):
        raise click.UsageError(f"repair works on file tapes; {tape.uri} is not one")
    reports = repair(tape, list(topics) or None, dry_run=dry_run)
    for r in reports:
        lost = ", ".join(f"{a}..{b - 1}" for a, b in r.lost) or "none"
        click.echo(f"{r.topic}/{r.partition} {r.segment}: {r.problem}; keeps {r.kept_records} events in "
                   f"{r.kept_blocks} blocks; offsets lost: {lost}{' (estimated)' if r.estimated else ''}"
                   + (f"; moved to {r.quarantined}" if r.quarantined else " (dry run)"))
    if not reports:
        click.echo("no damage found", err=True)


def register(cli: click.Group) -> None:
    """Attach `ticktape repair` to the CLI."""
    cli.add_command(repair_command)
