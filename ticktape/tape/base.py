"""The `Tape` port: an ordered, durable log of events in topics and partitions.

Every backend (embedded files, Kafka) implements this Protocol and passes the same
contract test suite (`tests/contract/`). Producers, robots' runners and the analyzer
speak only to it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeVar, overload, runtime_checkable

from ticktape.errors import TapeError
from ticktape.events import Event

if TYPE_CHECKING:
    from ticktape.codec import Codec

T = TypeVar("T")


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


class Encoded(NamedTuple):
    """One event already in its single-object encoding, with what a tape needs to route and index it."""

    key: str | None  # the partition key, what codec.key_of(event) gives for the event
    ts_event: int  # the event's ts_event (ns)
    data: bytes  # Codec.encode(event): C3 01 + 8-byte schema fingerprint + Avro body


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
        the stable hash of the key unless given. Never atomic across partitions: a batch that
        was not acknowledged (the call raised, or the process died) may be in some partitions
        only. Within a partition the file tape writes a batch's share whole or not at all;
        Kafka may keep a prefix of it (its record batches are 512 KB; no transactions).
        """

    def append_encoded(self, topic: str, items: Sequence[Encoded], partition: int | None = None) -> Positions:
        """Append events given in their single-object encoding; the same as `append` of the decoded events
        with `keys=[i.key for i in items]`: same positions, same bytes stored.

        Each item's header is checked (C3 01 marker, the fingerprint of the current version of a
        known schema), its key and ts_event too; its Avro body is trusted, not decoded, and so is
        its ts_event's agreement with the body. A bad item raises `TapeError` naming the topic and
        its index in the batch, and nothing of the batch is appended.
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


TOPIC_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\Z")
"""A topic name on every backend: 1 to 201 letters, digits, '.', '_', '-', starting with a letter or
digit (a file tape's directory name, and a valid Kafka topic). Anchored at the very end of the
string: `$` also matches before a trailing newline, which let "abc" + newline through."""


def check_topic(topic: str) -> str:
    """`topic` if it is a valid topic name (`TOPIC_RE`) on every backend, else `TapeError` saying why."""
    if not isinstance(topic, str) or not TOPIC_RE.match(topic):
        raise TapeError(f"invalid topic name {topic!r}: use 1 to 201 letters, digits, '.', '_', '-', "
                        "starting with a letter or digit")
    return topic


def whole_option(name: str, value: object, *, minimum: int) -> int:
    """A whole-number tape setting given as an int or as URI query text, at least `minimum`.

    `TapeError` naming the setting otherwise: `int()` would raise a bare ValueError on
    `?partitions=abc` and accept 2.7 or True as numbers."""
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
        number = int(value)
    elif type(value) is int:
        number = value
    else:
        raise TapeError(f"{name} must be a whole number, not {value!r}")
    if number < minimum:
        raise TapeError(f"{name} must be at least {minimum}, not {number}")
    return number


def check_partitions(partitions: object) -> int:
    """A partition count (at least 1), else `TapeError`: a topic of 0 partitions would take appends that no
    reader ever sees."""
    return whole_option("partitions", partitions, minimum=1)


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


def route_batch(tape: Tape, key_of: Callable[[Sequence[T]], Sequence[str | None]], topic: str,
                events: Sequence[T], keys: Sequence[str | None] | None, partition: int | None,
                default_partitions: int) -> tuple[Sequence[str | None], int | list[int], int]:
    """What every backend's `append` does first: the batch's keys and where each event goes.

    `events` may be events or `Encoded` items (whose keys are then given).

    Takes each event's schema key unless `keys` are given, and returns one partition for the
    whole batch (an explicit `partition`, or a one-partition topic) or a partition per event from
    its key; and, for a topic that does not exist yet, `default_partitions`, the count the backend
    creates it with once the batch has encoded (else 0): a batch that fails to encode creates nothing.
    """
    n = tape.partitions(topic)
    create = 0
    if n == 0:
        create = n = check_partitions(default_partitions)
    if keys is None:
        keys = key_of(events)
    elif len(keys) != len(events):
        raise TapeError(f"{len(keys)} keys for {len(events)} events")
    if partition is not None and not 0 <= partition < n:
        raise TapeError(f"topic {topic} has no partition {partition} (it has {n})")
    if partition is not None or n == 1:
        return keys, partition or 0, create
    cache: dict[str | None, int] = {}  # murmur2 in Python costs per call: hash each distinct key once
    parts = []
    for k in keys:
        p = cache.get(k)
        if p is None:
            p = cache[k] = partition_for(k, n)
        parts.append(p)
    return keys, parts, create


def partition_for(key: str | None, partitions: int) -> int:
    """Stable key -> partition, the same as Kafka's default partitioner; None -> 0."""
    if partitions <= 1 or key is None:
        return 0
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions


# --- appending pre-encoded events -------------------------------------------------------------

SINGLE_OBJECT_HEADER = 10
"""C3 01 + the 8-byte fingerprint (`codec.HEADER_SIZE`, not imported: the port stays free of fastavro):
`data[:10]` finds an `Encoded` item's schema and checks its marker in one dict lookup."""


def encoded_keys(items: Sequence[Encoded]) -> list[str | None]:
    """The keys of a batch of `Encoded` items (`route_batch`'s `key_of` for them)."""
    return [item.key for item in items]


def split_encoded(topic: str, items: Sequence[Encoded]) -> tuple[Sequence[str | None], Sequence[int],
                                                                   Sequence[bytes], dict[str | None, bytes | None]]:
    """Check an `Encoded` batch's keys, timestamps and data types and take it apart (columns).

    Returns (keys, ts_events, datas) and `utf8_keys(keys)`. Keys must be str or None,
    ts_events ints, datas bytes: each would otherwise fail late (in a Kafka client, in a
    segment index) or not at all. The datas' headers are checked by `header_index`; bodies
    are not looked at.
    """
    if not items:
        return (), (), (), {}
    try:
        keys, ts, datas = zip(*items, strict=True)
    except (TypeError, ValueError):
        for i, item in enumerate(items):
            if not isinstance(item, tuple) or len(item) != 3:
                raise bad_item(topic, i, f"expected an Encoded(key, ts_event, data), got {item!r:.80}") from None
        raise
    utf8 = utf8_keys(topic, keys)
    # One C-level pass each: a Python loop per item would cost more than the rest of the checks.
    if not set(map(type, ts)) <= {int}:
        i = next(i for i, t in enumerate(ts) if type(t) is not int)
        raise bad_item(topic, i, f"ts_event must be an int (ns), not {type(ts[i]).__name__}")
    if not set(map(type, datas)) <= {bytes}:
        i = next(i for i, d in enumerate(datas) if type(d) is not bytes)
        raise bad_item(topic, i, f"data must be bytes, not {type(datas[i]).__name__}")
    return keys, ts, datas, utf8


def utf8_keys(topic: str, keys: Sequence[str | None]) -> dict[str | None, bytes | None]:
    """Each distinct key's UTF-8 (None stays None), encoded once; `TapeError` naming a bad key's index."""
    try:
        return {k: None if k is None else k.encode() for k in set(keys)}
    except (AttributeError, TypeError, UnicodeEncodeError):
        for i, k in enumerate(keys):
            why = _key_problem(k)
            if why is not None:
                raise bad_item(topic, i, why) from None
        raise


def _key_problem(key: object) -> str | None:
    """Why `key` cannot be a record key, or None."""
    if key is None:
        return None
    if not isinstance(key, str):
        return f"the key must be a str or None, not {type(key).__name__}"
    try:
        key.encode()
    except UnicodeEncodeError as exc:
        return f"the key {key!r:.80} cannot be encoded as UTF-8 ({exc})"
    return None


def header_index(topic: str, datas: Sequence[bytes], by_header: Mapping[bytes, T], codec: Codec) -> list[T]:
    """`by_header[data[:10]]` for each item, where `by_header` has every header the codec writes.

    One dict lookup checks the marker and that the fingerprint is a current one; a miss is
    explained (too short, no marker, an old version, unknown) with the item's index.
    """
    try:
        return [by_header[d[:SINGLE_OBJECT_HEADER]] for d in datas]
    except (KeyError, TypeError):
        for i, d in enumerate(datas):
            if not isinstance(d, bytes) or d[:SINGLE_OBJECT_HEADER] not in by_header:
                raise bad_item(topic, i, encoded_problem(d, codec)) from None
        raise


def encoded_problem(data: object, codec: Codec) -> str:
    """Why `data` is not the single-object encoding of an event in its current schema."""
    if not isinstance(data, bytes):
        return f"data must be bytes, not {type(data).__name__}"
    if len(data) < SINGLE_OBJECT_HEADER:
        return f"{len(data)} bytes of data is too short for a single-object encoding (10-byte header)"
    if data[:2] != b"\xc3\x01":
        return f"data does not start with the C3 01 marker of Avro single-object encoding (it starts {data[:2].hex()})"
    fp = data[2:SINGLE_OBJECT_HEADER]
    tc = codec.by_fingerprint.get(fp)
    if tc is None:
        return f"unknown schema fingerprint {fp.hex()}: no schema in schemas/ has it"
    if not tc.writable:
        return (f"schema fingerprint {fp.hex()} is {tc.version.name} v{tc.version.version}, not its current "
                f"v{tc.current.version}: decode the event and append it instead")
    return "bad data"  # not reached: the header is a current one


def bad_item(topic: str, index: int, why: str) -> TapeError:
    """The error for item `index` of a batch appended to `topic`."""
    return TapeError(f"append to {topic}: item {index} of the batch: {why}")
