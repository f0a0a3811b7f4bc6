"""The small port `KafkaTape` needs from a Kafka client library.

Two adapters implement it: kafka-python (`kafka_python_client`, the default, pure Python)
and confluent-kafka (`kafka_rdkafka_client`, librdkafka, several times faster). Keeping
the port this narrow means the tape's semantics (ordering, end offsets, time seeks,
decoding, errors) live once in `ticktape.tape.kafka`, and both clients pass one suite.

Library exceptions never cross this port: adapters raise `TapeError` (`from` the original).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from ticktape.config import Secret

Header = tuple[str, bytes]


Fetched = tuple[int, bytes | None, bytes | None]
"""One raw record as fetched: (offset, key, value). A plain tuple: this is per record."""


class ProduceBatch(NamedTuple):
    """A batch to produce, as parallel lists (no per-record object on the hot path)."""

    partitions: int | list[int]  # one partition for all, or one per record
    keys: list[bytes | None]
    values: list[bytes]
    timestamps_ms: list[int]
    headers: list[list[Header]]

    def partition(self, i: int) -> int:
        p = self.partitions
        return p if isinstance(p, int) else p[i]


class Reader(Protocol):
    """A consumer assigned to one partition at a time (pooled by the tape)."""

    def assign(self, topic: str, partition: int, offset: int) -> None:
        """Read `topic`/`partition` from `offset` on (drops any previous assignment)."""

    def fetch(self, timeout: float, max_records: int = 10_000) -> list[Fetched]:
        """The next records of the assigned partition (maybe none), waiting up to `timeout` s."""

    def position(self) -> int | None:
        """The next offset the consumer will fetch (past control records), None if unknown."""

    def release(self) -> None:
        """Stop fetching (the reader goes back to the pool)."""

    def close(self) -> None:
        """Close the underlying consumer."""


class KafkaClient(Protocol):
    """Admin, produce, offsets and consumer-group operations on one cluster."""

    name: str

    def partitions(self, topic: str) -> int:
        """The topic's partition count, 0 if it does not exist (never auto-creates it)."""

    def topic_names(self) -> list[str]:
        """Every topic of the cluster, internal ones included."""

    def create_topic(self, topic: str, partitions: int, replication: int, configs: dict[str, str]) -> bool:
        """Create a topic and wait until its partitions have leaders; False if it already existed."""

    def produce(self, topic: str, batch: ProduceBatch) -> Sequence[int]:
        """Produce a batch, wait until every record is acknowledged; return their offsets."""

    def watermarks(self, topic: str, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        """(first offset present, end offset) per partition."""

    def offset_for_time_ms(self, topic: str, partition: int, ts_ms: int) -> int | None:
        """Kafka's `offsetsForTimes`: the first offset with timestamp >= ts_ms, None if none."""

    def commit(self, group: str, topic: str, partition: int, offset: int) -> None:
        """Store `offset` for consumer group `group` (synchronously)."""

    def committed(self, group: str, topic: str, partition: int) -> int | None:
        """The offset committed by `group`, None if none."""

    def new_reader(self) -> Reader:
        """A new consumer for reading partitions."""

    def flush(self) -> None:
        """Wait for anything still in flight."""

    def close(self) -> None:
        """Close every connection."""


def describe(servers: Sequence[str]) -> str:
    """How error messages name the cluster."""
    return ",".join(servers)


class Security(NamedTuple):
    """How to reach a secured cluster (SSL, SASL); the password only ever comes from the environment."""

    protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def kafka_python(self) -> dict[str, Any]:
        """The kafka-python spelling (common to its producer, consumer and admin client)."""
        out: dict[str, Any] = {"security_protocol": self.protocol}
        for key, value in (("sasl_mechanism", self.sasl_mechanism), ("sasl_plain_username", self.sasl_username),
                           ("ssl_cafile", self.ssl_cafile), ("ssl_certfile", self.ssl_certfile),
                           ("ssl_keyfile", self.ssl_keyfile)):
            if value is not None:
                out[key] = value
        if self.sasl_password is not None:
            out["sasl_plain_password"] = self.sasl_password.get()
        return out

    def rdkafka(self) -> dict[str, Any]:
        """The librdkafka spelling."""
        out: dict[str, Any] = {"security.protocol": self.protocol}
        for key, value in (("sasl.mechanisms", self.sasl_mechanism), ("sasl.username", self.sasl_username),
                           ("ssl.ca.location", self.ssl_cafile), ("ssl.certificate.location", self.ssl_certfile),
                           ("ssl.key.location", self.ssl_keyfile)):
            if value is not None:
                out[key] = value
        if self.sasl_password is not None:
            out["sasl.password"] = self.sasl_password.get()
        return out
