"""What a user of Kafka tooling sees of the Kafka tape, beyond the shared tape contract.

Records as other Kafka clients see them (key, CreateTime timestamp, headers, Avro value,
topic configuration), both clients interoperating on one topic, consumer offsets as Kafka
consumer groups, positions from the broker's acknowledgements, errors that name the record.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from tests.conftest import make_trades
from tests.kafka_fixtures import KAFKA_BACKENDS
from ticktape.codec import default_codec
from ticktape.errors import DecodeError, TapeError
from ticktape.events import Quote
from ticktape.tape import Encoded, Position, open_tape, partition_for
from ticktape.tape.kafka import KafkaTape, parse_servers

UriFor = Callable[[str], str]


def new_topic() -> str:
    return f"kt.{uuid.uuid4().hex[:12]}"


def test_uri_parsing_and_options() -> None:
    assert parse_servers("kafka://a:1,b:2?partitions=3") == ("kafka", ["a:1", "b:2"])
    assert parse_servers("kafka+rdkafka://broker") == ("kafka+rdkafka", ["broker:9092"])
    for bad in ("kafka://", "kafka://host:port", "kafkax://h:1", "h:1"):
        with pytest.raises(TapeError):
            parse_servers(bad)
    with pytest.raises(TapeError, match="unknown Kafka tape options: colour"):
        open_tape("kafka://127.0.0.1:1?colour=red")
    with pytest.raises(TapeError, match="compression"):
        open_tape("kafka://127.0.0.1:1", compression="brotli")


@pytest.mark.parametrize("backend", KAFKA_BACKENDS)
def test_unreachable_broker_is_a_tape_error(backend: str) -> None:
    tape = open_tape(f"{backend}://127.0.0.1:1", timeout=2)
    with pytest.raises(TapeError, match=r"127\.0\.0\.1:1"):
        tape.partitions("md.x")
    tape.close()


@pytest.mark.kafka
@pytest.mark.parametrize("backend", KAFKA_BACKENDS)
def test_records_as_other_kafka_clients_see_them(backend: str, kafka_tape_uri: UriFor, kafka_broker: str) -> None:
    topic = new_topic()
    tape = open_tape(kafka_tape_uri(backend) + "?partitions=4")
    events = [t for i in range(12) for t in make_trades(1, start=i, instrument=f"SYM{i % 6}")]
    quote = Quote("binance", "SYM1", 1_700_000_000_123_456_789, 1_700_000_000_223_456_789, 1.0, 2.0, 1.5, 3.0)
    positions = tape.append(topic, [*events, quote])
    assert tape.partitions(topic) == 4
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker, group_id=None, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in range(4)]
    consumer.assign(tps)
    consumer.seek_to_beginning()
    raw = {}
    while len(raw) < len(events) + 1:
        for recs in consumer.poll(timeout_ms=2000).values():
            for r in recs:
                raw[(r.partition, r.offset)] = r
    consumer.close()
    codec = default_codec()
    for event, pos in zip([*events, quote], positions, strict=True):
        r = raw[(pos.partition, pos.offset)]
        key = event.instrument
        assert r.key == key.encode() and pos.partition == partition_for(key, 4)
        assert r.timestamp == event.ts_event // 1_000_000 and r.timestamp_type == 0  # CreateTime, ms
        assert dict(r.headers) == {"ticktape.type": type(event).__name__.encode(),
                                   "ticktape.schema": codec.fingerprint(type(event)).hex().encode()}
        assert codec.decode(r.value) == event  # full-ns ts_event kept in the Avro value
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker)
    configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])["topic"][topic]
    assert configs["retention.ms"]["value"] == "-1"  # an event log keeps everything
    admin.close()
    tape.close()


def _raw_records(broker: str, topic: str, partitions: int, count: int) -> dict[tuple[int, int], tuple[object, ...]]:
    """(partition, offset) -> (key, value, timestamp, timestamp type, headers) as a plain Kafka consumer sees them."""
    consumer = KafkaConsumer(bootstrap_servers=broker, group_id=None, enable_auto_commit=False)
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    consumer.seek_to_beginning()
    raw: dict[tuple[int, int], tuple[object, ...]] = {}
    while len(raw) < count:
        for recs in consumer.poll(timeout_ms=2000).values():
            for r in recs:
                raw[(r.partition, r.offset)] = (r.key, r.value, r.timestamp, r.timestamp_type, list(r.headers))
    consumer.close()
    return raw


@pytest.mark.kafka
@pytest.mark.parametrize("backend", KAFKA_BACKENDS)
def test_append_encoded_produces_the_records_append_produces(backend: str, kafka_tape_uri: UriFor,
                                                             kafka_broker: str) -> None:
    plain, pre = new_topic(), new_topic()
    tape = open_tape(kafka_tape_uri(backend) + "?partitions=3")
    codec = default_codec()
    events = [*[t for i in range(9) for t in make_trades(1, start=i, instrument=f"SYM{i % 4}")],
              Quote("binance", "SYM1", 1_700_000_000_123_456_789, 1_700_000_000_223_456_789, 1.0, 2.0, 1.5, 3.0),
              make_trades(1, ts0=946_684_800_123_999_999)[0]]  # 2000-01-01, ns truncated to ms
    keys = [None if i == 4 else codec.key_of(e) for i, e in enumerate(events)]
    expected = tape.append(plain, events, keys=keys)
    positions = tape.append_encoded(pre, [Encoded(k, e.ts_event, codec.encode(e)) for k, e in zip(keys, events,
                                                                                                     strict=True)])
    assert positions == expected
    assert _raw_records(kafka_broker, pre, 3, len(events)) == _raw_records(kafka_broker, plain, 3, len(events))
    tape.close()


@pytest.mark.kafka
def test_both_clients_share_topics_and_consumer_groups(kafka_tape_uri: UriFor, kafka_broker: str) -> None:
    if len(KAFKA_BACKENDS) < 2:
        pytest.skip("confluent-kafka is not installed")
    topic = new_topic()
    py, rd = open_tape(kafka_tape_uri("kafka")), open_tape(kafka_tape_uri("kafka+rdkafka"))
    a, b = make_trades(500), make_trades(500, start=500)
    assert py.append(topic, a) == [Position(0, i) for i in range(500)]
    assert rd.append(topic, b) == [Position(0, i) for i in range(500, 1000)]
    assert [r.event for r in rd.read(topic)] == [r.event for r in py.read(topic)] == a + b
    group = f"robot.{uuid.uuid4().hex[:8]}"
    py.commit(group, topic, 0, 123)
    assert rd.committed(group, topic, 0) == 123
    rd.commit(group, topic, 0, 456)
    assert py.committed(group, topic, 0) == 456
    # the offsets are an ordinary Kafka consumer group's: kafka-consumer-groups and friends see them
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker)
    offsets = admin.list_group_offsets({group: [TopicPartition(topic, 0)]})[group]
    assert offsets[TopicPartition(topic, 0)].offset == 456
    admin.close()
    py.close()
    rd.close()


@pytest.mark.kafka
@pytest.mark.parametrize("backend", KAFKA_BACKENDS)
def test_positions_come_from_the_broker_with_concurrent_writers(backend: str, kafka_tape_uri: UriFor) -> None:
    topic = new_topic()
    writers = [open_tape(kafka_tape_uri(backend)) for _ in range(2)]
    writers[0].create_topic(topic, 1)
    landed: dict[int, str] = {}
    lock = threading.Lock()

    def write(w: int) -> None:
        for i in range(20):
            batch = make_trades(50, start=w * 10_000 + i * 50)
            positions = writers[w].append(topic, batch)
            with lock:
                for e, pos in zip(batch, positions, strict=True):
                    landed[pos.offset] = e.trade_id

    threads = [threading.Thread(target=write, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    records = list(writers[0].read(topic))
    assert len(records) == len(landed) == 2_000
    assert {r.offset: r.event.trade_id for r in records} == landed  # type: ignore[attr-defined]
    for w in writers:
        w.close()


@pytest.mark.kafka
@pytest.mark.parametrize("backend", KAFKA_BACKENDS)
def test_foreign_and_corrupt_records(backend: str, kafka_tape_uri: UriFor, kafka_broker: str) -> None:
    topic = new_topic()
    tape = open_tape(kafka_tape_uri(backend))
    assert isinstance(tape, KafkaTape)
    tape.append(topic, make_trades(2))
    producer = KafkaProducer(bootstrap_servers=kafka_broker)
    producer.send(topic, value=b"\xc3\x01not really avro", partition=0)
    producer.flush()
    got = []
    with pytest.raises(DecodeError, match=f"topic {topic} partition 0 offset 2"):
        for r in tape.read(topic):
            got.append(r.offset)
    assert got == [0, 1]
    # a topic another application wrote (not ticktape events) is listed without timestamps
    foreign = new_topic()
    producer.send(foreign, value=b'{"hello": "json"}')
    producer.flush()
    producer.close()
    info = {t.name: t for t in tape.topics()}
    assert info[foreign].events == 1 and info[foreign].first_ts is None
    assert info[topic].events == 3
    tape.close()


@pytest.mark.kafka
@pytest.mark.parametrize("backend", KAFKA_BACKENDS)
def test_old_and_future_timestamps_are_kept(backend: str, kafka_tape_uri: UriFor) -> None:
    # Kafka 4 rejects records more than an hour ahead of the broker's clock by default; the
    # tape's topics accept any ts_event (historical imports, simulations ahead of the clock).
    topic = new_topic()
    tape = open_tape(kafka_tape_uri(backend))
    old = make_trades(2, ts0=946_684_800_000_000_000)  # 2000-01-01
    future = make_trades(2, start=2, ts0=4_102_444_800_000_000_000)  # 2100-01-01
    tape.append(topic, old + future)
    assert [r.event for r in tape.read(topic)] == old + future
    assert tape.offset_for_time(topic, 0, future[0].ts_event) == 2
    tape.close()


@pytest.mark.kafka
@pytest.mark.parametrize("backend", KAFKA_BACKENDS)
def test_events_at_the_epoch_keep_an_epoch_timestamp(backend: str, kafka_tape_uri: UriFor, kafka_broker: str) -> None:
    # librdkafka stamps a record given timestamp 0 with the current time: the tape gives it 1 ms.
    topic = new_topic()
    tape = open_tape(kafka_tape_uri(backend))
    stamps = (0, 999_999, 1_000_000, 5_000_000)
    events = [make_trades(1, ts0=ts)[0]._replace(trade_id=str(i)) for i, ts in enumerate(stamps)]
    tape.append(topic, events)
    raw = _raw_records(kafka_broker, topic, 1, len(events))
    assert [raw[(0, i)][2] for i in range(len(events))] == [1, 1, 1, 5]
    assert [tape.offset_for_time(topic, 0, ts) for ts in (0, 1, 999_999, 1_000_000, 1_000_001)] == [0, 1, 1, 2, 3]
    assert [r.event for r in tape.read(topic, from_time=999_999)] == events[1:]
    tape.close()


def test_sasl_password_comes_only_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TapeError, match="TICKTAPE_KAFKA_SASL_PASSWORD"):
        open_tape("kafka://127.0.0.1:1?security_protocol=SASL_SSL&sasl_password=hunter2")
    monkeypatch.setenv("TICKTAPE_KAFKA_SASL_PASSWORD", "hunter2")
    for backend in KAFKA_BACKENDS:
        tape = open_tape(f"{backend}://127.0.0.1:1?security_protocol=SASL_SSL&sasl_mechanism=SCRAM-SHA-512"
                         "&sasl_username=robot&ssl_cafile=/etc/ca.pem")
        assert isinstance(tape, KafkaTape)
        assert "hunter2" not in repr(tape.security) and "hunter2" not in repr(tape)
        config = tape.security.rdkafka() if backend == "kafka+rdkafka" else tape.security.kafka_python()
        assert "hunter2" in config.values() and "SCRAM-SHA-512" in config.values() and "robot" in config.values()
        tape.close()
    with pytest.raises(TapeError, match="security_protocol"):
        open_tape("kafka://127.0.0.1:1?security_protocol=TLS")


@pytest.mark.kafka
@pytest.mark.parametrize("backend", KAFKA_BACKENDS)
def test_sasl_against_a_plaintext_broker_is_a_tape_error(backend: str, kafka_tape_uri: UriFor,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # The settings reach the client: it speaks SASL, which this broker does not understand.
    monkeypatch.setenv("TICKTAPE_KAFKA_SASL_PASSWORD", "x")
    tape = open_tape(kafka_tape_uri(backend) + "?security_protocol=SASL_PLAINTEXT&sasl_mechanism=PLAIN"
                     "&sasl_username=u&timeout=3")
    with pytest.raises(TapeError):
        tape.partitions("md.x")
    tape.close()


@pytest.mark.kafka
@pytest.mark.parametrize("backend", KAFKA_BACKENDS)
def test_topic_written_by_a_transactional_producer(backend: str, kafka_tape_uri: UriFor, kafka_broker: str) -> None:
    # Commit markers take offsets but are never delivered: the end offset lies past the last
    # record, and reading must still stop there at once (not wait for records that never come).
    topic = new_topic()
    codec = default_codec()
    events = make_trades(5)
    producer = KafkaProducer(bootstrap_servers=kafka_broker, transactional_id=f"tx-{topic}")
    producer.init_transactions()
    producer.begin_transaction()
    for e in events:
        producer.send(topic, value=codec.encode(e), key=e.instrument.encode(), partition=0)
    producer.commit_transaction()
    producer.close()
    tape = open_tape(kafka_tape_uri(backend))
    deadline = time.monotonic() + 30  # another client auto-created the topic: let metadata catch up
    while tape.partitions(topic) == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    # 5 records + the commit marker, which the coordinator writes after commit_transaction returns
    while tape.end_offsets(topic) != {0: 6} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tape.end_offsets(topic) == {0: 6}
    started = time.monotonic()
    assert [r.event for r in tape.read(topic)] == events
    assert time.monotonic() - started < 10
    info = next(t for t in tape.topics() if t.name == topic)
    assert info.first_ts == events[0].ts_event and info.last_ts == events[-1].ts_event
    tape.close()


@pytest.mark.kafka
@pytest.mark.parametrize("compression", ["gzip", "lz4", "zstd", "snappy"])
def test_compressed_batches_cross_between_clients(compression: str, kafka_tape_uri: UriFor) -> None:
    # Each client writes compressed batches the other must read: kafka-python decompresses lz4,
    # zstd and snappy only with the codec packages its extras install.
    topic = new_topic()
    events = make_trades(2_000)
    writers = [open_tape(kafka_tape_uri(b) + f"?compression={compression}") for b in KAFKA_BACKENDS]
    for i, w in enumerate(writers):
        w.append(topic, events[i * 1_000:(i + 1) * 1_000])
    for b in KAFKA_BACKENDS:
        reader = open_tape(kafka_tape_uri(b))
        assert [r.event for r in reader.read(topic)] == events
        reader.close()
    for w in writers:
        w.close()
