"""The `Tape` port: an ordered, durable log of events in topics and partitions.

Every backend (embedded files, Kafka) implements this Protocol and passes the same
contract test suite (`tests/contract/`). Producers, robots' runners and the analyzer
speak only to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple, Protocol, overload, runtime_checkable

from ticktape.errors import TapeError
from ticktape.events import Event


class Record(NamedTuple):
    """One event as stored on the tape, with its position."""

    topic: str
    partition: int
    offset: int
    key: str | None
    event: Event

    @property
    def ts_event(self) -> int:
        return self.event.ts_event

    @property
    def type(self) -> str:
        return type(self.event).__name__


class Position(NamedTuple):
    """Where an appended event landed."""

    partition: int
    offset: int


class Positions(Sequence[Position]):
    """Where each event of an appended batch landed, computed on demand.

    Appends are per batch; building a Position object per event would cost more than
    encoding it, so this keeps one partition per event (or one for all) and the offsets.
    """

    __slots__ = ("_offsets", "_partitions")

    def __init__(self, partitions: int | list[int], offsets: range | list[int]) -> None:
        self._partitions = partitions
        self._offsets = offsets

    def __len__(self) -> int:
        return len(self._offsets)

    @overload
    def __getitem__(self, index: int) -> Position: ...

    @overload
    def __getitem__(self, index: slice) -> list[Position]: ...

    def __getitem__(self, index: int | slice) -> Position | list[Position]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        parts = self._partitions
        return Position(parts if isinstance(parts, int) else parts[index], self._offsets[index])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    def __add__(self, other: Sequence[Position]) -> list[Position]:
        return list(self) + list(other)

    def __repr__(self) -> str:
        return f"Positions({list(self)!r})"


class PartitionInfo(NamedTuple):
    """What `topics` reports per partition."""

    partition: int
    start_offset: int  # first offset present
    end_offset: int  # next offset to be written
    first_ts: int | None
    last_ts: int | None


class TopicInfo(NamedTuple):
    """A topic and its partitions."""

    name: str
    partitions: tuple[PartitionInfo, ...]

    @property
    def events(self) -> int:
        return sum(p.end_offset - p.start_offset for p in self.partitions)

    @property
    def first_ts(self) -> int | None:
        values = [p.first_ts for p in self.partitions if p.first_ts is not None]
        return min(values) if values else None

    @property
    def last_ts(self) -> int | None:
        values = [p.last_ts for p in self.partitions if p.last_ts is not None]
        return max(values) if values else None


@runtime_checkable
class Tape(Protocol):
    """An append-only log of events. All methods are safe to call from one thread."""

    uri: str

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        """Create a topic with a fixed partition count; a no-op when it exists with that count."""

    def append(self, topic: str, events: Sequence[Event], keys: Sequence[str | None] | None = None,
               partition: int | None = None) -> Sequence[Position]:
        """Append a batch durably; return each event's position, in input order.

        Keys default to each event's schema key (instrument, market id). The partition is
        the stable hash of the key unless given.
        """

    def read(self, topic: str, partition: int = 0, *, from_offset: int | None = None,
             from_time: int | None = None, follow: bool = False, limit: int | None = None,
             poll_interval: float = 0.05) -> Iterator[Record]:
        """Records of one partition in offset order, from an offset or a time (ns).

        With `follow`, waits for new records after the end instead of stopping.
        """

    def topics(self) -> list[TopicInfo]:
        """Every topic with its partitions, counts and first/last ts_event."""

    def partitions(self, topic: str) -> int:
        """How many partitions a topic has (0 if it does not exist)."""

    def end_offsets(self, topic: str) -> dict[int, int]:
        """Next offset to be written, per partition."""

    def offset_for_time(self, topic: str, partition: int, ts: int) -> int:
        """The first offset whose ts_event >= ts (the end offset if none)."""

    def commit(self, consumer: str, topic: str, partition: int, offset: int) -> None:
        """Durably store `offset` as the next one `consumer` will read."""

    def committed(self, consumer: str, topic: str, partition: int) -> int | None:
        """The offset `consumer` committed, or None."""

    def close(self) -> None:
        """Flush and release everything (locks, files, connections)."""


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (as its Java client computes it), so both backends agree."""
    length = len(data)
    seed = 0x9747B28C
    m = 0x5BD1E995
    r = 24
    h = (seed ^ length) & 0xFFFFFFFF
    length4 = length // 4
    for i in range(length4):
        i4 = i * 4
        k = (data[i4] & 0xFF) + ((data[i4 + 1] & 0xFF) << 8) + ((data[i4 + 2] & 0xFF) << 16) + (
            (data[i4 + 3] & 0xFF) << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= (k >> r)
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    extra = length % 4
    index = length & ~3
    if extra == 3:
        h ^= (data[index + 2] & 0xFF) << 16
    if extra >= 2:
        h ^= (data[index + 1] & 0xFF) << 8
    if extra >= 1:
        h ^= data[index] & 0xFF
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def route_batch(tape: Tape, key_of: Callable[[Sequence[Event]], list[str | None]], topic: str,
                events: Sequence[Event], keys: Sequence[str | None] | None, partition: int | None,
                default_partitions: int) -> tuple[Sequence[str | None], int | list[int]]:
    """What every backend's `append` does first: the batch's keys and where each event goes.

    Creates the topic (with `default_partitions`) on first use, takes each event's schema key
    unless `keys` are given, and returns one partition for the whole batch (an explicit
    `partition`, or a one-partition topic) or a partition per event from its key.
    """
    n = tape.partitions(topic)
    if n == 0:
        tape.create_topic(topic, default_partitions)
        n = default_partitions
    if keys is None:
        keys = key_of(events)
    elif len(keys) != len(events):
        raise TapeError(f"{len(keys)} keys for {len(events)} events")
    if partition is not None and not 0 <= partition < n:
        raise TapeError(f"topic {topic} has no partition {partition} (it has {n})")
    if partition is not None or n == 1:
        return keys, partition or 0
    cache: dict[str | None, int] = {}  # murmur2 in Python costs per call: hash each distinct key once
    parts = []
    for k in keys:
        p = cache.get(k)
        if p is None:
            p = cache[k] = partition_for(k, n)
        parts.append(p)
    return keys, parts


def partition_for(key: str | None, partitions: int) -> int:
    """Stable key -> partition, the same as Kafka's default partitioner; None -> 0."""
    if partitions <= 1 or key is None:
        return 0
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions
