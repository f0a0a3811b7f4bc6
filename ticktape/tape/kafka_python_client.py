"""The kafka-python adapter of the `KafkaClient` port (the default, pure-Python client)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import OffsetSpec
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError
from kafka.structs import OffsetAndMetadata

from ticktape.errors import TapeError
from ticktape.tape.kafka_client import Fetched, ProduceBatch, Security, describe

log = logging.getLogger("ticktape.tape.kafka")

# kafka-python logs every connection at INFO, and warns when its IO loop waits on the GIL
# (which our encode loop holds): quiet both, unless the application set levels itself.
for _name, _level in (("kafka", logging.WARNING), ("kafka.net.selector", logging.ERROR)):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(_level)

T = TypeVar("T")


class KafkaPythonReader:
    """A kafka-python consumer without a group (offsets are the tape's business), one partition."""

    def __init__(self, consumer: KafkaConsumer) -> None:
        self._consumer = consumer
        self._tp: TopicPartition | None = None

    def assign(self, topic: str, partition: int, offset: int) -> None:
        tp = TopicPartition(topic, partition)
        try:
            self._consumer.assign([tp])
            self._consumer.seek(tp, offset)
        except KafkaError as exc:
            raise TapeError(f"cannot read topic {topic} partition {partition}: {exc}") from exc
        self._tp = tp

    def fetch(self, timeout: float, max_records: int = 10_000) -> list[Fetched]:
        try:
            batches = self._consumer.poll(timeout_ms=int(timeout * 1000), max_records=max_records)
        except KafkaError as exc:
            raise TapeError(f"reading {self._tp}: {exc}") from exc
        records = batches.get(self._tp) if batches else None
        if not records:
            return []
        return [(r.offset, r.key, r.value) for r in records]

    def position(self) -> int | None:
        if self._tp is None:
            return None
        try:
            return int(self._consumer.position(self._tp))
        except KafkaError:
            return None

    def release(self) -> None:
        self._tp = None
        self._consumer.assign([])

    def close(self) -> None:
        self._consumer.close(autocommit=False)


@contextlib.contextmanager
def _library_logs_quiet() -> Iterator[None]:
    """kafka-python's own log lines off while connecting, unless debugging: it logs a warning per
    bootstrap attempt (about 20 over the timeout) before the error that ticktape reports in one line."""
    logger = logging.getLogger("kafka")
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    before = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(before)


class KafkaPythonClient:
    """Admin, producer and consumers of kafka-python on one cluster, created lazily."""

    name = "kafka-python"

    def __init__(self, servers: list[str], *, timeout: float, security: Security, producer: dict[str, Any],
                 consumer: dict[str, Any]) -> None:
        self.servers = servers
        self.timeout = timeout
        self._common = {"bootstrap_servers": servers, "client_id": "ticktape",
                        "request_timeout_ms": int(timeout * 1000), **security.kafka_python()}
        self._producer_config = producer
        self._consumer_config = consumer
        self._admin: KafkaAdminClient | None = None
        self._producer: KafkaProducer | None = None

    # --- connections ---------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run an admin call, retrying retriable errors (e.g. the group coordinator still loading)."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                if what.startswith("connecting"):
                    with _library_logs_quiet():  # our one-line error says it all; no 20 lines of waiting
                        return fn()
                return fn()
            except KafkaError as exc:
                if not getattr(exc, "retriable", False) or time.monotonic() > deadline:
                    raise TapeError(f"Kafka at {describe(self.servers)}: {what}: {exc}") from exc
                log.debug("retrying %s after %s", what, exc)
                time.sleep(0.1)

    def admin(self) -> KafkaAdminClient:
        if self._admin is None:
            def make() -> KafkaAdminClient:
                return KafkaAdminClient(bootstrap_timeout_ms=int(self.timeout * 1000), **self._common)
            self._admin = self._call("connecting", make)
        return self._admin

    def producer(self) -> KafkaProducer:
        if self._producer is None:
            config = {**self._common, **self._producer_config}
            self._producer = self._call("connecting the producer", lambda: KafkaProducer(**config))
        return self._producer

    def new_reader(self) -> KafkaPythonReader:
        config = {**self._common, "group_id": None, "enable_auto_commit": False,
                  "auto_offset_reset": "earliest", **self._consumer_config}
        return KafkaPythonReader(self._call("connecting a consumer", lambda: KafkaConsumer(**config)))

    # --- topics --------------------------------------------------------------------------------

    def partitions(self, topic: str) -> int:
        info = self._call(f"describing topic {topic}", lambda: self.admin().describe_topics([topic]))
        if not info or info[0]["error_code"] == UnknownTopicOrPartitionError.errno:
            return 0
        return len(info[0]["partitions"])

    def topic_names(self) -> list[str]:
        return list(self._call("listing topics", lambda: self.admin().list_topics()))

    def create_topic(self, topic: str, partitions: int, replication: int, configs: dict[str, str]) -> bool:
        spec = {topic: {"num_partitions": partitions, "replication_factor": replication, "configs": configs}}
        try:
            self._call(f"creating topic {topic}", lambda: self.admin().create_topics(spec, wait_for_metadata=True))
        except TapeError as exc:
            if isinstance(exc.__cause__, TopicAlreadyExistsError):
                return False
            raise
        return True

    # --- producing -----------------------------------------------------------------------------

    def produce(self, topic: str, batch: ProduceBatch) -> Sequence[int]:
        producer = self.producer()
        send = producer.send
        parts = batch.partitions
        try:
            if isinstance(parts, int):
                futures = [send(topic, value=v, key=k, partition=parts, timestamp_ms=ts, headers=h)
                           for k, v, ts, h in zip(batch.keys, batch.values, batch.timestamps_ms, batch.headers,
                                                  strict=True)]
            else:
                futures = [send(topic, value=v, key=k, partition=p, timestamp_ms=ts, headers=h)
                           for p, k, v, ts, h in zip(parts, batch.keys, batch.values, batch.timestamps_ms,
                                                     batch.headers, strict=True)]
            # No timeout: delivery_timeout_ms bounds it, after which the futures fail.
            producer.flush()
        except KafkaError as exc:
            raise TapeError(f"append to {topic} at {describe(self.servers)}: {exc}") from exc
        offsets = []
        for i, f in enumerate(futures):
            if f.failed():
                raise TapeError(f"append to {topic}: record {i} of the batch (partition {batch.partition(i)}) "
                                f"was not acknowledged: {f.exception}") from f.exception
            offsets.append(f.value.offset)
        return offsets

    def flush(self) -> None:
        if self._producer is not None:
            self._producer.flush()

    # --- offsets -------------------------------------------------------------------------------

    def watermarks(self, topic: str, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        tps = [TopicPartition(topic, p) for p in partitions]
        admin = self.admin()
        deadline = time.monotonic() + self.timeout
        while True:
            low = self._call(f"offsets of {topic}", lambda: admin.list_partition_offsets(
                {tp: OffsetSpec.EARLIEST for tp in tps}))
            high = self._call(f"offsets of {topic}", lambda: admin.list_partition_offsets(
                {tp: OffsetSpec.LATEST for tp in tps}))
            if all(tp in low and tp in high for tp in tps) or time.monotonic() > deadline:
                break
            # A topic another client just created may not be in this client's metadata yet: the
            # admin call then answers without it. Ask again until the metadata catches up.
            log.debug("offsets of %s: partitions missing from the answer, retrying", topic)
            time.sleep(0.1)
        try:
            return {tp.partition: (low[tp].offset, high[tp].offset) for tp in tps}
        except KeyError as exc:
            raise TapeError(f"Kafka at {describe(self.servers)}: offsets of {topic}: no answer for {exc}") from None

    def offset_for_time_ms(self, topic: str, partition: int, ts_ms: int) -> int | None:
        tp = TopicPartition(topic, partition)
        found = self._call(f"offset for time in {topic}", lambda: self.admin().list_partition_offsets({tp: ts_ms}))
        result = found.get(tp)
        if result is None or result.offset is None or result.offset < 0:
            return None
        return int(result.offset)

    def commit(self, group: str, topic: str, partition: int, offset: int) -> None:
        tp = TopicPartition(topic, partition)
        result = self._call(f"committing for {group}", lambda: self.admin().alter_group_offsets(
            group, {tp: OffsetAndMetadata(offset, "", -1)}))
        error = result.get(tp)
        if error is not None and getattr(error, "errno", 0) != 0:
            raise TapeError(f"commit of {group} on {topic} partition {partition} failed: {error.__name__}")

    def committed(self, group: str, topic: str, partition: int) -> int | None:
        tp = TopicPartition(topic, partition)
        found = self._call(f"committed offsets of {group}", lambda: self.admin().list_group_offsets({group: [tp]}))
        meta = found.get(group, {}).get(tp)
        if meta is None or meta.offset is None or meta.offset < 0:
            return None
        return int(meta.offset)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None
        if self._admin is not None:
            self._admin.close()
            self._admin = None
