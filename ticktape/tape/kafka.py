"""The `kafka:` tape: Apache Kafka topics behind the `Tape` interface.

`kafka://HOST:PORT[,HOST:PORT...]` uses kafka-python (the default client);
`kafka+rdkafka://...` uses confluent-kafka (librdkafka, several times faster; the
`rdkafka` extra). Both go through the `KafkaClient` port and behave identically.

Mapping onto Kafka:

- one ticktape topic = one Kafka topic, created on first use with the configured
  partition count and `retention.ms=-1` (an event-sourced log keeps everything);
- record key = the event's key (instrument, market id), UTF-8; the partition is chosen
  here with `partition_for` (Kafka's murmur2 default partitioner) and passed explicitly,
  so both clients and the file tape agree;
- record timestamp (CreateTime) = `ts_event` in ms, at least 1 (librdkafka would read 0 as
  "now"); the full-ns `ts_event` is in the value;
- headers `ticktape.type` (event type) and `ticktape.schema` (writer schema fingerprint, hex);
- value = the Avro single-object encoding from the codec (`append_encoded` takes it as given).

Producing: `acks=all`, idempotent producer, retries until `delivery.timeout.ms`; an
`append` returns only once every record is acknowledged (so it is durable on every in-sync
replica), and returns each record's offset from the broker's acknowledgement.

Reading: `read(follow=False)` stops at the end offset captured when it is called (end
offsets, not poll timeouts, decide "the end"). Committed offsets are stored by Kafka's
group coordinator under the consumer name as group id (visible to `kafka-consumer-groups`).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ticktape.codec import VM, Codec, default_codec
from ticktape.config import Secret
from ticktape.errors import DecodeError, EncodeError, TapeError
from ticktape.events import Event
from ticktape.tape.base import (
    SINGLE_OBJECT_HEADER,
    Encoded,
    PartitionInfo,
    Positions,
    Record,
    TopicInfo,
    check_partitions,
    check_topic,
    encoded_keys,
    header_index,
    route_batch,
    split_encoded,
    utf8_keys,
    whole_option,
)
from ticktape.tape.kafka_client import Fetched, Header, KafkaClient, ProduceBatch, Reader, Security

log = logging.getLogger("ticktape.tape.kafka")

_GROUP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,248}\Z")  # \Z: `$` lets a trailing newline through
TYPE_HEADER = "ticktape.type"
SCHEMA_HEADER = "ticktape.schema"
SCHEMES = {"kafka": "kafka-python", "kafka+rdkafka": "confluent-kafka"}
_NS_PER_MS = 1_000_000
PASSWORD_ENV = "TICKTAPE_KAFKA_SASL_PASSWORD"


def parse_servers(uri: str) -> tuple[str, list[str]]:
    """`kafka://h1:p1,h2:p2?opts` -> (scheme, ["h1:p1", "h2:p2"]); the port defaults to 9092."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in SCHEMES:
        raise TapeError(f"not a Kafka tape URI: {uri!r} (use kafka://HOST:PORT or kafka+rdkafka://HOST:PORT)")
    rest = rest.partition("?")[0].rstrip("/")
    servers = []
    for part in filter(None, rest.split(",")):
        host, _, port = part.rpartition(":") if ":" in part else (part, "", "9092")
        if not host or not port.isdigit():
            raise TapeError(f"bad Kafka server {part!r} in {uri!r}: expected HOST:PORT")
        servers.append(f"{host}:{port}")
    if not servers:
        raise TapeError(f"no Kafka servers in {uri!r}")
    return scheme, servers


def _seconds(name: str, value: object) -> float:
    """A positive number of seconds given as a number or as URI query text, else `TapeError`."""
    try:
        seconds = float(str(value))
    except (TypeError, ValueError):
        raise TapeError(f"{name} must be a number of seconds, not {value!r}") from None
    if not seconds > 0 or seconds == float("inf"):
        raise TapeError(f"{name} must be a positive number of seconds, not {value!r}")
    return seconds


def _flag(value: object) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


class KafkaTape:
    """A tape on a Kafka cluster. `open_tape("kafka://127.0.0.1:9092?partitions=4")`.

    Options (keyword arguments or URI query): `partitions` for new topics (default 1),
    `replication` factor for new topics (default: the broker's), `timeout` in seconds for
    metadata and admin calls (default 30), `linger_ms` (default 5), `compression`
    (`none`, `lz4`, `zstd`, `gzip`, `snappy`; default none), `check_crcs` (kafka-python
    consumer, default 1). Secured clusters: `security_protocol` (`SSL`, `SASL_SSL`, ...),
    `sasl_mechanism` (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`), `sasl_username`,
    `ssl_cafile`, `ssl_certfile`, `ssl_keyfile`; the SASL password is read from the
    environment variable TICKTAPE_KAFKA_SASL_PASSWORD, never from options.
    """

    def __init__(self, uri: str, *, partitions: int | str = 1, replication: int | str = -1,
                 timeout: float | str = 30.0, linger_ms: int | str = 5, compression: str = "none",
                 check_crcs: bool | str = True, security_protocol: str = "PLAINTEXT",
                 sasl_mechanism: str | None = None, sasl_username: str | None = None,
                 ssl_cafile: str | None = None, ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
                 codec: Codec | None = None, **unknown: object) -> None:
        if "sasl_password" in unknown:
            raise TapeError(f"the SASL password is never an option (URIs get logged): set ${PASSWORD_ENV}")
        if unknown:
            raise TapeError(f"unknown Kafka tape options: {', '.join(sorted(unknown))}")
        if security_protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise TapeError(f"unknown security_protocol {security_protocol!r}")
        password = os.environ.get(PASSWORD_ENV)
        self.security = Security(security_protocol, sasl_mechanism, sasl_username,
                                 Secret(password) if password and security_protocol.startswith("SASL") else None,
                                 ssl_cafile, ssl_certfile, ssl_keyfile)
        scheme, self.servers = parse_servers(uri)
        self.uri = f"{scheme}://{','.join(self.servers)}"
        self.default_partitions = check_partitions(partitions)
        self.replication = whole_option("replication", replication, minimum=-1)  # -1: the broker's default
        self.timeout = _seconds("timeout", timeout)
        self.codec = codec or default_codec()
        self.client = self._make_client(scheme, whole_option("linger_ms", linger_ms, minimum=0), compression,
                                        _flag(check_crcs))
        self._partitions: dict[str, int] = {}
        self._idle: list[Reader] = []
        self._headers_by_prefix: dict[bytes, list[Header]] | None = None
        self._decoders: dict[bytes, Callable[[bytes, int], tuple[Any, int]]] | None = None
        self._closed = False

    def _make_client(self, scheme: str, linger_ms: int, compression: str, check_crcs: bool) -> KafkaClient:
        if compression not in ("none", "lz4", "zstd", "gzip", "snappy"):
            raise TapeError(f"unknown compression {compression!r}")
        if scheme == "kafka+rdkafka":
            try:
                from ticktape.tape.kafka_rdkafka_client import RdkafkaClient
            except ModuleNotFoundError as exc:
                if exc.name != "confluent_kafka":
                    raise
                raise TapeError("kafka+rdkafka:// needs confluent-kafka: pip install 'ticktape[rdkafka]'") from exc
            return RdkafkaClient(self.servers, timeout=self.timeout, security=self.security, producer={
                "acks": "all", "enable.idempotence": True, "linger.ms": linger_ms,
                "batch.size": 1_000_000, "batch.num.messages": 100_000,
                "queue.buffering.max.messages": 1_000_000, "compression.type": compression,
                "delivery.timeout.ms": 120_000,
            }, consumer={"fetch.wait.max.ms": 10, "fetch.message.max.bytes": 8 * 1024 * 1024,
                         "queued.min.messages": 200_000})
        from ticktape.tape.kafka_python_client import KafkaPythonClient

        return KafkaPythonClient(self.servers, timeout=self.timeout, security=self.security, producer={
            "acks": "all", "enable_idempotence": True, "linger_ms": linger_ms, "batch_size": 512 * 1024,
            "compression_type": None if compression == "none" else compression,
            "delivery_timeout_ms": 120_000, "max_block_ms": 120_000,
        }, consumer={"max_poll_records": 10_000, "fetch_max_wait_ms": 100,
                     "max_partition_fetch_bytes": 8 * 1024 * 1024, "check_crcs": check_crcs})

    def __repr__(self) -> str:
        return f"KafkaTape({self.uri!r}, client={self.client.name})"

    # --- topics -------------------------------------------------------------------------------

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        """Create a topic with `partitions` and `retention.ms=-1`; a no-op when it exists with that count."""
        check_topic(topic)
        check_partitions(partitions)
        # Timestamps are ts_event (venue time): historical imports are years old, and a
        # simulation may run ahead of the wall clock, so the broker must not judge them.
        configs = {"retention.ms": "-1", "retention.bytes": "-1", "message.timestamp.type": "CreateTime",
                   "message.timestamp.before.max.ms": str(2**63 - 1),
                   "message.timestamp.after.max.ms": str(2**63 - 1)}
        if not self.client.create_topic(topic, partitions, self.replication, configs):
            existing = self.client.partitions(topic)
            if existing != partitions:
                raise TapeError(f"topic {topic} exists with {existing} partitions, not {partitions}")
        self._partitions[topic] = partitions

    def partitions(self, topic: str) -> int:
        """How many partitions a topic has (0 if it does not exist)."""
        check_topic(topic)
        n = self._partitions.get(topic)
        if n is None:
            n = self.client.partitions(topic)
            if n:  # cache only existing topics: a missing one may appear any time
                self._partitions[topic] = n
        return n

    def topic_names(self) -> list[str]:
        """Every topic except Kafka's internal ones (`__consumer_offsets`, ...)."""
        return sorted(t for t in self.client.topic_names() if not t.startswith("__"))

    def topics(self) -> list[TopicInfo]:
        """Every topic with per-partition offsets and the ts_event of its first and last record."""
        out = []
        for name in self.topic_names():
            n = self.partitions(name)
            marks = self.client.watermarks(name, range(n))
            parts = []
            for p in range(n):
                low, high = marks[p]
                first = self._ts_at(name, p, low, high)
                last = first if high - low <= 1 else self._last_ts(name, p, low, high)
                parts.append(PartitionInfo(p, low, high, first, last))
            out.append(TopicInfo(name, tuple(parts)))
        return out

    def _last_ts(self, topic: str, partition: int, low: int, end: int) -> int | None:
        """ts_event of the partition's last record (the end offset may sit past a transaction marker)."""
        ts = self._ts_at(topic, partition, end - 1, end)
        if ts is None:
            for off, _, value in self._fetch_range(topic, partition, max(low, end - 16), end):
                if value is not None and self.codec.type_name(value) is not None:
                    ts = self._decode(value, topic, partition, off).ts_event
        return ts

    def _ts_at(self, topic: str, partition: int, offset: int, end: int) -> int | None:
        """ts_event of the record at `offset`; None if empty or not a ticktape record (foreign topic)."""
        if offset >= end:
            return None
        for off, _, value in self._fetch_range(topic, partition, offset, end, limit=1):
            if value is None or self.codec.type_name(value) is None:
                log.debug("topic %s partition %d offset %d is not a ticktape record", topic, partition, off)
                return None
            return self._decode(value, topic, partition, off).ts_event
        return None

    # --- writing ------------------------------------------------------------------------------

    def _prefix_headers(self) -> dict[bytes, list[Header]]:
        """Single-object header of each writable schema -> the record headers naming its type and
        that schema's fingerprint (built once)."""
        if self._headers_by_prefix is None:
            self._headers_by_prefix = {
                head: [(TYPE_HEADER, tc.cls.__name__.encode()), (SCHEMA_HEADER, tc.version.fingerprint.hex().encode())]
                for head, tc in self.codec.writable.items()}
        return self._headers_by_prefix

    def append(self, topic: str, events: Sequence[Event], keys: Sequence[str | None] | None = None,
               partition: int | None = None) -> Positions:
        """Produce a batch (acks=all) and wait until all of it is acknowledged; return its positions."""
        self._check_open()
        if not events:
            return Positions(0, range(0))
        keys, parts, create = route_batch(self, self.codec.keys_of, topic, events, keys, partition,
                                          self.default_partitions)
        encode = self.codec.encode
        try:
            values = [encode(e) for e in events]
        except EncodeError:
            for i, e in enumerate(events):
                try:
                    encode(e)
                except EncodeError as exc:
                    raise TapeError(f"append to {topic}: event {i} of the batch: {exc}") from exc
            raise
        utf8 = utf8_keys(topic, keys)
        if create:  # only once the batch has encoded: one that cannot be appended creates nothing
            self.create_topic(topic, create)
        # The headers follow the bytes: an event may be written under an older same-body schema.
        headers = self._prefix_headers()
        return self._produce(topic, parts, [utf8[k] for k in keys], values, [e.ts_event for e in events],
                             [headers[v[:SINGLE_OBJECT_HEADER]] for v in values])

    def append_encoded(self, topic: str, items: Sequence[Encoded], partition: int | None = None) -> Positions:
        """Produce events given in their single-object encoding; see `Tape.append_encoded`.

        The data is the record value as is, so the records are those `append` of the decoded
        events produces. Headers, keys and ts_events are checked; bodies are trusted, not decoded.
        """
        self._check_open()
        if not items:
            return Positions(0, range(0))
        keys, ts, datas, utf8 = split_encoded(topic, items)
        headers = header_index(topic, datas, self._prefix_headers(), self.codec)
        _, parts, create = route_batch(self, encoded_keys, topic, items, keys, partition, self.default_partitions)
        if create:  # every item is checked by now
            self.create_topic(topic, create)
        return self._produce(topic, parts, [utf8[k] for k in keys], list(datas), ts, headers)

    def _check_open(self) -> None:
        if self._closed:
            raise TapeError(f"{self.uri}: append after close")

    def _produce(self, topic: str, parts: int | list[int], keys: list[bytes | None], values: list[bytes],
                 ts_events: Sequence[int], headers: list[list[Header]]) -> Positions:
        """Produce a routed, encoded batch and wait until all of it is acknowledged."""
        # Kafka timestamps are ms and must not be negative, and librdkafka takes 0 to mean "stamp it
        # now": events before 1 ms past the epoch get 1 (seeks stay exact: they refine by ts_event).
        batch = ProduceBatch(parts, keys, values, [max(t // _NS_PER_MS, 1) for t in ts_events], headers)
        offsets = self.client.produce(topic, batch)
        return Positions(parts, list(offsets))

    # --- reading ------------------------------------------------------------------------------

    def _reader(self) -> Reader:
        return self._idle.pop() if self._idle else self.client.new_reader()

    def _release(self, reader: Reader) -> None:
        try:
            reader.release()
        except Exception:  # a broken consumer is not worth keeping
            log.debug("dropping a consumer that failed to release", exc_info=True)
            reader.close()
            return
        if self._closed:
            reader.close()
        else:
            self._idle.append(reader)

    def _decode(self, value: bytes | None, topic: str, partition: int, offset: int) -> Event:
        where = f"topic {topic} partition {partition} offset {offset}"
        if value is None:
            raise DecodeError("record has no value (a tombstone?)", where=where)
        return self.codec.decode(value, where=where)

    def _fetch_batches(self, topic: str, partition: int, start: int, end: int | None, *,
                       max_records: int = 10_000, poll: float = 0.1) -> Iterator[list[Fetched]]:
        """Raw records from `start` to `end` (exclusive; None = follow forever), in offset order, by batch."""
        reader = self._reader()
        try:
            reader.assign(topic, partition, start)
            position = start
            last_progress = time.monotonic()
            while end is None or position < end:
                batch = reader.fetch(poll if end is None else 1.0, max_records)
                if not batch:
                    # Transaction markers (a transactional producer's topic) take offsets but
                    # are never delivered: the consumer's position tells when the end is reached.
                    if end is not None and (reader.position() or 0) >= end:
                        return
                    if end is not None and time.monotonic() - last_progress > self.timeout:
                        raise TapeError(f"topic {topic} partition {partition}: no records after offset {position} "
                                        f"for {self.timeout:.0f} s although the end offset is {end}")
                    continue
                last_progress = time.monotonic()
                if batch[0][0] < position:  # already seen (a re-fetch after a reassignment)
                    batch = [item for item in batch if item[0] >= position]
                if end is not None and batch and batch[-1][0] >= end:
                    batch = [item for item in batch if item[0] < end]
                if batch:
                    position = batch[-1][0] + 1
                    yield batch
        finally:
            self._release(reader)

    def _fetch_range(self, topic: str, partition: int, start: int, end: int, limit: int | None = None
                     ) -> Iterator[Fetched]:
        """Raw records from `start` to `end`, one by one (for the few-record lookups)."""
        produced = 0
        for batch in self._fetch_batches(topic, partition, start, end,
                                         max_records=10_000 if limit is None else min(limit, 10_000)):
            for item in batch:
                yield item
                produced += 1
                if limit is not None and produced >= limit:
                    return

    def read(self, topic: str, partition: int = 0, *, from_offset: int | None = None,
             from_time: int | None = None, follow: bool = False, limit: int | None = None,
             poll_interval: float = 0.05) -> Iterator[Record]:
        """Records of one partition in offset order; without `follow`, up to the end offset at call time."""
        if limit is not None and limit <= 0:
            return
        while (n := self.partitions(topic)) == 0:
            if not follow:
                return
            time.sleep(poll_interval)
        if not 0 <= partition < n:
            raise TapeError(f"topic {topic} has no partition {partition} (it has {n})")
        low, high = self.client.watermarks(topic, [partition])[partition]
        start = max(from_offset, low) if from_offset is not None else low
        skip_before = None
        if from_offset is None and from_time is not None:
            start = self._time_floor(topic, partition, from_time, high)
            skip_before = from_time
        end = None if follow else high
        if end is not None and start >= end:
            return
        # The codec's decode inlined for the current-schema case (this loop is per event);
        # anything unusual goes through `codec.decode`, which names the record in its error.
        by_fingerprint = self._body_decoders()
        new_record = tuple.__new__
        produced = 0
        batches = self._fetch_batches(topic, partition, start, end, poll=max(poll_interval, 0.01),
                                      max_records=10_000 if limit is None else min(limit, 10_000))
        for batch in batches:
            for off, key, value in batch:
                try:
                    event, stop = by_fingerprint[value[2:10]](value, 10)  # type: ignore[index,arg-type]
                    if stop != len(value) or value[0] != 0xC3 or value[1] != 0x01:  # type: ignore[arg-type,index]
                        raise ValueError("not a whole single-object encoding")
                except (KeyError, ValueError, TypeError, EOFError, IndexError, StopIteration):
                    event = self._decode(value, topic, partition, off)  # raises, naming the record
                if skip_before is not None:
                    # Kafka's time index is in ms: skip the records of that ms before `from_time` (ns).
                    if event.ts_event < skip_before:
                        continue
                    skip_before = None
                # tuple.__new__ skips NamedTuple's Python-level __new__.
                yield new_record(Record, (topic, partition, off, None if key is None else key.decode(), event))
                produced += 1
                if limit is not None and produced >= limit:
                    return

    def _body_decoders(self) -> dict[bytes, Callable[[bytes, int], tuple[Any, int]]]:
        """fingerprint -> `(buf, pos) -> (event, end)`, calling the C engine directly when it runs."""
        if self._decoders is None:
            self._decoders = {}
            for fp, tc in self.codec.by_fingerprint.items():
                if tc.writable and VM is not None:
                    self._decoders[fp] = functools.partial(VM.decode, tc.program)
                else:
                    self._decoders[fp] = tc.decode_body
        return self._decoders

    def _time_floor(self, topic: str, partition: int, ts: int, end: int) -> int:
        """Kafka's answer for ts's millisecond: a lower bound of the first offset with ts_event >= ts."""
        found = self.client.offset_for_time_ms(topic, partition, max(ts, 0) // _NS_PER_MS)
        return end if found is None else found

    def end_offsets(self, topic: str) -> dict[int, int]:
        """Next offset to be written, per partition ({} for a missing topic)."""
        n = self.partitions(topic)
        if n == 0:
            return {}
        return {p: high for p, (_, high) in self.client.watermarks(topic, range(n)).items()}

    def offset_for_time(self, topic: str, partition: int, ts: int) -> int:
        """The first offset whose ts_event >= ts (the end offset if none): Kafka's ms answer, refined."""
        n = self.partitions(topic)
        if n == 0:
            return 0
        if not 0 <= partition < n:
            raise TapeError(f"topic {topic} has no partition {partition} (it has {n})")
        _, high = self.client.watermarks(topic, [partition])[partition]
        start = self._time_floor(topic, partition, ts, high)
        for off, _, value in self._fetch_range(topic, partition, start, high):
            if self._decode(value, topic, partition, off).ts_event >= ts:
                return off
        return high

    # --- consumers ------------------------------------------------------------------------------

    @staticmethod
    def _check_group(consumer: str) -> None:
        if not _GROUP_RE.match(consumer):
            raise TapeError(f"invalid consumer name {consumer!r}")

    def commit(self, consumer: str, topic: str, partition: int, offset: int) -> None:
        """Commit `offset` (the next one to read) for the consumer group named `consumer`."""
        self._check_group(consumer)
        self.client.commit(consumer, topic, partition, offset)

    def committed(self, consumer: str, topic: str, partition: int) -> int | None:
        """The offset the consumer group `consumer` committed on the partition, or None."""
        self._check_group(consumer)
        return self.client.committed(consumer, topic, partition)

    # --- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Flush the producer and close every connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.client.flush()
        finally:
            for reader in self._idle:
                reader.close()
            self._idle.clear()
            self.client.close()

    def __enter__(self) -> KafkaTape:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

