"""What every backend refuses, the same way: bad topic names, partition counts, and batches that
cannot be encoded (which must not leave a new, empty topic behind)."""

from __future__ import annotations

import pytest

from tests.conftest import TapeFactory, make_trades
from ticktape.codec import default_codec
from ticktape.errors import TapeError
from ticktape.tape import Encoded, open_tape

BAD_NAMES = ["{topic}\n", "", "_{topic}", ".{topic}", "-{topic}", "{topic}/x", "{topic} x", "{topic}é",
             "{topic}" + "x" * 200]


@pytest.mark.parametrize("pattern", BAD_NAMES, ids=range(len(BAD_NAMES)))
def test_a_bad_topic_name_is_refused_and_creates_nothing(tape_factory: TapeFactory, topic: str,
                                                         pattern: str) -> None:
    tape = tape_factory()
    name = pattern.format(topic=topic)
    for attempt in (lambda: tape.append(name, make_trades(1)), lambda: tape.create_topic(name, 1),
                    lambda: tape.partitions(name)):
        with pytest.raises(TapeError, match="invalid topic name"):
            attempt()
    assert tape.partitions(topic) == 0  # 'abc\n' was once silently 'abc' on Kafka


def test_the_longest_topic_name_works(tape_factory: TapeFactory, topic: str) -> None:
    tape = tape_factory()
    name = (topic + "x" * 201)[:201]
    tape.append(name, make_trades(2))
    assert [r.offset for r in tape.read(name)] == [0, 1]


@pytest.mark.parametrize("partitions", [0, -1])
def test_a_topic_of_no_partitions_is_refused(tape_factory: TapeFactory, topic: str, partitions: int) -> None:
    tape = tape_factory()
    with pytest.raises(TapeError, match=f"partitions must be at least 1, not {partitions}"):
        tape.create_topic(topic, partitions)
    assert tape.partitions(topic) == 0


@pytest.mark.parametrize(("value", "why"), [("0", "at least 1, not 0"), ("-1", "at least 1, not -1"),
                                            ("abc", "a whole number, not 'abc'"),
                                            ("1.5", "a whole number, not '1.5'")])
def test_a_tape_uri_with_bad_partitions_is_refused(tape_factory: TapeFactory, value: str, why: str) -> None:
    tape = tape_factory()
    with pytest.raises(TapeError, match=f"partitions must be {why}"):
        open_tape(f"{tape.uri}?partitions={value}")


@pytest.mark.parametrize("partitions", [1, 3])
def test_a_batch_that_fails_to_encode_creates_no_topic(tape_factory: TapeFactory, topic: str,
                                                       partitions: int) -> None:
    tape = tape_factory(partitions=partitions)
    good = make_trades(30) + make_trades(30, instrument="ETHUSDT") + make_trades(30, instrument="SOLUSDT")
    bad = good[-1]._replace(ts_event=2**70)  # beyond Avro's long: found only when encoding
    with pytest.raises(TapeError, match="ts_event"):
        tape.append(topic, [*good, bad])
    assert tape.partitions(topic) == 0
    assert topic not in [t.name for t in tape.topics()]
    with pytest.raises(TapeError, match="item 1 of the batch"):
        tape.append_encoded(topic, [Encoded("BTCUSDT", 1, default_codec().encode(good[0])),
                                    Encoded("BTCUSDT", 1, b"\xc3\x01 not an event")])
    assert tape.partitions(topic) == 0
    tape.append(topic, good)  # the good part alone goes in, creating the topic as usual
    assert tape.partitions(topic) == partitions
    assert sorted(r.event.trade_id for p in range(partitions) for r in tape.read(topic, p)) == sorted(
        e.trade_id for e in good)
