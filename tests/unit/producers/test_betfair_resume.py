"""A restarted `record betfair` without `--raw` resumes from its last `StreamClock` checkpoint
(`producers.betfair.resume`): caches rebuilt from the recorded books, clocks from the checkpoint,
and the books a kill left after the last checkpoint neither lost nor appended twice.

Offline and deterministic: the recorder's appends are played by hand on a file tape, cut where a
kill -9 can land. The real process killed against the local stream server is in
test_betfair_record_restart.py.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from betfair_helpers import FIXTURES, SHARED

from producers.betfair.parse import CLOCK_TOPIC, GAP_TOPIC, MARKET_TOPIC, StreamDecoder
from producers.betfair.resume import (
    RESTORABLE_FIELDS,
    cache_from_book,
    checkpoint,
    last_checkpoint,
    not_restorable,
    resume_market_stream,
    subscription,
)
from producers.betfair.session import StreamSession
from ticktape.codec import Codec
from ticktape.events import Event, FeedGap, MarketBook, MarketDefinition, StreamClock
from ticktape.tape.file import FileTape

FIELDS = ("EX_ALL_OFFERS", "EX_TRADED", "EX_TRADED_VOL", "EX_LTP", "EX_MARKET_DEF", "SP_TRADED", "SP_PROJECTED")
SUB = subscription({"marketIds": ["1.100"]}, FIELDS, None)


def _lines(path: Path) -> list[bytes]:
    """The file's messages as a live subscription sends them: the first one carries initialClk."""
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    return [orjson.dumps(dict(orjson.loads(lines[0]), initialClk="initial")), *lines[1:]]


def _record(tape: FileTape, session: StreamSession, lines: list[bytes], *, checkpoint_last: bool = True) -> None:
    """What the recorder does per flush (here: one flush per line): the stream's events, then the checkpoint.
    `checkpoint_last=False`: killed after the last line's events were appended, before its checkpoint."""
    for i, line in enumerate(lines):
        mark = None
        for topic, event in session.on_message(line, 1000 + i).events:
            if topic == CLOCK_TOPIC:
                mark = event
            else:
                tape.append(topic, [event])  # type: ignore[list-item]
        if mark is not None and (checkpoint_last or i < len(lines) - 1):
            tape.append(CLOCK_TOPIC, [checkpoint(mark, SUB, tape.end_offsets(MARKET_TOPIC))])  # type: ignore[arg-type]


def _market(tape: FileTape) -> list[Event]:
    return [_untimed(r.event) for r in tape.read(MARKET_TOPIC)]


def _untimed(event: object) -> Event:
    """A market event without its capture time (a restart captures the same changes later)."""
    assert isinstance(event, MarketBook | MarketDefinition)
    return event._replace(ts_recv=0)


@pytest.mark.parametrize("source", [pytest.param("fixture"), pytest.param("starting-prices"),
                                    pytest.param("real", marks=pytest.mark.shared_data("betfair/1.197931750"))])
def test_a_cache_rebuilt_from_each_book_gives_that_book_again(source: str, runner_impl: str) -> None:
    if source == "starting-prices":
        from tests.unit.producers.test_betfair_starting_price import stream_lines
        lines = stream_lines()
    else:
        lines = _lines(FIXTURES / "market.stream" if source == "fixture" else SHARED / "1.197931750")
    decoder = StreamDecoder()
    books = [e for line in lines for _, e in decoder.decode_line(line) if isinstance(e, MarketBook)]
    assert books
    codec = Codec()
    for book in books:  # compared as bytes: Betfair's NaN starting prices are not == themselves
        assert codec.encode(cache_from_book(book).book(book.ts_event, book.ts_recv)) == codec.encode(book)
    if source == "starting-prices":
        assert any(r.sp_back_stake_taken and r.sp_lay_liability_taken and r.sp_near is not None
                   for b in books for r in b.runners)


@pytest.mark.parametrize("source", [pytest.param("fixture"),
                                    pytest.param("real", marks=pytest.mark.shared_data("betfair/1.197931750"))])
@pytest.mark.parametrize("checkpointed", [True, False], ids=["after-checkpoint", "between-books-and-checkpoint"])
def test_a_resumed_session_continues_the_whole_file(source: str, checkpointed: bool, tmp_path: Path,
                                                    runner_impl: str) -> None:
    """Killed after line `cut`: either after its checkpoint, or after its books but before its checkpoint.
    Betfair resends every message after the checkpoint's clk; the tape ends as the whole file's, once each."""
    path, cut = (FIXTURES / "market.stream", 3) if source == "fixture" else (SHARED / "1.197931750", 60)
    lines = _lines(path)
    decoder = StreamDecoder()
    expected = [_untimed(e) for line in lines for t, e in decoder.decode_line(line) if t == MARKET_TOPIC]
    tape = FileTape(tmp_path / "tape")
    _record(tape, StreamSession("market", checkpoints=True), lines[:cut + 1], checkpoint_last=checkpointed)
    cp = last_checkpoint(tape)
    assert cp is not None and cp.subscription == SUB and cp.topic == MARKET_TOPIC
    last_covered = cut if checkpointed else cut - 1
    assert cp.clk == orjson.loads(lines[last_covered])["clk"]

    resumed = StreamSession("market", checkpoints=True)
    assert "resuming from clk" in resume_market_stream(tape, resumed, SUB, FIELDS, 5000)
    assert resumed.resubscribe_clocks() == (cp.initial_clk, cp.clk)
    unconfirmed = sum(len(v) for v in resumed.unconfirmed.values())
    assert (unconfirmed > 0) == (not checkpointed and len(_market(tape)) > cp.end_offsets[0])
    resent = [dict(orjson.loads(line), ct="RESUB_DELTA") if i == 0 else orjson.loads(line)
              for i, line in enumerate(lines[last_covered + 1:])]
    _record(tape, resumed, [orjson.dumps(m) for m in resent])
    assert _market(tape) == expected  # every change once, in order, the right books
    assert not resumed.unconfirmed
    gap = [r.event for r in tape.read(GAP_TOPIC)]
    assert len(gap) == 1 and isinstance(gap[0], FeedGap) and gap[0].repaired
    assert "recorder restarted" in gap[0].reason


def test_resent_changes_conflated_differently_are_all_kept(tmp_path: Path) -> None:
    """Betfair may resend the missed changes merged: the first resent book that differs from the tape's
    unconfirmed one ends the matching, so the new state is recorded (once more, never lost)."""
    lines = _lines(FIXTURES / "market.stream")
    tape = FileTape(tmp_path / "tape")
    _record(tape, StreamSession("market", checkpoints=True), lines[:4], checkpoint_last=False)
    before = _market(tape)
    resumed = StreamSession("market", checkpoints=True)
    resume_market_stream(tape, resumed, SUB, FIELDS, 5000)
    assert resumed.unconfirmed
    merged = orjson.loads(lines[3])
    merged["mc"][0]["rc"][0]["atb"] = [[9.0, 2]]  # not what the tape holds
    merged["ct"] = "RESUB_DELTA"
    _record(tape, resumed, [orjson.dumps(merged)])
    after = _market(tape)
    assert after[:len(before)] == before and len(after) == len(before) + 1
    assert not resumed.unconfirmed


def test_without_a_checkpoint_or_with_another_subscription_the_stream_starts_afresh(tmp_path: Path) -> None:
    lines = _lines(FIXTURES / "market.stream")
    tape = FileTape(tmp_path / "tape")
    fresh = StreamSession("market", checkpoints=True)
    assert "no checkpoint" in resume_market_stream(tape, fresh, SUB, FIELDS, 5000)
    assert fresh.resubscribe_clocks() == (None, None)

    _record(tape, StreamSession("market", checkpoints=True), lines[:3])
    other = StreamSession("market", checkpoints=True)
    sub = subscription({"marketIds": ["1.200"]}, FIELDS, None)
    assert "another subscription" in resume_market_stream(tape, other, sub, FIELDS, 5000)
    assert other.resubscribe_clocks() == (None, None) and not other.decoder.markets
    best = StreamSession("market", checkpoints=True)
    assert "cannot rebuild" in resume_market_stream(tape, best, SUB, (*FIELDS, "EX_BEST_OFFERS"), 5000)
    assert best.resubscribe_clocks() == (None, None) and not best.decoder.markets
    out = other.on_message(orjson.dumps(dict(orjson.loads(lines[0]), ct="SUB_IMAGE", initialClk="i")), 6000)
    gaps = [e for t, e in out.events if t == GAP_TOPIC]
    assert len(gaps) == 1 and not gaps[0].repaired and "recorder restarted" in gaps[0].reason  # type: ignore[union-attr]


def test_best_offer_ladders_are_not_restored_from_books() -> None:
    """A v1 book keeps best-offer levels without their positions: such a subscription takes a new image."""
    assert not_restorable(FIELDS) is None
    assert "EX_BEST_OFFERS" in (not_restorable(("EX_BEST_OFFERS", "EX_LTP")) or "")
    assert "EX_BEST_OFFERS_DISP" in (not_restorable(("EX_BEST_OFFERS_DISP",)) or "")
    assert {"EX_BEST_OFFERS", "EX_BEST_OFFERS_DISP"}.isdisjoint(RESTORABLE_FIELDS)


def test_the_checkpoint_covers_the_market_topic_as_appended(tmp_path: Path) -> None:
    tape = FileTape(tmp_path / "tape")
    session = StreamSession("market", checkpoints=True)
    lines = _lines(FIXTURES / "market.stream")
    out = session.on_message(lines[0], 7).events
    assert [t for t, _ in out][-1] == CLOCK_TOPIC  # the mark comes after the message's events
    for topic, event in out[:-1]:
        tape.append(topic, [event])  # type: ignore[list-item]
    mark = out[-1][1]
    assert isinstance(mark, StreamClock) and mark.clk == "1" and mark.end_offsets == ()
    cp = checkpoint(mark, SUB, tape.end_offsets(MARKET_TOPIC))
    assert cp.end_offsets == (len(out) - 1,) and cp.topic == MARKET_TOPIC and cp.subscription == SUB
    assert StreamSession("market").on_message(lines[0], 7).events[-1][0] != CLOCK_TOPIC  # off by default


def test_the_last_checkpoint_is_found_behind_many_of_another_stream(tmp_path: Path) -> None:
    from producers.betfair.resume import TAIL

    tape = FileTape(tmp_path / "tape")
    mark = StreamSession("market").clock_mark(1)

    def cp(stream: str, clk: str) -> StreamClock:
        return mark._replace(stream=stream, clk=clk, initial_clk="i", subscription=SUB, topic=MARKET_TOPIC)

    assert last_checkpoint(tape) is None
    tape.append(CLOCK_TOPIC, [cp("market", "1"), cp("market", "2")])
    tape.append(CLOCK_TOPIC, [cp("order", str(i)) for i in range(TAIL + 5)])
    found = last_checkpoint(tape)
    assert found is not None and found.clk == "2"
    tape.append(CLOCK_TOPIC, [cp("market", "3")])
    assert last_checkpoint(tape) == cp("market", "3")


def test_the_recorder_appends_one_checkpoint_per_flush_after_the_events(tmp_path: Path) -> None:
    from producers.betfair.live import Checkpointing
    from producers.common import BatchAppender

    tape = FileTape(tmp_path / "tape")
    appender = Checkpointing(BatchAppender(tape, batch_size=1000), SUB)
    session = StreamSession("market", checkpoints=True)
    lines = _lines(FIXTURES / "market.stream")
    for line in lines[:3]:
        appender.add_all(session.on_message(line, 7).events)
    appender.flush()
    appender.flush()  # nothing new: no second checkpoint
    clocks = [r.event for r in tape.read(CLOCK_TOPIC)]
    assert len(clocks) == 1 and isinstance(clocks[0], StreamClock)
    assert clocks[0].clk == "3" and clocks[0].end_offsets == (len(_market(tape)),)
    appender.add_all(session.on_message(lines[3], 8).events)
    appender.flush()
    clocks = [r.event for r in tape.read(CLOCK_TOPIC)]
    assert [c.clk for c in clocks] == ["3", "4"]  # type: ignore[union-attr]
    assert clocks[-1].end_offsets == (len(_market(tape)),)  # type: ignore[union-attr]


def test_markets_closed_long_before_the_checkpoint_are_not_rebuilt(tmp_path: Path) -> None:
    """The live decoder drops a market closed 8 h (of stream time) before a new one arrives: a restart
    does not rebuild the caches of every market the tape ever held."""
    from producers.betfair.parse import CLOSED_TTL

    def book(market_id: str, ts: int, status: str) -> MarketBook:
        return MarketBook(market_id=market_id, ts_event=ts, ts_recv=ts, status=status, in_play=False, bet_delay=0,
                          total_matched=0.0, version=1, complete=True, cross_matching=False,
                          number_of_active_runners=0, runners=())

    tape = FileTape(tmp_path / "tape")
    late = CLOSED_TTL + 10
    tape.append(MARKET_TOPIC, [book("1.1", 1, "CLOSED"), book("1.2", 2, "OPEN"), book("1.3", late - 5, "CLOSED")])
    mark = StreamSession("market").clock_mark(late)._replace(ts_event=late, initial_clk="i", clk="9")
    tape.append(CLOCK_TOPIC, [checkpoint(mark, SUB, tape.end_offsets(MARKET_TOPIC))])
    resumed = StreamSession("market")
    resume_market_stream(tape, resumed, SUB, FIELDS, late + 1)
    assert sorted(resumed.decoder.markets) == ["1.2", "1.3"]


def test_a_kill_before_the_first_checkpoint_appends_nothing_twice(tmp_path: Path) -> None:
    """Killed after the first flush's books, before its checkpoint: no clocks to resume from, so a fresh
    subscription; its image events equal to those on the tape are not appended again."""
    lines = _lines(FIXTURES / "market.stream")
    decoder = StreamDecoder()
    expected = [_untimed(e) for line in lines for t, e in decoder.decode_line(line) if t == MARKET_TOPIC]
    tape = FileTape(tmp_path / "tape")
    _record(tape, StreamSession("market", checkpoints=True), lines[:1], checkpoint_last=False)
    assert _market(tape) and last_checkpoint(tape) is None
    restarted = StreamSession("market", checkpoints=True)
    assert "no checkpoint" in resume_market_stream(tape, restarted, SUB, FIELDS, 5000)
    assert restarted.resubscribe_clocks() == (None, None) and restarted.unconfirmed
    image = orjson.dumps(dict(orjson.loads(lines[0]), ct="SUB_IMAGE"))
    _record(tape, restarted, [image, *lines[1:]])
    assert _market(tape) == expected
    gaps = [r.event for r in tape.read(GAP_TOPIC)]
    assert len(gaps) == 1 and isinstance(gaps[0], FeedGap) and not gaps[0].repaired
