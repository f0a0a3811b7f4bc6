"""Reading one topic-partition of the file tape: its segments, their block index, decoding.

A segment is an Avro container file plus an `.idx` file with one entry per block (`index.py`:
position, offsets, ts_events, size and CRC32C). The index is an accelerator, checked against
the data: blocks completed but not yet indexed (a writer between its two writes, or killed
there) are found by scanning for complete blocks, and a block counts only once its sync
marker is there. Every block read is checked against its checksum.

What follows the last complete block of a segment is either a torn (or still being
written) block — no sync marker in it, and no index entry for it — or damage: bytes that
hold a sync marker (blocks follow them), or an index entry whose block the file no longer
holds (truncated). A torn tail is invisible to readers and cut by the next writer; damage
stops every reader and writer with an error naming the file and offset, until
`ticktape repair` quarantines it. `PartitionWriter` (in `file.py`) is the only code that writes.
"""

from __future__ import annotations

import bisect
import io
import operator
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import crc32c
import fastavro
from fastavro.read import SchemaResolutionError

from ticktape import avro_program as ap
from ticktape.codec import VM, Codec, make_converter
from ticktape.errors import DecodeError, TapeError
from ticktape.events import RECORD_TYPES, Event
from ticktape.tape.base import PartitionInfo
from ticktape.tape.container import SYNC_SIZE, Compress, Header, contains_sync, decompressor, probe_block, read_header
from ticktape.tape.index import V1, V1_ENTRY, V2, V2_ENTRY, BlockInfo, index_version, parse_entries
from ticktape.tape.legacy import Resolver, legacy_plan, resolve_entries

__all__ = ["BlockInfo", "EntryDecoder", "PartitionLog", "Segment", "segment_name"]

REPAIR_HINT = "run `ticktape repair` to quarantine it (nothing is deleted)"
CHUNK = 32
"""Records decoded at a time by `Segment.read_chunks`: small enough that a chunk's objects stay in the
CPU's caches until the reader is done with them, large enough that the per-call cost does not show."""
_SEGMENT_NAME = re.compile(r"^\d{20}\.avro$")


def segment_name(base: int) -> str:
    """The file name of the segment whose first offset is `base`."""
    return f"{base:020d}.avro"


class EntryDecoder:
    """Decodes the records of a block, for one segment's writer schema."""

    def __init__(self, codec: Codec, header: Header, where: str) -> None:
        self.where = where
        current = codec.registry.entry_schema()
        written = header.meta.get("ticktape.fingerprints", "").split(",")
        # An older version whose bodies the current one writes byte for byte (only enum symbols
        # appended) needs no resolution either: its branch decodes with the writer's own union.
        known = {v.fingerprint.hex() for v in codec.registry.current.values()}
        known |= {fp.hex() for fp in codec.registry.same_body}
        self.resolvers: dict[type, Resolver] = {}
        as_today = header.schema == current or (written != [""] and set(written) <= known)
        plan = None if as_today else legacy_plan(codec, header.schema, written)
        if as_today or plan is not None:
            # Decode with a program compiled from the writer's own union (its branch numbers): no
            # resolution when every type in it is at its current version; otherwise only the records
            # of the types that changed are resolved (`legacy`), the rest keeps this speed.
            if plan is None:
                prog = ap.compile_schema(header.schema, RECORD_TYPES)
            else:
                prog, self.resolvers = plan
            self.prog = prog
            self.slow = False
            if VM is None:
                self.py = ap.make_decoder(prog)
        else:
            # Written with older schema versions: resolve each record through today's types.
            self.slow = True
            self.writer = fastavro.parse_schema(header.schema)
            self.reader = fastavro.parse_schema(current)
            self.converters = {f"ticktape.{n}": make_converter(codec.registry.current[n].schema)
                               for n in codec.registry.names()}

    def decode(self, buf: bytes | memoryview, count: int, first_offset: int) -> list[tuple[str | None, Event]]:
        """Every (key, event) of a block's data."""
        if self.slow:
            entries = self._decode_at(buf, 0, count, first_offset)[0]
        else:
            entries, end = self._decode_at(buf, 0, count, first_offset)
            self._check_end(buf, end, first_offset)
        return entries

    def decode_chunks(self, buf: bytes | memoryview, count: int, first_offset: int,
                      chunk: int = CHUNK) -> Iterator[list[tuple[str | None, Event]]]:
        """The entries of `decode`, `chunk` at a time, decoded as they are asked for.

        A block holds ~1,000 records: decoded whole, that is ~1,000 MarketBooks (~40 MB of objects when
        their ladders do not repeat) alive at once, allocated in memory that is cold by the time a reader
        gets to them. A chunk at a time, a reader that drops the events it has passed lets the next chunk
        reuse the same, cache-warm memory: on 200 distinct Betfair markets that decodes ~1.7x faster and
        keeps the peak low. The same checks as `decode`; a block that turns out corrupt part way raises
        after the chunks before the bad record (the index only lists blocks that decoded whole, and
        `read_block_data` checks their checksum first, so that takes a file changed under the reader).
        """
        if self.slow or count <= chunk:
            yield self.decode(buf, count, first_offset)
            return
        pos = 0
        left = count
        while left > 0:
            n = min(chunk, left)
            try:
                entries, pos = self._decode_at(buf, pos, n, first_offset)
            except DecodeError:
                # the words of the error name the record by its index in the block, as `decode` does
                self.decode(buf, count, first_offset)
                raise
            left -= n
            if left == 0:
                self._check_end(buf, pos, first_offset)
            yield entries

    def _decode_at(self, buf: bytes | memoryview, pos: int, count: int,
                   first_offset: int) -> tuple[list[tuple[str | None, Event]], int]:
        """`count` entries from byte `pos` of a block's data, and the position after them (the slow
        path decodes the whole block: pos 0, and returns -1 for the position)."""
        try:
            if self.slow:
                return self._decode_slow(buf, count), -1
            if VM is not None:
                entries, end = VM.decode_many(self.prog, buf, pos, count)
            else:
                data = cast(bytes, buf)  # the Python engine reads any buffer (struct.unpack_from, bytes(a slice))
                entries = []
                for _ in range(count):
                    entry, pos = self.py(data, pos)
                    entries.append(entry)
                end = pos
            if self.resolvers:
                entries = resolve_entries(entries, self.resolvers)
        except SchemaResolutionError as exc:
            raise DecodeError(f"block at offset {first_offset} holds a record the current schemas cannot read "
                              f"(unknown type or incompatible version): {str(exc)[:200]}", where=self.where) from exc
        except (ValueError, TypeError, EOFError, IndexError, KeyError) as exc:
            raise DecodeError(f"corrupt block at offset {first_offset}: {exc}", where=self.where) from exc
        return entries, end

    def _check_end(self, buf: bytes | memoryview, end: int, first_offset: int) -> None:
        if end != len(buf):
            raise DecodeError(f"block at offset {first_offset} has {len(buf) - end} stray bytes",
                              where=self.where)

    def decode_one(self, buf: bytes, pos: int, offset: int) -> tuple[tuple[str | None, Event], int]:
        """The (key, event) starting at `pos` of a block's data, and the position after it.

        Record-by-record access to a block that fails as a whole: the records before a
        corrupt one can still be read (after it, record boundaries are unknown).
        """
        try:
            if self.slow:
                stream = io.BytesIO(buf)
                stream.seek(pos)
                rec: Any = fastavro.schemaless_reader(stream, self.writer, self.reader, return_record_name=True)
                name, body = rec["event"]
                return (rec["key"], self.converters[name](body, "")), stream.tell()
            if VM is not None:
                entries, end = VM.decode_many(self.prog, buf, pos, 1)
            else:
                entry, end = self.py(buf, pos)
                entries = [entry]
            if self.resolvers:
                entries = resolve_entries(entries, self.resolvers)
            return entries[0], end
        except SchemaResolutionError as exc:
            raise DecodeError(f"record at offset {offset} cannot be read with the current schemas "
                              f"(unknown type or incompatible version): {str(exc)[:200]}", where=self.where) from exc
        except Exception as exc:  # any library error here means this record cannot be read
            raise DecodeError(f"corrupt record at offset {offset}: {exc}", where=self.where) from exc

    def _decode_slow(self, buf: bytes | memoryview, count: int) -> list[tuple[str | None, Event]]:
        stream = io.BytesIO(buf)
        out = []
        for _ in range(count):
            rec: Any = fastavro.schemaless_reader(stream, self.writer, self.reader, return_record_name=True)
            name, body = rec["event"]
            out.append((rec["key"], self.converters[name](body, "")))
        return out


class Segment:
    """One container file and its block index, as far as it is complete and intact."""

    def __init__(self, path: Path, base: int, codec: Codec, where: str) -> None:
        self.path = path
        self.idx_path = path.with_suffix(".idx")
        self.base = base
        self.codec = codec
        self.where = where
        self.blocks: list[BlockInfo] = []
        self.header: Header | None = None
        self.decoder: EntryDecoder | None = None
        self.decompress: Compress | None = None  # from the header's avro.codec
        self._file: BinaryIO | None = None
        self.scanned_to = 0  # file position up to which complete blocks are known
        self.idx_pos = 0  # bytes of the index read (or written by this process's writer)
        self.idx_ino: int | None = None  # the index file those bytes came from (a writer may replace it)
        self.idx_version: int | None = None
        self.idx_damaged = False  # an index entry failed its checksum: the data is scanned instead
        self.sealed = False  # a later segment exists: nothing will be added to this one
        self.damage: str | None = None  # why the bytes after the last complete block are damage

    @property
    def end_offset(self) -> int:
        last = self.blocks[-1] if self.blocks else None
        return last.first_offset + last.records if last else self.base

    @property
    def valid_end(self) -> int:
        return self.scanned_to

    def file(self) -> BinaryIO:
        if self._file is None:
            self._file = open(self.path, "rb")  # noqa: SIM115 - kept open for the segment's life
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def refresh(self, ts_max_before: int) -> list[BlockInfo]:
        """Pick up blocks completed since the last call; return those that had no index entry.

        Damage (a header, an index entry or bytes that are not what a writer leaves) is
        recorded in `self.damage`, not raised: the caller decides how loud to be.
        """
        if not self.blocks and self._file is not None and self._replaced():
            # An empty segment is the one a writer may replace under the same name (a new one of
            # another codec or schema starts at the same offset): read the new file.
            self.close()
            self.header, self.scanned_to, self.idx_ino = None, 0, None
        f = self.file()
        if self.header is None:
            if os.fstat(f.fileno()).st_size == 0:
                return []  # created by a version that wrote headers in place, and killed at once
            try:
                self.header = read_header(f, "")
            except DecodeError as exc:
                self.damage = str(exc)
                return []
            self.decoder = EntryDecoder(self.codec, self.header, self.where)
            self.decompress = decompressor(self.header.codec)
            self.scanned_to = self.header.size
        if self.damage is not None:
            return []
        # The index first, the data's size after: an entry is written after its block, so
        # every entry read here describes bytes that this size already covers.
        entries = self._new_index_entries()
        size = os.fstat(f.fileno()).st_size
        self._add_indexed(entries, size)
        if self.damage is not None:
            return []
        return self._scan(size, ts_max_before)

    def _replaced(self) -> bool:
        """Whether the segment's name now stands for another file than the one open."""
        assert self._file is not None
        try:
            return os.stat(self.path).st_ino != os.fstat(self._file.fileno()).st_ino
        except FileNotFoundError:
            return False

    def _new_index_entries(self) -> list[BlockInfo]:
        """Index entries appended since the last call (all of them again if the file was replaced)."""
        try:
            fi = open(self.idx_path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return []
        with fi:
            ino = os.fstat(fi.fileno()).st_ino
            if ino != self.idx_ino:  # rewritten (by a writer's recovery): read it from the start
                self.idx_ino, self.idx_pos, self.idx_version, self.idx_damaged = ino, 0, None, False
            if self.idx_damaged:
                return []
            fi.seek(self.idx_pos)
            data = fi.read()
        if self.idx_version is None:
            self.idx_version = index_version(data)
            if self.idx_version is None:
                return []
            if self.idx_version == V2:
                data = data[8:]
                self.idx_pos = 8
        parsed = parse_entries(data, self.idx_version)
        self.idx_damaged = parsed.damaged
        return parsed.entries

    def _add_indexed(self, entries: list[BlockInfo], size: int) -> None:
        """Believe the index entries that continue the known blocks and lie within the data."""
        for info in entries:
            self.idx_pos += V2_ENTRY.size if self.idx_version == V2 else V1_ENTRY.size
            if info.first_offset < self.end_offset:
                continue  # found earlier by scanning
            if info.first_offset != self.end_offset or info.pos != self.scanned_to:
                self.idx_damaged = True  # not consistent with the data: scanning decides
                return
            if self.idx_version == V1:
                info = info._replace(size=self._measured_size(info, size))
                if info.size == 0:
                    return  # a torn block that the old writer had indexed: scanning decides
            elif info.end > size:
                self.damage = (f"the index lists a block at offset {info.first_offset} (bytes {info.pos}.."
                               f"{info.end}) but the file ends at byte {size}: the segment was truncated")
                return
            self.blocks.append(info)
            self.scanned_to = info.end

    def _measured_size(self, info: BlockInfo, size: int) -> int:
        """A v1-indexed block's size, read from its framing; 0 if the file does not hold all of it."""
        if info.pos >= size:
            return 0
        f = self.file()
        f.seek(info.pos)
        head = f.read(20)
        try:
            _, p = ap._read_long(head, 0)
            n, p = ap._read_long(head, p)
        except ValueError:
            return 0
        end = info.pos + p + n + SYNC_SIZE
        return end - info.pos if n >= 0 and end <= size else 0

    def _scan(self, size: int, ts_max_before: int) -> list[BlockInfo]:
        """Complete blocks beyond the index (writer killed between its writes, index lost), then the tail."""
        unindexed: list[BlockInfo] = []
        assert self.header is not None
        sync = self.header.sync
        f = self.file()
        f.seek(self.scanned_to)
        tail = f.read(size - self.scanned_to)
        pos = 0
        ts_max = self.blocks[-1].ts_max if self.blocks else ts_max_before
        while True:
            block = probe_block(tail, pos, sync)
            if block is None:
                break
            try:
                data = self._inflated(tail[block.data_pos:block.data_pos + block.data_size], self.end_offset)
                entries = self._decoder().decode(data, block.records, self.end_offset)
            except DecodeError as exc:
                self.damage = (f"the block at byte {self.scanned_to + pos} (offset {self.end_offset}) cannot be "
                               f"read: {exc}")
                break
            ts = [e[1].ts_event for e in entries]
            ts_max = max(ts_max, max(ts))
            info = BlockInfo(self.end_offset, self.scanned_to + pos, block.records, ts[0], ts[-1], ts_max,
                             block.end - pos, crc32c.crc32c(tail[pos:block.end]))
            self.blocks.append(info)
            unindexed.append(info)
            pos = block.end
        self.scanned_to += pos
        rest = tail[pos:]  # a torn block, one being written, or damage
        if self.damage is None and contains_sync(rest, sync):
            self.damage = (f"bytes {self.scanned_to}..{size} after the block ending at offset {self.end_offset} "
                           "do not form a block, but blocks follow them: the segment is damaged there")
        return unindexed

    def _inflated(self, data: bytes, first_offset: int) -> bytes:
        """A block's record bytes from its stored (possibly compressed) data."""
        if self.decompress is None:
            return data
        try:
            return self.decompress(data)
        except ValueError as exc:
            assert self.header is not None
            raise DecodeError(f"block at offset {first_offset} does not decompress ({self.header.codec}): {exc}",
                              where=self.where) from exc

    def _decoder(self) -> EntryDecoder:
        assert self.decoder is not None
        return self.decoder

    def read_block(self, index: int) -> list[tuple[str | None, Event]]:
        """Decode the records of the `index`-th block."""
        info = self.blocks[index]
        return self._decoder().decode(self._record_view(index), info.records, info.first_offset)

    def read_chunks(self, index: int, chunk: int = CHUNK) -> Iterator[list[tuple[str | None, Event]]]:
        """The records of the `index`-th block, decoded `chunk` at a time as they are asked for (see
        `EntryDecoder.decode_chunks`): for readers that pass over the events once."""
        info = self.blocks[index]
        return self._decoder().decode_chunks(self._record_view(index), info.records, info.first_offset, chunk)

    def read_block_data(self, index: int) -> bytes:
        """The record bytes of the `index`-th block, checked and decompressed (e.g. to salvage a
        corrupt one record by record)."""
        return bytes(self._record_view(index))

    def _record_view(self, index: int) -> bytes | memoryview:
        """`read_block_data`, as a view into the bytes read when the block is not compressed: the
        decoders take any buffer, and a copy of a ~6 MB block costs ~5% of a Betfair backtest."""
        info = self.blocks[index]
        f = self.file()
        f.seek(info.pos)
        raw = f.read(info.size)
        problem = self.block_problem(info, raw)
        if problem is not None:
            raise DecodeError(f"block at offset {info.first_offset} (byte {info.pos}) {problem}; the segment "
                              f"is damaged: {REPAIR_HINT}", where=self.where)
        _, p = ap._read_long(raw, 0)
        n, p = ap._read_long(raw, p)
        if self.decompress is None:
            return memoryview(raw)[p:p + n]
        return self._inflated(raw[p:p + n], info.first_offset)

    def block_problem(self, info: BlockInfo, raw: bytes) -> str | None:
        """What is wrong with a block's bytes `raw` (read from `info.pos`), or None."""
        if len(raw) != info.size:
            return f"is cut short: {len(raw)} of its {info.size} bytes are there"
        if info.crc is not None and crc32c.crc32c(raw) != info.crc:
            return "fails its checksum"
        assert self.header is not None
        try:
            count, p = ap._read_long(raw, 0)
            n, p = ap._read_long(raw, p)
        except ValueError:
            count, n, p = -1, -1, 0
        if count != info.records or p + n + SYNC_SIZE != info.size or raw[-SYNC_SIZE:] != self.header.sync:
            return "does not match its index"
        return None


_segment_base = operator.attrgetter("base")
_block_start = operator.attrgetter("first_offset")


class PartitionLog:
    """The segments of one topic-partition (a reader's view; the writer extends it)."""

    def __init__(self, directory: Path, topic: str, partition: int, codec: Codec) -> None:
        self.dir = directory
        self.topic = topic
        self.partition = partition
        self.codec = codec
        self.segments: list[Segment] = []
        self.refresh()

    def where(self, segment: Path | None = None) -> str:
        base = f"topic {self.topic} partition {self.partition}"
        return f"{base} ({segment})" if segment else base

    def refresh(self) -> None:
        """Discover new segments and the new complete blocks of every segment not yet sealed.

        A segment is sealed once a later one was listed before it was read: the writer only
        starts a segment after its last block in the previous one, so that read saw them all.
        (Refreshing only the last segment would miss blocks a roll had followed.) Raises
        DecodeError naming the file and offset when a segment is damaged.
        """
        self._discover()
        ts_max = -(1 << 63)
        last = len(self.segments) - 1
        for i, seg in enumerate(self.segments):
            if not seg.sealed:
                seg.refresh(ts_max)
                if seg.damage is not None:
                    raise DecodeError(f"{seg.damage}; {REPAIR_HINT}", where=seg.where)
                seg.sealed = i < last
            if seg.blocks:
                ts_max = seg.blocks[-1].ts_max

    def _discover(self) -> None:
        """Add the segment files that appeared since the last look, in base-offset order."""
        if not self.dir.is_dir():
            return
        known = {s.base for s in self.segments}
        added = False
        for path in self.dir.glob("*.avro"):
            if not _SEGMENT_NAME.match(path.name):
                raise TapeError(f"{self.where()}: stray file {path} in the partition directory: a segment is named "
                                "by its base offset in 20 digits (00000000000000001000.avro); move it elsewhere")
            base = int(path.stem)
            if base not in known:
                self.segments.append(Segment(path, base, self.codec, self.where(path)))
                added = True
        if added:
            self.segments.sort(key=lambda s: s.base)

    @property
    def start_offset(self) -> int:
        return self.segments[0].base if self.segments else 0

    @property
    def end_offset(self) -> int:
        return self.segments[-1].end_offset if self.segments else 0

    @property
    def ts_max(self) -> int:
        for seg in reversed(self.segments):
            if seg.blocks:
                return seg.blocks[-1].ts_max
        return -(1 << 63)

    def locate(self, offset: int) -> tuple[int, int]:
        """(segment index, block index) of the block holding `offset` (or the next one)."""
        # bisect with a key: no list of every block's offset per call (a follower reading the tail of a
        # segment of many small blocks did that on every look)
        si = max(bisect.bisect_right(self.segments, offset, key=_segment_base) - 1, 0)
        while si < len(self.segments):
            seg = self.segments[si]
            bi = max(bisect.bisect_right(seg.blocks, offset, key=_block_start) - 1, 0)
            if seg.blocks and seg.blocks[bi].first_offset + seg.blocks[bi].records > offset:
                return si, bi
            if seg.blocks and seg.blocks[-1].first_offset + seg.blocks[-1].records > offset:
                return si, bi + 1
            si += 1
        return len(self.segments), 0

    def offset_for_time(self, ts: int) -> int:
        """First offset whose ts_event >= ts: binary search on the running max, then a scan."""
        for si, seg in enumerate(self.segments):
            if seg.blocks and seg.blocks[-1].ts_max >= ts:
                maxes = [b.ts_max for b in seg.blocks]
                bi = bisect.bisect_left(maxes, ts)
                for i, (_, event) in enumerate(seg.read_block(bi)):
                    if event.ts_event >= ts:
                        return seg.blocks[bi].first_offset + i
                del si
        return self.end_offset

    def close(self) -> None:
        for seg in self.segments:
            seg.close()

    def info(self) -> PartitionInfo:
        first = next((s.blocks[0].ts_first for s in self.segments if s.blocks), None)
        last = next((s.blocks[-1].ts_last for s in reversed(self.segments) if s.blocks), None)
        return PartitionInfo(self.partition, self.start_offset, self.end_offset, first, last)
