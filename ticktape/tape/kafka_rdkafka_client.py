"""The confluent-kafka (librdkafka) adapter of the `KafkaClient` port: `kafka+rdkafka://`."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from ticktape.errors import TapeError
from ticktape.tape.kafka_client import Fetched, ProduceBatch, Security, describe

log = logging.getLogger("ticktape.tape.kafka")

# Errors of offsets queries that mean "the cluster is still settling": wait and ask again.
_SETTLING = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                       KafkaError.UNKNOWN_TOPIC_OR_PART})

# Errors a consumer reports while it keeps retrying by itself (a broker restarting, ...).
_TRANSIENT = {KafkaError._PARTITION_EOF, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
              KafkaError._RESOLVE, KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
              KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION}
_INVALID_OFFSET = -1001  # librdkafka's OFFSET_INVALID: nothing committed


class RdkafkaReader:
    """A librdkafka consumer assigned to one partition at a time; it never joins its group."""

    def __init__(self, consumer: Consumer, timeout: float) -> None:
        self._consumer = consumer
        self._timeout = timeout
        self._topic = ""
        self._partition = -1
        self._known: set[str] = set()

    def assign(self, topic: str, partition: int, offset: int) -> None:
        try:
            if topic not in self._known:
                # Without the topic's metadata in this handle, the first fetch waits ~1 s for
                # librdkafka's periodic metadata refresh; asking for it directly takes a few ms.
                self._consumer.list_topics(topic, timeout=self._timeout)
                self._known.add(topic)
            self._consumer.assign([TopicPartition(topic, partition, offset)])
        except KafkaException as exc:
            raise TapeError(f"cannot read topic {topic} partition {partition}: {exc}") from exc
        self._topic, self._partition = topic, partition

    def fetch(self, timeout: float, max_records: int = 10_000) -> list[Fetched]:
        try:
            # consume(n, t) waits until it has n messages or t passes: wait for one, then take
            # whatever else is already queued without waiting.
            messages = self._consumer.consume(1, timeout)
            if messages and max_records > 1:
                messages += self._consumer.consume(max_records - 1, 0)
        except KafkaException as exc:
            raise TapeError(f"reading topic {self._topic} partition {self._partition}: {exc}") from exc
        out: list[Fetched] = []
        append = out.append
        # assign() purges what was fetched for a previous assignment, so every message here
        # is of the assigned partition (the tape also drops offsets before its position).
        for m in messages:
            err = m.error()
            if err is None:
                append((m.offset(), m.key(), m.value()))  # type: ignore[arg-type]
            elif err.code() in _TRANSIENT and not err.fatal():
                if err.code() != KafkaError._PARTITION_EOF:
                    log.debug("consumer: %s (retrying)", err)
            else:
                raise TapeError(f"reading topic {self._topic} partition {self._partition}: {err.str()}")
        return out

    def position(self) -> int | None:
        if self._partition < 0:
            return None
        try:
            [tp] = self._consumer.position([TopicPartition(self._topic, self._partition)])
        except KafkaException:
            return None
        return int(tp.offset) if tp.offset >= 0 else None

    def release(self) -> None:
        self._topic, self._partition = "", -1
        self._consumer.unassign()

    def close(self) -> None:
        self._consumer.close()


class RdkafkaClient:
    """Producer, a metadata consumer and per-group consumers of confluent-kafka on one cluster."""

    name = "confluent-kafka"

    def __init__(self, servers: list[str], *, timeout: float, security: Security, producer: dict[str, Any],
                 consumer: dict[str, Any]) -> None:
        self.servers = servers
        self.timeout = timeout
        # librdkafka logs through Python logging (not straight to stderr), served on poll/flush.
        self._common: dict[str, Any] = {"bootstrap.servers": ",".join(servers), "client.id": "ticktape",
                                        "socket.timeout.ms": int(timeout * 1000),
                                        "logger": logging.getLogger("ticktape.tape.kafka.rdkafka"),
                                        **security.rdkafka()}
        self._producer_config = producer
        self._consumer_config = consumer
        self._producer: Producer | None = None
        self._admin: AdminClient | None = None
        self._meta: Consumer | None = None
        self._groups: dict[str, Consumer] = {}
        self._errors: list[tuple[int, KafkaError]] = []

    def _fail(self, what: str, exc: BaseException) -> TapeError:
        return TapeError(f"Kafka at {describe(self.servers)}: {what}: {exc}")

    def _consumer(self, group: str, **extra: Any) -> Consumer:
        config = {**self._common, "group.id": group, "enable.auto.commit": False,
                  "enable.auto.offset.store": False, **extra}
        try:
            return Consumer(config)
        except (KafkaException, ValueError) as exc:
            raise self._fail("creating a consumer", exc) from exc

    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(self._common)
        return self._admin

    def meta(self) -> Consumer:
        # Metadata goes through a consumer handle: librdkafka's producer and admin handles
        # ask the broker to auto-create topics they look up, a consumer does not.
        if self._meta is None:
            self._meta = self._consumer("ticktape.meta")
        return self._meta

    def producer(self) -> Producer:
        if self._producer is None:
            try:
                self._producer = Producer({**self._common, **self._producer_config})
            except (KafkaException, ValueError) as exc:
                raise self._fail("creating the producer", exc) from exc
        return self._producer

    def new_reader(self) -> RdkafkaReader:
        return RdkafkaReader(self._consumer("ticktape.reader", **{
            "enable.partition.eof": True, "auto.offset.reset": "earliest", **self._consumer_config}), self.timeout)

    # --- topics --------------------------------------------------------------------------------

    def partitions(self, topic: str) -> int:
        try:
            md = self.meta().list_topics(topic=topic, timeout=self.timeout)
        except KafkaException as exc:
            raise self._fail(f"describing topic {topic}", exc) from exc
        info = md.topics.get(topic)
        if info is None or (info.error is not None and info.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
            return 0
        return len(info.partitions)

    def topic_names(self) -> list[str]:
        try:
            return list(self.meta().list_topics(timeout=self.timeout).topics)
        except KafkaException as exc:
            raise self._fail("listing topics", exc) from exc

    def create_topic(self, topic: str, partitions: int, replication: int, configs: dict[str, str]) -> bool:
        future = self.admin().create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=replication, config=configs)],
            operation_timeout=self.timeout, request_timeout=self.timeout)[topic]
        try:
            future.result(timeout=self.timeout)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return False
            raise self._fail(f"creating topic {topic}", exc) from exc
        # The controller has it; wait until metadata shows a leader for every partition.
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            info = self.meta().list_topics(topic=topic, timeout=self.timeout).topics.get(topic)
            if (info is not None and info.error is None and len(info.partitions) == partitions
                    and all(p.leader >= 0 for p in info.partitions.values())):
                return True
            time.sleep(0.05)
        raise TapeError(f"topic {topic} created but its partitions have no leader after {self.timeout} s")

    # --- producing -----------------------------------------------------------------------------

    def _delivered(self, offsets: list[int], i: int, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._errors.append((i, err))
        else:
            offsets[i] = msg.offset()  # type: ignore[assignment]

    def produce(self, topic: str, batch: ProduceBatch) -> Sequence[int]:
        producer = self.producer()
        produce = producer.produce
        n = len(batch.values)
        offsets = [-1] * n
        self._errors = []
        done = functools.partial(self._delivered, offsets)
        partial = functools.partial
        parts = batch.partitions
        keys, values, stamps, headers = batch.keys, batch.values, batch.timestamps_ms, batch.headers
        i = resume = 0
        try:
            while True:
                try:
                    # One delivery callback per record, bound to its index: the offsets come
                    # from the broker's acknowledgements, whatever other producers do.
                    if isinstance(parts, int):
                        for i in range(resume, n):
                            produce(topic, values[i], keys[i], parts, on_delivery=partial(done, i),
                                    timestamp=stamps[i], headers=headers[i])  # type: ignore[arg-type]
                    else:
                        for i in range(resume, n):
                            produce(topic, values[i], keys[i], parts[i], on_delivery=partial(done, i),
                                    timestamp=stamps[i], headers=headers[i])  # type: ignore[arg-type]
                    break
                except BufferError:  # local queue full: let librdkafka send some, then resume at i
                    resume = i
                    producer.poll(0.05)
            self._flush(producer, topic)
        except KafkaException as exc:
            raise self._fail(f"append to {topic}", exc) from exc
        if self._errors:
            i, err = self._errors[0]
            if err.fatal():
                # A fatal idempotence error poisons the producer: the next append starts a new one.
                self._producer = None
            raise TapeError(f"append to {topic}: record {i} of the batch (partition {batch.partition(i)}) was not "
                            f"acknowledged: {err.str()} ({len(self._errors)} records failed)")
        return offsets

    def _flush(self, producer: Producer, topic: str) -> None:
        # delivery.timeout.ms bounds each record; this only guards against a wedged client.
        deadline = time.monotonic() + float(self._producer_config.get("delivery.timeout.ms", 120_000)) / 1000 + 30
        while producer.flush(1.0) > 0:
            if time.monotonic() > deadline:
                raise TapeError(f"append to {topic}: records still unacknowledged after the delivery timeout")

    def flush(self) -> None:
        if self._producer is not None:
            self._flush(self._producer, "(close)")

    # --- offsets -------------------------------------------------------------------------------

    def _retrying(self, what: str, call: Any) -> Any:
        """Run an offsets query, retrying errors the broker reports while it settles.

        Right after a topic is created (or a broker restarts) its partitions may have no leader
        yet (NOT_LEADER_FOR_PARTITION, LEADER_NOT_AVAILABLE): that is a wait, not a failure.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return call()
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                settling = isinstance(err, KafkaError) and (err.retriable() or err.code() in _SETTLING)
                if not settling or time.monotonic() > deadline:
                    raise self._fail(what, exc) from exc
                log.debug("retrying %s after %s", what, err)
                time.sleep(0.1)

    def watermarks(self, topic: str, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        out = {}
        meta = self.meta()
        for p in partitions:
            low, high = self._retrying(f"offsets of {topic} partition {p}", lambda p=p: meta.get_watermark_offsets(
                TopicPartition(topic, p), timeout=self.timeout, cached=False))
            out[p] = (int(low), int(high))
        return out

    def offset_for_time_ms(self, topic: str, partition: int, ts_ms: int) -> int | None:
        [found] = self._retrying(f"offset for time in {topic} partition {partition}", lambda: self.meta(
        ).offsets_for_times([TopicPartition(topic, partition, ts_ms)], timeout=self.timeout))
        if found.error is not None:
            raise TapeError(f"offset for time in {topic} partition {partition}: {found.error}")
        return int(found.offset) if found.offset >= 0 else None

    def _group(self, group: str) -> Consumer:
        consumer = self._groups.get(group)
        if consumer is None:
            consumer = self._groups[group] = self._consumer(group)
        return consumer

    def commit(self, group: str, topic: str, partition: int, offset: int) -> None:
        try:
            [result] = self._group(group).commit(offsets=[TopicPartition(topic, partition, offset)],
                                                 asynchronous=False)
        except KafkaException as exc:
            raise self._fail(f"commit of {group} on {topic} partition {partition}", exc) from exc
        if result.error is not None:
            raise TapeError(f"commit of {group} on {topic} partition {partition} failed: {result.error}")

    def committed(self, group: str, topic: str, partition: int) -> int | None:
        try:
            [found] = self._group(group).committed([TopicPartition(topic, partition)], timeout=self.timeout)
        except KafkaException as exc:
            raise self._fail(f"committed offsets of {group}", exc) from exc
        if found.error is not None:
            raise TapeError(f"committed offsets of {group} on {topic} partition {partition}: {found.error}")
        return None if found.offset == _INVALID_OFFSET or found.offset < 0 else int(found.offset)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(30)
            self._producer = None
        for consumer in [*self._groups.values(), *([self._meta] if self._meta is not None else [])]:
            consumer.close()
        self._groups.clear()
        self._meta = None
        self._admin = None
