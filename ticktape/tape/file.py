"""The embedded `file:` tape: Avro container segments per topic-partition on local disk.

Layout::

    ROOT/<topic>/topic.json                      {"partitions": N}
    ROOT/<topic>/<partition>/<base offset>.avro  segment: an Avro container file
    ROOT/<topic>/<partition>/<base offset>.idx   block index: one entry per block, with its CRC32C
    ROOT/<topic>/<partition>/writer.lock         flock'ed by the one writer
    ROOT/_consumers/<name>.json                  committed offsets

An `append` to a partition writes exactly one Avro block at the end of the last complete one,
then its index entry. A block is visible to readers only once complete (its sync marker is
there), so a writer killed mid-append loses at most that batch; on the next writer open the
torn tail is reported and cut back to the last complete block. A write that fails (a full
disk) is cut back at once, and the next append starts from what the files hold. Damage (bytes
that no writer leaves: a flipped bit, a truncated file) is reported, never cut:
`segment.py` tells the two apart, `repair.py` quarantines damage on request.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any, NamedTuple

import crc32c

from ticktape import avro_program as ap
from ticktape.codec import VM, Codec, default_codec
from ticktape.errors import DecodeError, TapeError, WriterLockedError
from ticktape.events import RECORD_TYPES, Event
from ticktape.tape.base import (
    SINGLE_OBJECT_HEADER,
    TOPIC_RE,
    Encoded,
    Positions,
    Record,
    TopicInfo,
    check_partitions,
    check_topic,
    encoded_keys,
    header_index,
    route_batch,
    split_encoded,
    whole_option,
)
from ticktape.tape.container import COMPRESSIONS, Body, compressor, encode_block, encode_header, fsync_dir
from ticktape.tape.index import INDEX_MAGIC, V2, V2_ENTRY, BlockInfo, index_bytes, pack_entry
from ticktape.tape.segment import REPAIR_HINT, EntryDecoder, PartitionLog, Segment, segment_name

__all__ = ["BlockInfo", "EntryDecoder", "FileTape", "PartitionLog", "PartitionWriter", "Segment", "TornTail"]

log = logging.getLogger("ticktape.tape.file")

_TOPIC_RE = TOPIC_RE  # consumer names follow the topic rule too
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024

BlockEncoder = Callable[[Sequence[int] | None], tuple[Body, Sequence[int]]]
"""`(indices of the batch, None = all) -> (their encoded entries, their ts_events)`."""
_VIEW_FROM = 1024
"""`append_encoded` slices bodies out of single-object bytes this long on average, views longer ones."""
_BODY = slice(SINGLE_OBJECT_HEADER, None)


def _splice(keys: Sequence[str | None], prefixes: Sequence[bytes], datas: Sequence[bytes],
            key_entries: dict[str | None, bytes]) -> list[bytes | memoryview]:
    """`TapeEntry` records from single-object encodings, as pieces for `encode_block` to join.

    Per item: its encoded key, its union branch, its body without the 10-byte header. The
    lists are filled by `map` (no Python bytecode per item); the bodies are sliced when small
    and viewed when big (~1 KB and up on average: a memoryview costs more than a short copy),
    so each byte is copied once, into the block.
    """
    n = len(datas)
    chunks: list[bytes | memoryview] = [b""] * (3 * n)
    chunks[0::3] = map(key_entries.__getitem__, keys)
    chunks[1::3] = prefixes
    if sum(map(len, datas)) < _VIEW_FROM * n:
        chunks[2::3] = map(bytes.__getitem__, datas, repeat(_BODY))
    else:
        chunks[2::3] = map(_body_view, datas)
    return chunks


def _body_view(data: bytes) -> memoryview:
    return memoryview(data)[SINGLE_OBJECT_HEADER:]


class TornTail(NamedTuple):
    """A torn tail found (and cut) when a writer opened a partition."""

    topic: str
    partition: int
    segment: str
    bytes_cut: int


WRITE_CHUNK = 1 << 20
"""Bytes per `pwrite` call at most. One call per multi-megabyte block cost the kernel ~5x the CPU of
the same bytes in 1 MiB calls (measured on this project's VM, Linux 6.x, ext4: 240 MB written as 33
blocks of 7.5 MB took 0.23-0.47 s of system time, in 1 MiB calls 0.07-0.09 s; 4 MiB calls were
already slow at times): the Betfair import's 1000-book blocks spent a quarter of its CPU there."""


def _pwrite_all(fd: int, data: bytes, pos: int, chunk: int = WRITE_CHUNK) -> None:
    """Write all of `data` at `pos`, at most `chunk` bytes a call (a full disk may take part of it and
    then raise OSError)."""
    view = memoryview(data)
    done = 0
    while done < len(data):
        n = os.pwrite(fd, view[done:done + chunk], pos + done)
        if n <= 0:
            raise OSError(errno.EIO, f"write returned {n}")
        done += n


def _write_new_file(path: Path, data: bytes, fsync: bool) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def segment_header(codec: Codec, topic: str, partition: int, base: int, avro_codec: str) -> bytes:
    """The header of a new segment of today's entry schema, with a fresh sync marker."""
    meta = {"ticktape.topic": topic, "ticktape.partition": str(partition), "ticktape.base_offset": str(base),
            # which version of each type the union holds: lets readers take the fast path
            # as long as those versions are still current, even after new types are added
            "ticktape.fingerprints": ",".join(codec.registry.current[n].fingerprint.hex()
                                              for n in codec.registry.names())}
    return encode_header(codec.registry.entry_schema(), meta, os.urandom(16), avro_codec)


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    return exc.strerror or str(exc)


class PartitionWriter:
    """The single writer of one partition: holds its lock, appends blocks, rolls segments.

    Its view of the partition (the last segment's blocks and end) is always what the files
    hold. Blocks are written at the position that view gives (never in append mode, which
    would put a block after whatever a failed write left). A write that fails is cut back
    before the error is raised; whenever files and view may disagree (a failed write, or a
    block whose index entry could not be written), `broken` is set and the tape closes this
    writer: the next append opens a new one, whose recovery looks at the files again.
    """

    def __init__(self, log_: PartitionLog, *, segment_bytes: int, fsync: bool,
                 torn_tails: list[TornTail], avro_codec: str = "null") -> None:
        self.log = log_
        self.avro_codec = avro_codec
        self.compress = compressor(avro_codec)
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.broken = False
        log_.dir.mkdir(parents=True, exist_ok=True)
        # not in append mode: the pid is written in place at offset 0 (below)
        self.lock_file = os.fdopen(os.open(log_.dir / "writer.lock", os.O_RDWR | os.O_CREAT, 0o644), "r+")
        try:
            fcntl.flock(self.lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.lock_file.seek(0)
            holder = self.lock_file.read().strip() or "unknown"
            self.lock_file.close()
            raise WriterLockedError(
                f"{log_.where()} already has a writer (pid {holder}); only one writer per partition"
            ) from None
        # the holder's pid, space-padded in place: truncating the file costs more than the rest of a
        # writer's start (shared live topics start a writer per append)
        os.pwrite(self.lock_file.fileno(), f"{os.getpid():<12}".encode(), 0)
        self.data_fd: int | None = None
        self.idx_fd: int | None = None
        self.seg: Segment | None = None  # the segment the two descriptors are open on
        self._extendable_seg: Segment | None = None  # the last segment `_extends` said yes to
        try:
            self._recover(torn_tails)
        except OSError as exc:
            self.close()
            raise TapeError(f"cannot open {log_.where()} for writing: {_why(exc)} ({exc})") from exc
        except BaseException:
            self.close()
            raise

    def _recover(self, torn_tails: list[TornTail]) -> None:
        """Check the last segment against its data, cut a torn tail, index what the index lacks.

        The tail is judged by the data, not the index: the last block must pass its checksum
        (its entry may have outlived its bytes after a power loss), and bytes after it must be
        a torn block (cut) rather than damage (refused by `PartitionLog.refresh`).
        """
        log_ = self.log
        for leftover in log_.dir.glob("*.avro.tmp"):
            # A segment being created: it holds a header only (blocks go in after the rename).
            log.info("removing %s, a segment whose creation did not finish", leftover)
            leftover.unlink()
        log_.refresh()
        if not log_.segments:
            return
        seg = log_.segments[-1]
        if seg.header is None:
            # An empty file: a version that created segments in place was killed right then.
            log.warning("removing empty segment %s", seg.path)
            torn_tails.append(TornTail(log_.topic, log_.partition, seg.path.name, 0))
            seg.close()
            seg.path.unlink()
            seg.idx_path.unlink(missing_ok=True)
            log_.segments.pop()
            return
        if seg.blocks:
            last = seg.blocks[-1]
            f = seg.file()
            f.seek(last.pos)
            problem = seg.block_problem(last, f.read(last.size))
            if problem is not None:
                raise DecodeError(f"the last block, at offset {last.first_offset} (byte {last.pos}), {problem}; "
                                  f"not appending after it: {REPAIR_HINT}", where=seg.where)
        size = seg.path.stat().st_size
        if size > seg.valid_end:
            cut = size - seg.valid_end
            log.warning("torn tail in %s: cutting %d bytes after offset %d (last complete block)",
                        seg.path, cut, seg.end_offset)
            torn_tails.append(TornTail(log_.topic, log_.partition, seg.path.name, cut))
            with open(seg.path, "r+b") as f:
                f.truncate(seg.valid_end)
                os.fsync(f.fileno())
        self._reindex(seg)

    def _reindex(self, seg: Segment) -> None:
        """Rewrite the segment's index as v2 from its verified blocks, unless it is that already."""
        expected = len(INDEX_MAGIC) + V2_ENTRY.size * len(seg.blocks)
        try:
            on_disk = seg.idx_path.stat().st_size
        except FileNotFoundError:
            on_disk = -1
        if seg.idx_version == V2 and not seg.idx_damaged and seg.idx_pos == on_disk == expected:
            return
        f = seg.file()
        for i, info in enumerate(seg.blocks):
            if info.crc is None:  # a v1-indexed block: checksum it as it is now
                f.seek(info.pos)
                seg.blocks[i] = info._replace(crc=crc32c.crc32c(f.read(info.size)))
        data = index_bytes(seg.blocks)
        tmp = seg.idx_path.with_name(seg.idx_path.name + ".tmp")
        _write_new_file(tmp, data, fsync=True)
        os.replace(tmp, seg.idx_path)  # readers see the old index or the new one, never half of one
        seg.idx_ino, seg.idx_pos, seg.idx_version, seg.idx_damaged = os.stat(seg.idx_path).st_ino, len(data), V2, False

    def _open_current(self) -> Segment:
        log_ = self.log
        seg = log_.segments[-1] if log_.segments else None
        if seg is None or seg.valid_end >= self.segment_bytes or not self._extends(seg):
            base = log_.end_offset
            if seg is not None and not seg.blocks:  # empty: the new one takes its name (same base offset)
                seg.close()
                log_.segments.pop()
            seg = self._new_segment(base)
        if self.seg is not seg:
            self._close_files()
            self.data_fd = os.open(seg.path, os.O_WRONLY | os.O_CLOEXEC)
            self.idx_fd = os.open(seg.idx_path, os.O_WRONLY | os.O_CLOEXEC)
            self.seg = seg
        return seg

    def _extends(self, seg: Segment) -> bool:
        """Whether appends may go on in `seg`: written with today's entry union and our compression.

        A segment from before a type was added numbers its union's branches differently:
        entries appended to it would decode as the wrong types, so a new segment starts. So
        does one written with another compression (a segment has one `avro.codec`).
        """
        if seg is not self._extendable_seg:
            assert seg.header is not None
            if seg.header.schema != self.log.codec.registry.entry_schema() or seg.header.codec != self.avro_codec:
                return False
            self._extendable_seg = seg
        return True

    def _new_segment(self, base: int) -> Segment:
        """Create the segment starting at `base`: its index first, then its header under a temporary
        name, renamed into place, so a listed segment always has a whole header and an index."""
        log_ = self.log
        path = log_.dir / segment_name(base)
        header = segment_header(log_.codec, log_.topic, log_.partition, base, self.avro_codec)
        tmp = path.with_name(path.name + ".tmp")
        try:
            _write_new_file(path.with_suffix(".idx"), INDEX_MAGIC, self.fsync)
            _write_new_file(tmp, header, self.fsync)
            os.replace(tmp, path)
            if self.fsync:
                fsync_dir(str(log_.dir))
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            self.broken = True
            raise TapeError(f"append to {log_.topic} partition {log_.partition}: {_why(exc)} creating segment "
                            f"{path} ({exc.strerror}); nothing of this batch was written") from exc
        seg = Segment(path, base, log_.codec, log_.where(path))
        seg.refresh(log_.ts_max)
        log_.segments.append(seg)
        return seg

    def append(self, body: Body, count: int, ts_first: int, ts_last: int, ts_max: int) -> int:
        """Write one block of `count` encoded entries; return the first offset.

        Raises TapeError when the block could not be written (nothing of it stays) or made
        durable (`fsync`: it may stay); a block whose index entry could not be written is
        acknowledged (it is complete, and readers find it by scanning) and sets `broken`.
        """
        seg = self._open_current()
        assert self.data_fd is not None and self.idx_fd is not None and seg.header is not None
        first = seg.end_offset
        pos = seg.valid_end
        block = encode_block(count, body, seg.header.sync, self.compress)
        try:
            _pwrite_all(self.data_fd, block, pos)
        except BaseException as exc:
            self.broken = True
            self._cut_back(pos)
            if isinstance(exc, OSError):
                raise TapeError(f"append to {self.log.topic} partition {self.log.partition}: {_why(exc)} writing "
                                f"{len(block)} bytes at byte {pos} of {seg.path} ({exc.strerror}); nothing of this "
                                "batch was written") from exc
            raise
        if self.fsync:
            try:
                os.fsync(self.data_fd)
            except OSError as exc:
                # Complete, so readers may have seen it: it stays (cutting it would hand its
                # offsets to other events), and the next writer finds it by scanning.
                self.broken = True
                raise TapeError(f"append to {self.log.where(seg.path)}: fsync failed ({exc}): the batch is written "
                                "but may not survive a power loss") from exc
        info = BlockInfo(first, pos, count, ts_first, ts_last, max(ts_max, self.log.ts_max), len(block),
                         crc32c.crc32c(block))
        seg.blocks.append(info)
        seg.scanned_to = info.end
        try:
            _pwrite_all(self.idx_fd, pack_entry(info), seg.idx_pos)
            seg.idx_pos += V2_ENTRY.size
        except BaseException as exc:
            self.broken = True  # the next writer indexes the block from the data
            if not isinstance(exc, OSError):
                raise
            log.warning("%s: the block at offset %d is written but its index entry is not (%s); the next writer "
                        "indexes it", self.log.where(seg.path), first, exc)
        return first

    def _cut_back(self, pos: int) -> None:
        """Remove what a failed block write left after `pos`; if that fails too, the next writer's
        recovery cuts it (a block without its sync marker is a torn tail)."""
        if self.data_fd is None:
            return
        try:
            os.ftruncate(self.data_fd, pos)
        except OSError as exc:
            log.warning("%s: could not cut a failed write back to byte %d (%s)", self.log.where(), pos, exc)

    def _close_files(self) -> None:
        for fd in (self.data_fd, self.idx_fd):
            if fd is not None:
                os.close(fd)
        self.data_fd = self.idx_fd = None
        self.seg = None

    def close(self) -> None:
        self._close_files()
        self.lock_file.close()


def _writer_token(w: PartitionWriter) -> tuple[int, int, int]:
    """The state of a writer's files: the partition directory's mtime (a new segment is a rename into
    it) and the sizes of the segment it writes and of its index (an append grows both)."""
    assert w.seg is not None
    seg = w.seg
    try:
        return (os.stat(w.log.dir).st_mtime_ns, os.stat(seg.path).st_size, os.stat(seg.idx_path).st_size)
    except FileNotFoundError:
        return (-1, -1, -1)


class FileTape:
    """The embedded tape. `FileTape("path")`, or `open_tape("file:path")`.

    `compression` ("none", "zstd" or "deflate") is how new segments store their blocks. A
    topic remembers the last one a writer chose (in its topic.json) and writers that choose
    none (`compression=None`, the default) follow it; a topic that never had one is
    uncompressed. Segments of each kind may share a partition, and every reader reads them
    all. zstd stores full Betfair books ~20x smaller at the same import speed (BENCHMARKS.md).
    """

    def __init__(self, root: str | os.PathLike[str], *, partitions: int = 1,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES, fsync: bool = False,
                 codec: Codec | None = None, compression: str | None = None) -> None:
        if compression is not None and compression not in COMPRESSIONS:
            raise TapeError(f"unknown compression {compression!r} for a file tape: "
                            f"use one of {', '.join(COMPRESSIONS)}")
        if not os.fspath(root):  # Path("") is ".": a tape spread over the current directory
            raise TapeError("a file tape needs a directory: file:PATH, e.g. file:./tape")
        self.root = Path(root)
        self.uri = f"file:{self.root}"
        self.compression = compression
        self.default_partitions = check_partitions(partitions)
        self.segment_bytes = whole_option("segment_bytes", segment_bytes, minimum=1)
        self.fsync = fsync
        self.codec = codec or default_codec()
        self.torn_tails: list[TornTail] = []
        self._logs: dict[tuple[str, int], PartitionLog] = {}
        self._writers: dict[tuple[str, int], PartitionWriter] = {}
        self._meta_cache: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}  # topic -> (stat, topic.json)
        self._meta_paths: dict[str, str] = {}  # topic -> its topic.json path
        # writers of shared appends between two calls: unlocked, with their files' state after our write
        self._parked: dict[tuple[str, int], tuple[PartitionWriter, tuple[int, int, int]]] = {}
        self._entry_prog = ap.compile_schema(self.codec.registry.entry_schema(), RECORD_TYPES)
        self._entry_encode = None if VM is not None else ap.make_encoder(self._entry_prog)
        key_prog, union_prog = self._entry_prog[2]
        self._key_encode = ap.make_encoder(key_prog)
        self._union_heads = self._branch_prefixes(union_prog)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise TapeError(f"file tape {self.root}: it is a file, not a directory") from None
        except OSError as exc:
            raise TapeError(f"file tape {self.root}: cannot create the directory: {_why(exc)} ({exc})") from exc

    def _branch_prefixes(self, union_prog: ap.Program) -> dict[bytes, bytes]:
        """Single-object header of each current schema -> its branch of the entry's event union, encoded.

        An entry is `key, branch index, event body`: with this map `append_encoded` turns
        single-object bytes into an entry without decoding them (built once per tape).
        """
        branch = {b[1]: i for i, b in enumerate(union_prog[1])}  # every branch is a record: [1] is its class
        write_index = ap.make_encoder((ap.LONG,))  # a union's branch index is written as a long
        prefixes = {}
        for head, tc in self.codec.writable.items():  # an older same-body header is the same branch
            out = bytearray()
            write_index(branch[tc.cls], out)
            prefixes[head] = bytes(out)
        return prefixes

    # --- topics -------------------------------------------------------------------------------

    def _topic_dir(self, topic: str) -> Path:
        return self.root / check_topic(topic)

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        check_partitions(partitions)
        existing = self.partitions(topic)
        if existing:
            if existing != partitions:
                raise TapeError(f"topic {topic} exists with {existing} partitions, not {partitions}")
            return
        meta: dict[str, Any] = {"partitions": partitions}
        if self.compression is not None:
            meta["compression"] = self.compression
        self._write_topic_meta(topic, meta)

    def _topic_meta(self, topic: str) -> dict[str, Any] | None:
        """The topic's topic.json: {"partitions": N[, "compression": C]}; None if there is no such topic."""
        path = self._meta_paths.get(topic)
        if path is None:  # a str, built once: pathlib joins cost more than the stat below
            path = self._meta_paths[topic] = str(self._topic_dir(topic) / "topic.json")
        # Read once per version of the file: it is replaced atomically (a new inode), so its stat
        # says whether it changed (a stat costs ~1 us, reading and parsing it ~20, on every read()).
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._meta_cache.pop(topic, None)
            return None
        except OSError:
            st = None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size) if st is not None else None
        cached = self._meta_cache.get(topic)
        if stamp is not None and cached is not None and cached[0] == stamp:
            return dict(cached[1])
        try:
            with open(path, "rb") as fh:
                meta = json.loads(fh.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise TapeError(f"{path} cannot be read ({exc}): it should hold JSON such as "
                            '{"partitions": 1}') from exc
        partitions = meta.get("partitions") if isinstance(meta, dict) else None
        if type(partitions) is not int or partitions < 1:
            raise TapeError(f"{path} is damaged: it should hold JSON such as {{\"partitions\": 1}} "
                            f"(a whole number of partitions, at least 1), not {str(meta)[:80]!r}")
        if stamp is not None:
            self._meta_cache[topic] = (stamp, dict(meta))
        return meta  # type: ignore[no-any-return]

    def _write_topic_meta(self, topic: str, meta: dict[str, Any]) -> None:
        d = self._topic_dir(topic)
        tmp = d / f"topic.json.{os.getpid()}.tmp"
        try:
            d.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(meta))
            os.replace(tmp, d / "topic.json")  # atomic: readers see the old or the new file
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise TapeError(f"cannot write {d / 'topic.json'}: {_why(exc)} ({exc})") from exc

    def partitions(self, topic: str) -> int:
        meta = self._topic_meta(topic)
        return 0 if meta is None else int(meta["partitions"])

    def compression_of(self, topic: str) -> str:
        """The compression this handle writes `topic`'s new segments with."""
        return self.compression or str((self._topic_meta(topic) or {}).get("compression", "none"))

    def topic_names(self) -> list[str]:
        return sorted(p.parent.name for p in self.root.glob("*/topic.json"))

    def topics(self) -> list[TopicInfo]:
        out = []
        for name in self.topic_names():
            parts = tuple(self._log(name, p).info() for p in range(self.partitions(name)))
            out.append(TopicInfo(name, parts))
        return out

    def _log(self, topic: str, partition: int) -> PartitionLog:
        key = (topic, partition)
        plog = self._logs.get(key)
        if plog is None:
            n = self.partitions(topic)
            if not 0 <= partition < max(n, 1):
                raise TapeError(f"topic {topic} has no partition {partition} (it has {n})")
            plog = PartitionLog(self._topic_dir(topic) / str(partition), topic, partition, self.codec)
            self._logs[key] = plog
        else:
            plog.refresh()
        return plog

    # --- writing --------------------------------------------------------------------------------

    def _writer(self, topic: str, partition: int) -> PartitionWriter:
        key = (topic, partition)
        w = self._writers.get(key)
        if w is None and key in self._parked:
            w = self._unpark(key)
        if w is None:
            try:
                plog = self._log(topic, partition)
            except DecodeError as exc:
                raise TapeError(f"not appending to {topic} partition {partition}: {exc}") from exc
            meta = self._topic_meta(topic) or {}
            compression = self.compression or str(meta.get("compression", "none"))
            if meta and meta.get("compression", "none") != compression:
                self._write_topic_meta(topic, {**meta, "compression": compression})  # remembered for later writers
            try:
                w = PartitionWriter(plog, segment_bytes=self.segment_bytes, fsync=self.fsync,
                                    torn_tails=self.torn_tails, avro_codec=COMPRESSIONS[compression])
            except DecodeError as exc:
                raise TapeError(f"not appending to {topic} partition {partition}: {exc}") from exc
            self._writers[key] = w
        return w

    def append(self, topic: str, events: Sequence[Event], keys: Sequence[str | None] | None = None,
               partition: int | None = None) -> Positions:
        """Append a batch as one block per partition it goes to; see `Tape.append`."""
        if not events:
            return Positions(0, range(0))
        keys, parts, create = route_batch(self, self.codec.keys_of, topic, events, keys, partition,
                                          self.default_partitions)

        def encode(indices: Sequence[int] | None) -> tuple[bytearray, list[int]]:
            if indices is None:
                return (self._encode_entries(topic, list(zip(keys, events, strict=True)), indices),
                        [e.ts_event for e in events])
            return (self._encode_entries(topic, [(keys[i], events[i]) for i in indices], indices),
                    [events[i].ts_event for i in indices])

        return self._append_blocks(topic, parts, len(events), encode, create)

    def append_encoded(self, topic: str, items: Sequence[Encoded], partition: int | None = None) -> Positions:
        """Append events given in their single-object encoding; see `Tape.append_encoded`.

        The entries are spliced from the given bytes (key, the union branch of the item's
        schema, its body), so the segment holds exactly what `append` of the decoded events
        would write. Headers, keys and ts_events are checked; bodies are trusted, not decoded.
        """
        if not items:
            return Positions(0, range(0))
        keys, ts, datas, utf8 = split_encoded(topic, items)
        prefixes = header_index(topic, datas, self._union_heads, self.codec)
        key_entries = {}
        for k in utf8:
            out = bytearray()
            self._key_encode(k, out)
            key_entries[k] = bytes(out)
        _, parts, create = route_batch(self, encoded_keys, topic, items, keys, partition, self.default_partitions)

        def encode(indices: Sequence[int] | None) -> tuple[Body, Sequence[int]]:
            if indices is None:
                return _splice(keys, prefixes, datas, key_entries), ts
            return (_splice([keys[i] for i in indices], [prefixes[i] for i in indices],
                            [datas[i] for i in indices], key_entries), [ts[i] for i in indices])

        return self._append_blocks(topic, parts, len(items), encode, create)

    def _append_blocks(self, topic: str, parts: int | list[int], count: int, encode: BlockEncoder,
                       create: int) -> Positions:
        """Write a routed batch: one block per partition, all encoded before any is written.

        `parts` and `create` are `route_batch`'s answer: the topic is created (with `create`
        partitions) only once every block has encoded, so a batch that fails to encode writes,
        and creates, nothing.
        """
        if isinstance(parts, int):
            body, ts = encode(None)
            if create:
                self.create_topic(topic, create)
            first = self._write_block(topic, parts, body, ts)
            return Positions(parts, range(first, first + count))
        groups: dict[int, list[int]] = {}
        for i, p in enumerate(parts):
            groups.setdefault(p, []).append(i)
        blocks = [(p, indices, *encode(indices)) for p, indices in sorted(groups.items())]
        if create:
            self.create_topic(topic, create)
        offsets = [0] * count
        for p, indices, body, ts in blocks:
            first = self._write_block(topic, p, body, ts)
            for j, i in enumerate(indices):
                offsets[i] = first + j
        return Positions(parts, offsets)

    def _write_block(self, topic: str, partition: int, body: Body, ts: Sequence[int]) -> int:
        """Write one block of encoded entries with their ts_events; return its first offset.

        A writer that failed is closed, so the next append opens (and recovers) a new one.
        """
        writer = self._writer(topic, partition)
        try:
            return writer.append(body, len(ts), ts[0], ts[-1], max(ts))
        finally:
            if writer.broken:
                writer.close()
                del self._writers[(topic, partition)]

    def _encode_entries(self, topic: str, entries: list[tuple[str | None, Event]],
                        indices: Sequence[int] | None) -> bytearray:
        """`TapeEntry` records of (key, event) pairs, which are the batch's events at `indices` (None: all)."""
        out = bytearray()
        try:
            if VM is not None:
                VM.encode_many(self._entry_prog, entries, out)
            else:
                enc = self._entry_encode
                assert enc is not None
                for entry in entries:
                    enc(entry, out)
        except (TypeError, ValueError, OverflowError) as exc:
            # Find the culprit for a useful message: encode one by one through the codec.
            for i, (_, event) in enumerate(entries):
                try:
                    self.codec.encode(event)
                except Exception as inner:
                    where = i if indices is None else indices[i]
                    raise TapeError(f"append to {topic}: event {where} of the batch: {inner}") from exc
            raise TapeError(f"append to {topic}: {exc}") from exc
        return out

    # --- reading --------------------------------------------------------------------------------

    def read(self, topic: str, partition: int = 0, *, from_offset: int | None = None,
             from_time: int | None = None, follow: bool = False, limit: int | None = None,
             poll_interval: float = 0.05) -> Iterator[Record]:
        if limit is not None and limit <= 0:
            return
        while self.partitions(topic) == 0:
            if not follow:
                return
            time.sleep(poll_interval)
        plog = self._log(topic, partition)
        if from_offset is not None:
            offset = max(from_offset, plog.start_offset)
        elif from_time is not None:
            offset = plog.offset_for_time(from_time)
        else:
            offset = plog.start_offset
        produced = 0
        new_record = tuple.__new__
        while True:
            si, bi = plog.locate(offset)
            progressed = False
            while si < len(plog.segments):
                seg = plog.segments[si]
                if bi >= len(seg.blocks):
                    si, bi = si + 1, 0
                    continue
                info = seg.blocks[bi]
                entries = seg.read_block(bi)
                skip = max(offset - info.first_offset, 0)
                if limit is None:
                    # tuple.__new__ skips NamedTuple's Python-level __new__: this loop is per event.
                    for at, (key, event) in enumerate(entries[skip:] if skip else entries, info.first_offset + skip):
                        yield new_record(Record, (topic, partition, at, key, event))
                else:
                    for i in range(skip, info.records):
                        key, event = entries[i]
                        yield new_record(Record, (topic, partition, info.first_offset + i, key, event))
                        produced += 1
                        if produced >= limit:
                            return
                offset = info.first_offset + info.records
                progressed = True
                bi += 1
            if not follow:
                return
            if not progressed:
                time.sleep(poll_interval)
            plog.refresh()

    def read_events(self, topic: str, partition: int = 0) -> Iterator[Event]:
        """Just the events of a partition, oldest first: the fastest way to scan a topic."""
        plog = self._log(topic, partition)
        for seg in plog.segments:
            for bi in range(len(seg.blocks)):
                for chunk in seg.read_chunks(bi):  # not the whole block at once: see Segment.read_chunks
                    for _, event in chunk:
                        yield event

    def end_offsets(self, topic: str) -> dict[int, int]:
        return {p: self._log(topic, p).end_offset for p in range(self.partitions(topic))}

    def offset_for_time(self, topic: str, partition: int, ts: int) -> int:
        return self._log(topic, partition).offset_for_time(ts)

    # --- consumers ------------------------------------------------------------------------------

    def _consumer_path(self, consumer: str) -> Path:
        if not _TOPIC_RE.match(consumer):
            raise TapeError(f"invalid consumer name {consumer!r}")
        return self.root / "_consumers" / f"{consumer}.json"

    def _committed_all(self, consumer: str) -> dict[str, Any]:
        path = self._consumer_path(consumer)
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise TapeError(f"{path} cannot be read ({exc}): it should hold JSON such as "
                            '{"md.trade/0": 1234}') from exc
        if not isinstance(data, dict):
            raise TapeError(f"{path} is damaged: it should hold a JSON object of offsets, not {str(data)[:80]!r}")
        return data

    def commit(self, consumer: str, topic: str, partition: int, offset: int) -> None:
        path = self._consumer_path(consumer)
        data = self._committed_all(consumer)
        data[f"{topic}/{partition}"] = offset
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            path.parent.mkdir(exist_ok=True)
            with open(tmp, "w") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise TapeError(f"cannot commit {consumer}'s offset to {path}: {_why(exc)} ({exc})") from exc

    def committed(self, consumer: str, topic: str, partition: int) -> int | None:
        value = self._committed_all(consumer).get(f"{topic}/{partition}")
        return int(value) if value is not None else None

    # --- lifecycle ------------------------------------------------------------------------------

    def change_token(self, topic: str, partition: int) -> tuple[int, int, int]:
        """A cheap fingerprint of a partition's files: the directory's mtime and the sizes of the last
        segment this tape has seen and of its index. While it stays the same nothing was appended, so
        a follower polls it (three stats, a few microseconds) instead of reading (tens of microseconds).

        An append writes the data, then the index entry: both change the token, so a reader that looked
        between the two looks again. A new segment (created by a rename) changes the directory's mtime.
        """
        plog = self._logs.get((topic, partition))
        try:
            dir_mtime = os.stat(plog.dir if plog is not None else self._topic_dir(topic) / str(partition)).st_mtime_ns
        except FileNotFoundError:
            return (0, -1, -1)
        if plog is None or not plog.segments:
            return (dir_mtime, -1, -1)
        seg = plog.segments[-1]
        try:
            return (dir_mtime, os.stat(seg.path).st_size, os.stat(seg.idx_path).st_size)
        except FileNotFoundError:
            return (dir_mtime, -2, -2)

    def release(self, topic: str) -> None:
        """Let go of `topic`'s partition writers (their locks): another process may append next."""
        for key in [k for k in self._writers if k[0] == topic]:
            self._writers.pop(key).close()
        for key in [k for k in self._parked if k[0] == topic]:
            self._parked.pop(key)[0].close()

    def append_shared(self, topic: str, events: Sequence[Event], keys: Sequence[str | None] | None = None,
                      partition: int | None = None, *, wait: float = 10.0) -> Positions:
        """Append to a topic other processes write too (live runs' `orders.intent`, `runs`): take the
        partitions' locks, waiting up to `wait` s while another process holds them, append, let go.

        Between two calls the writer stays open, unlocked ("parked") with the state of its files
        after our write; the next call locks it again and reuses it when nobody wrote meanwhile
        (a lock and three stats), else starts a fresh writer (which recovers from the files).
        """
        deadline = time.monotonic() + wait
        pause = 0.0005
        while True:
            try:
                return self.append(topic, events, keys, partition)
            except WriterLockedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.02)
            finally:
                self._park(topic)

    def _park(self, topic: str) -> None:
        for key in [k for k in self._writers if k[0] == topic]:
            w = self._writers.pop(key)
            if w.broken or w.seg is None:
                w.close()
                continue
            token = _writer_token(w)
            fcntl.flock(w.lock_file, fcntl.LOCK_UN)
            self._parked[key] = (w, token)

    def _unpark(self, key: tuple[str, int]) -> PartitionWriter | None:
        """The parked writer of `key`, locked again, if the files are as it left them; else None (closed)."""
        w, token = self._parked.pop(key)
        try:
            fcntl.flock(w.lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._parked[key] = (w, token)
            w.lock_file.seek(0)
            holder = w.lock_file.read().strip() or "unknown"
            raise WriterLockedError(f"{w.log.where()} already has a writer (pid {holder}); "
                                    "only one writer per partition") from None
        if _writer_token(w) != token:  # another process appended (or rolled a segment) meanwhile
            w.close()
            return None
        os.pwrite(w.lock_file.fileno(), f"{os.getpid():<12}".encode(), 0)
        self._writers[key] = w
        return w

    def segment_paths(self, topic: str, partition: int = 0) -> list[Path]:
        """The container files of a partition, oldest first (the last one may still grow)."""
        return [s.path for s in self._log(topic, partition).segments]

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
        for w, _ in self._parked.values():
            w.close()
        self._parked.clear()
        for plog in self._logs.values():
            plog.close()
        self._writers.clear()
        self._logs.clear()

    def __enter__(self) -> FileTape:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
