"""The live engine's parts on a real file tape: client order ids, the journal and its replay,
duplicate records, snapshots, and recovery after a crash between any two appends."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from robots.live.engine import LiveLoop
from robots.live.fold import DuplicateWindow, LiveContext, RunFold, run_tag, stop_control
from robots.live.inputs import LiveInputs
from robots.live.journal import Journal, JournalReplay, inline_entry, ref_entry
from robots.live.runner import LiveRunner, recorded
from robots.live.topics import INTENT_TOPIC
from robots.registry import get_robot
from tests.live.harness import wavy_trades
from ticktape.codec import default_codec
from ticktape.errors import TapeError
from ticktape.events import OrderAccepted, OrderFilled, PlaceOrder, Timer
from ticktape.tape import open_tape

TOPIC = "md.binance.trade"
PARAMS = {"fast": "3", "slow": "8", "topic": TOPIC}


def test_client_order_ids_fit_every_venue() -> None:
    ctx = LiveContext("a-very-long-robot-id-that-would-not-fit", "sim", run_tag("some run id"))
    for seq in (0, 35, 36, 10**6, 2**62):
        ctx.reset(seq, 0)
        for _ in range(1000):
            coid = ctx.next_client_order_id()
            assert len(coid) <= 32 and re.fullmatch(r"[a-z0-9-]+", coid), coid
    assert run_tag("run-a") != run_tag("run-b") and len(run_tag("x")) == 8
    ctx.reset(36, 0)
    assert ctx.next_client_order_id() == f"{run_tag('some run id')}-10-0"


def test_duplicate_window_forgets_the_oldest() -> None:
    window = DuplicateWindow(size=3)
    fills = [OrderFilled("r", f"c{i}", None, "sim", "X", i, i, f"f{i}", "BUY", 1.0, 1.0, 0.0, "TAKER")
             for i in range(5)]
    assert [window.seen_before(f) for f in fills[:3]] == [False, False, False]
    assert window.seen_before(fills[1]) and window.seen_before(fills[2])
    assert not window.seen_before(fills[3])  # evicts fills[0]
    assert not window.seen_before(fills[0])
    restored = DuplicateWindow(size=3, digests=list(window.order))
    assert restored.seen_before(fills[0]) and not restored.seen_before(fills[4])


def test_the_journal_skips_a_second_copy_of_an_entry(tmp_path: Path) -> None:
    tape = open_tape(f"file:{tmp_path}")
    tape.create_topic(TOPIC)
    tape.append(TOPIC, wavy_trades(10))
    records = list(tape.read(TOPIC))
    journal = Journal(tape, "s")
    first = ref_entry("s", 0, records[0], 4, 1)
    second = ref_entry("s", 4, records[4], 6, 2)
    timer = inline_entry("s", 10, Timer("bot", "t", 5, 6, ""), 3)
    journal.append([first, first, second, first, timer, timer])  # retried appends wrote copies
    replay = JournalReplay(tape)
    got = [rec for _, e in journal.entries(0, 0) for rec in replay.records(e)]
    assert [r.offset for r in got] == [*range(10), -1]
    assert got[-1].event == Timer("bot", "t", 5, 6, "")
    assert [r.event for r in got[:10]] == [r.event for r in records]


def test_a_reference_past_the_tape_is_named(tmp_path: Path) -> None:
    tape = open_tape(f"file:{tmp_path}")
    tape.create_topic(TOPIC)
    tape.append(TOPIC, wavy_trades(3))
    first = next(iter(tape.read(TOPIC)))
    with pytest.raises(TapeError, match=r"journal.s offset 7: the journal refers to md.binance.trade partition 0 "
                                        r"offsets 0..4, but the tape ends at 3"):
        JournalReplay(tape).records(ref_entry("s", 0, first, 5, 0), where="journal.s offset 7")


def _fold_all(events: list[Any]) -> tuple[str, list[Any]]:
    fold = RunFold(get_robot("ema_cross", PARAMS), "run")
    intents = [i for e in events for i in fold.step(e)]
    return fold.state_json(), intents


def test_a_fold_restored_from_its_snapshot_continues_identically() -> None:
    events: list[Any] = list(wavy_trades(400))
    # answers of the robot's own orders, as the gateway would send them
    whole_state, whole = _fold_all(events)
    fold = RunFold(get_robot("ema_cross", PARAMS), "run")
    first = [i for e in events[:150] for i in fold.step(e)]
    again = RunFold(get_robot("ema_cross", PARAMS), "run")
    again.restore(fold.state_json(), fold.engine_json())
    rest = [i for e in events[150:] for i in again.step(e)]
    assert first + rest == whole and again.state_json() == whole_state
    assert again.engine_json() == _engine_after(events)


def _engine_after(events: list[Any]) -> str:
    fold = RunFold(get_robot("ema_cross", PARAMS), "run")
    for e in events:
        fold.step(e)
    return fold.engine_json()


def test_stop_cancels_open_orders_and_replaced_or_refused_ones_are_tracked() -> None:
    fold = RunFold(get_robot("ema_cross", PARAMS), "run")
    placed = [i for e in wavy_trades(60) for i in fold.step(e) if type(i) is PlaceOrder]
    assert placed
    coid = placed[0].client_order_id
    assert coid in fold.open
    fold.step(OrderAccepted("ema_cross", coid, "v1", placed[0].venue, placed[0].instrument, 1, 1))
    cancels = fold.step(stop_control("run", 2, 3, keep_orders=False, reason="SIGTERM"))
    assert [c.client_order_id for c in cancels] == sorted(fold.open) and coid in [c.client_order_id for c in cancels]
    assert all(c.reason == "stop: SIGTERM" for c in cancels)
    assert fold.step(stop_control("run", 2, 3, keep_orders=True, reason="x")) == []


def test_recovery_writes_each_intent_once_whatever_append_failed(tmp_path: Path, monkeypatch: Any) -> None:
    """A crash between the journal append and the intents' append: the restart derives them again
    and writes only those missing; a crash after both: nothing is written twice."""
    uri = f"file:{tmp_path}"
    tape = open_tape(uri)
    tape.create_topic(TOPIC)
    trades = wavy_trades(300)
    bot, params = "tests.live.bots:EveryNth", {"n": "7", "topic": TOPIC}
    fold = RunFold(get_robot(bot, params), "r")
    expected = [i for e in trades for i in fold.step(e)]
    runner = LiveRunner(bot, tape=uri, run_id="r", params=params, snapshot_every=100)
    runner.start()
    records = list(tape.read(TOPIC)) if tape.end_offsets(TOPIC)[0] else []
    assert records == []
    tape.append(TOPIC, trades)
    records = list(tape.read(TOPIC))
    runner.loop.step(records[:120])
    # the next batch is journaled, then the process "dies" before writing its intents
    monkeypatch.setattr(LiveLoop, "_write", lambda self, outputs: (_ for _ in ()).throw(SystemExit("killed")))
    with pytest.raises(SystemExit):
        runner.loop.step(records[120:200])
    monkeypatch.undo()
    runner.tape.close()
    again = LiveRunner(bot, tape=uri, run_id="r", params=params, snapshot_every=100)
    again.start()
    assert again.restarted and again.loop.replayed > 0
    again.loop.step([r for r in records if r.offset >= 200])
    again.close()
    final = open_tape(uri)
    written = [e for _, _, e in recorded(final, INTENT_TOPIC, "r", {})]
    encode = default_codec().encode
    assert len(expected) == 300 // 7
    assert [encode(e) for e in written] == [encode(e) for e in expected]


def test_wall_clock_timers_are_journaled_and_replay_identically(tmp_path: Path) -> None:
    from robots.live.replay import JournalSource, LiveReplayRunner

    uri = f"file:{tmp_path}"
    tape = open_tape(uri)
    tape.create_topic(TOPIC)
    bot, params = "tests.live.bots:EveryNth", {"n": "5", "topic": TOPIC, "timer_ms": "1"}
    runner = LiveRunner(bot, tape=uri, run_id="t", params=params)
    runner.start()
    tape.append(TOPIC, wavy_trades(50))
    runner.loop.step(list(tape.read(TOPIC)))
    runner.loop.step([])  # the timers (1 ms after 2023's trades) are long due on the wall clock: they fire
    assert runner.fold.run.state.timers == 10 and not runner.fold.run.timers
    inline = [e for _, e in Journal(tape, "t").entries() if e.topic == ""]
    assert len(inline) == 10
    replay = LiveReplayRunner(get_robot(bot, params), "t")
    replay.run(JournalSource(tape, "t"))
    assert replay.fold.state_json() == runner.fold.run.state_json()
    runner.close()


def test_a_robot_failure_names_the_input_and_recurs_on_restart(tmp_path: Path) -> None:
    from robots.api import RobotError

    uri = f"file:{tmp_path}"
    tape = open_tape(uri)
    tape.create_topic(TOPIC)
    runner = LiveRunner("tests.live.bots:Boom", tape=uri, run_id="b", params={"topic": TOPIC})
    runner.start()
    tape.append(TOPIC, wavy_trades(5))
    with pytest.raises(RobotError, match=r"run b: robot boom failed on input #2 \(Trade at ts_event \d+\): "
                                         r"ZeroDivisionError"):
        runner.loop.step(list(tape.read(TOPIC)))
    runner.close()
    again = LiveRunner("tests.live.bots:Boom", tape=uri, run_id="b", params={"topic": TOPIC})
    with pytest.raises(RobotError, match="failed on input #2"):
        again.start()  # the input was journaled: the replay meets it again, deterministically


def test_the_gateway_holds_intents_that_overtook_their_runs_manifest() -> None:
    """Intents and manifests are followed in parallel: an intent folded before its run's RunStarted
    waits for it (and a second copy of it is still dropped); a backtest's intents are never sent."""
    import json

    from robots.live.gateway import GatewayFold, PaperVenue
    from ticktape.events import Quote, RunStarted
    from ticktape.tape.base import Record

    fold = GatewayFold(PaperVenue())
    quote = Quote("sim", "XYZ", 1, 1, 99.0, 5.0, 101.0, 5.0)
    order = PlaceOrder("bot", "t-1-0", "sim", "XYZ", 2, 2, "BUY", "LIMIT", 100.0, 1.0, "GTC", "")
    manifest = RunStarted("r1", "bot", "bot", 0, 0, "{}", "x", ("md",), None, None, "{}",
                          json.dumps({"name": "paper", "gateway": "external"}), "{}", "live", "")
    backtest = manifest._replace(run_id="b1", mode="backtest")
    rec = lambda topic, key, e: Record(topic, 0, 0, key, e)  # noqa: E731
    assert fold.fold(rec("md", None, quote)) == []
    assert fold.fold(rec("orders.intent", "r1", order)) == []  # no manifest yet: held
    assert fold.fold(rec("orders.intent", "r1", order)) == []  # a second copy, held too
    answers = fold.fold(rec("runs", "r1", manifest))
    assert [type(e).__name__ for _, _, e in answers] == ["OrderAccepted"]  # once
    assert fold.fold(rec("orders.intent", "b1", order._replace(client_order_id="b-0-0"))) == []
    assert fold.fold(rec("runs", "b1", backtest)) == [] and "b1" in fold.ignored and not fold.held


@pytest.mark.parametrize("backend", ["file", "kafka"])
def test_the_backlog_of_the_first_topics_comes_before_anything_else(backend: str, tmp_path: Path,
                                                                    request: pytest.FixtureRequest) -> None:
    # A restarted runner must learn what the venue did while it was down (these answers are on the
    # tape already) before it decides on market data: on the file tape the poller's round takes the
    # partitions in name order, on Kafka a thread each, so without `first` the market may come first.
    uri = f"file:{tmp_path / 'tape'}" if backend == "file" else request.getfixturevalue("kafka_tape_uri")("kafka")
    tag = uuid.uuid4().hex[:8]
    market, answers = f"a.md.{tag}", f"z.answers.{tag}"
    tape = open_tape(uri)
    tape.create_topic(market, 1)
    tape.create_topic(answers, 2)
    trades = wavy_trades(30)
    tape.append(market, trades[:10], partition=0)
    accepted = [OrderAccepted("r", f"c{i}", f"o{i}", "v", "X", i, i) for i in range(6)]
    tape.append(answers, accepted[:3], partition=0)
    tape.append(answers, accepted[3:], partition=1)
    inputs = LiveInputs(uri, {(market, 0): 0, (answers, 0): 1, (answers, 1): 0}, poll=0.001)
    inputs.start(first=(answers,))
    got: list[tuple[str, int, int]] = []

    def collect(n: int) -> None:
        deadline = time.monotonic() + 30
        while len(got) < n and time.monotonic() < deadline:
            got.extend((r.topic, r.partition, r.offset) for r in inputs.get(0.1))

    try:
        collect(15)
        backlog = [(answers, 0, 1), (answers, 0, 2), (answers, 1, 0), (answers, 1, 1), (answers, 1, 2)]
        assert sorted(got[:5]) == backlog, got
        assert got[5:] == [(market, 0, o) for o in range(10)], got
        tape.append(answers, accepted[:1], partition=0)  # what arrives later is read as it comes
        tape.append(market, trades[10:15], partition=0)
        collect(21)
        assert sorted(got[15:]) == sorted([(answers, 0, 3)] + [(market, 0, o) for o in range(10, 15)]), got
    finally:
        inputs.close()
        tape.close()
