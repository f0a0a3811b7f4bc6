"""A robot trades on a local Betfair through `ticktape run` + `ticktape gateway --venue betfair`, real sockets.

The exchange (tests/venues/betfair_exchange.py) implements Betfair's JSON-RPC betting API with
customerRef de-duplication and the order stream over TLS; the gateway runs betfairlightweight
unchanged, pointed at 127.0.0.1. While the robot bets, the exchange drops connections after
placing, answers 5xx before and after placing, times out, refuses (TOO_MANY_REQUESTS), sends
stream updates twice and goes silent, and the gateway is killed with SIGKILL. The exchange's
ledger is the truth the tape must equal: no bet placed twice, every matched cent on the tape
once, the robot's position the venue's.
"""

from __future__ import annotations

import collections
import random
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from robots.live.journal import INLINE, Journal, JournalReplay
from robots.live.topics import EVENT_TOPIC, INTENT_TOPIC
from tests.live.harness import (
    Feeder,
    Proc,
    check_run,
    journal_covers,
    kill_all,
    maybe_kill9_and_restart,
    run_records,
    start_gateway_and_runner,
    wait_for,
)
from tests.venues.betfair_exchange import LocalBetfairExchange, self_signed_cert
from ticktape.events import BetSettled, Control, OrderCancelled, OrderFilled, OrderRejected, PlaceOrder, Trade
from ticktape.tape import open_tape

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the server's certificate")

MARKET, SELECTION = "1.100", 11
INSTRUMENT = f"{MARKET}:{SELECTION}"
TOPIC = "md.test.tick"
TS0 = 1_700_000_000_000_000_000
FAULTS = ("drop_after", "error_5xx_before", "error_5xx_after", "timeout_after", "too_many_requests",
          "duplicate_update", "silent_stream")


def ticks(n: int) -> list[Trade]:
    """Trades the robot counts (their prices do not matter: the exchange's prices decide matching)."""
    return [Trade("test", INSTRUMENT, TS0 + i * 1_000_000, TS0 + i * 1_000_000, 2.0, 1.0, "BUY", str(i))
            for i in range(n)]


@pytest.fixture
def exchange(tmp_path: Path) -> Iterator[tuple[LocalBetfairExchange, Path]]:
    cert, key = self_signed_cert(tmp_path)
    ex = LocalBetfairExchange(cert, key, balance=1_000_000.0)
    ex.set_prices(MARKET, SELECTION, back=2.0, lay=2.02)  # a back bet at 2.0 matches at once
    yield ex, cert
    ex.close()


def gateway_proc(uri: str, ex: LocalBetfairExchange, cert: Path, tmp_path: Path, *, dead_after: float = 60) -> Proc:
    settings = ex.settings(cert, timeout=0.5)
    params = [a for k, v in settings.items() for a in ("--venue-param", f"{k}={v}")]
    return Proc("gateway", ["--tape", uri, "gateway", "--venue", "betfair", *params, "--poll-seconds", "0.5",
                            "--dead-after", str(dead_after)], tmp_path, env=ex.credentials_env())


def bet_runner(uri: str, run_id: str, tmp_path: Path, *, every: int, snapshot_every: int = 10_000) -> Proc:
    """`ticktape run` of the robot that backs at 2.0 on every `every`-th tick, on the Betfair gateway."""
    return Proc("runner", ["--tape", uri, "run", "tests.live.bots:EveryNthBet", "--run-id", run_id, "--venue",
                           "betfair", "--gateway", "external", "--param", f"topic={TOPIC}", "--param", f"n={every}",
                           "--snapshot-every", str(snapshot_every)], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["file", pytest.param("kafka", marks=pytest.mark.kafka)])
def test_a_robot_bets_on_betfair_through_faults_and_gateway_kills(
        backend: str, exchange: tuple[LocalBetfairExchange, Path], tmp_path: Path) -> None:
    """On the file tape, and on Kafka (a broker of its own: the gateway's journal must start empty) as an
    operator runs it."""
    ex, cert = exchange
    with ExitStack() as stack:
        if backend == "kafka":
            from tests.kafka_fixtures import start_broker

            broker = start_broker(tmp_path / "broker")
            stack.callback(broker.stop)
            uri = f"kafka+rdkafka://{broker.address}"
        else:
            uri = f"file:{tmp_path / 'tape'}"
        _bet_through_faults(uri, ex, cert, tmp_path)


def _bet_through_faults(uri: str, ex: LocalBetfairExchange, cert: Path, tmp_path: Path) -> None:
    run_id = "bet-1"
    rng = random.Random(7)
    setup = open_tape(uri)
    setup.create_topic(TOPIC)
    gateway = gateway_proc(uri, ex, cert, tmp_path)
    runner = bet_runner(uri, run_id, tmp_path, every=5, snapshot_every=50)
    procs = [gateway, runner]
    stop_prices = threading.Event()

    def move_prices() -> None:
        """Over and over: the back price drops below the robot's (its bets rest), returns with little on
        offer (the resting bets match in part), then with plenty (they match)."""
        phases = ((1.9, None), (2.0, 0.5), (2.0, None))
        k = 0
        while not stop_prices.wait(0.3):
            back, size = phases[k % len(phases)]
            ex.set_prices(MARKET, SELECTION, back=back, lay=2.02, back_size=size)
            k += 1

    mover = threading.Thread(target=move_prices, daemon=True)
    n = 1500
    try:
        start_gateway_and_runner(gateway, runner)
        mover.start()
        feeder = Feeder(uri, TOPIC, list(ticks(n)), batch=10, pace=0.12)  # ~18 s, 300 bets
        feeder.start()
        kills = 0
        injected: collections.Counter[str] = collections.Counter()
        plan = list(FAULTS * 4)  # every kind four times, in a random order
        rng.shuffle(plan)
        for kind in plan:
            time.sleep(rng.uniform(0.2, 0.6))
            ex.inject(kind, "placeOrders" if kind not in ("duplicate_update", "silent_stream") else None,
                      delay=1.0)
            injected[kind] += 1
            if kind == "silent_stream":
                threading.Timer(2.0, ex.resume_stream).start()
            kills += maybe_kill9_and_restart(gateway, rng)
        feeder.join(60)
        assert feeder.error is None and feeder.sent == n
        stop_prices.set()
        mover.join(5)
        ex.set_prices(MARKET, SELECTION, back=2.0, lay=2.02)  # whatever rests now matches
        ex.resume_stream()
        check = open_tape(uri)
        try:
            wait_for("the runner to journal every tick", lambda: journal_covers(check, run_id, TOPIC, 0, n), 120,
                     procs)
            wait_for("the gateway to be up", lambda: gateway.said("serving"), 60, procs)

            def settled() -> bool:
                places = [i for i in run_records(check, INTENT_TOPIC, run_id) if type(i) is PlaceOrder]
                fills = [e for e in run_records(check, EVENT_TOPIC, run_id) if type(e) is OrderFilled]
                taped = sum(f.size for f in fills)
                matched = sum(b.matched_c for p in places for b in ex.bets_for(p.client_order_id)) / 100
                return len(places) == n // 5 and abs(taped - len(places) * 2.0) < 1e-6 and abs(matched - taped) < 1e-6

            wait_for("every bet matched at the venue and on the tape", settled, 120, procs)
            consumed = sum(injected.values()) - len(ex.faults)
            assert consumed >= 20, f"only {consumed} faults reached the gateway: {ex.faults}"
            assert runner.terminate() == 0, runner.tail()
            assert gateway.terminate() == 0, gateway.tail()
            figures = check_run(check, run_id)
            places = [i for i in run_records(check, INTENT_TOPIC, run_id) if type(i) is PlaceOrder]
            fills = [e for e in run_records(check, EVENT_TOPIC, run_id) if type(e) is OrderFilled]
        finally:
            check.close()
        # no bet placed twice
        twice = [p.client_order_id for p in places if len(ex.bets_for(p.client_order_id)) != 1]
        assert not twice, f"bets placed twice (or never): {twice[:5]}"
        # every matched cent once: per order, the tape's fills equal the exchange's matched size
        taped = collections.Counter[str]()
        for f in fills:
            taped[f.client_order_id] += round(f.size * 100)
        for p in places:
            (bet,) = ex.bets_for(p.client_order_id)
            assert taped[p.client_order_id] == bet.matched_c, (p.client_order_id, taped[p.client_order_id], bet)
        assert len({f.fill_id for f in fills}) == len(fills), "a fill id twice"
        assert kills >= 2, kills
        assert len(fills) > len(places), "no bet matched in parts"
        assert "outcome unknown" in gateway.log.read_text(), "no fault made an outcome unknown"
        print(f"{run_id}: {len(places)} bets, {len(fills)} fills, kills {kills}, faults {dict(injected)} "
              f"({consumed} consumed), {figures}")
    finally:
        stop_prices.set()
        kill_all(procs)
        setup.close()


@pytest.mark.parametrize("how", ["kill", "stop", "watchdog"])
def test_kill_and_stop_cancel_resting_bets_at_betfair(how: str, exchange: tuple[LocalBetfairExchange, Path],
                                                      tmp_path: Path) -> None:
    """`ticktape control kill` cancels the run's resting bets and refuses its new ones; stopping the runner
    (SIGTERM) cancels its resting bets on the way out; a runner SIGKILLed leaves them to the watchdog, which
    cancels them once its heartbeat is older than --dead-after."""
    ex, cert = exchange
    ex.set_prices(MARKET, SELECTION, back=1.5, lay=1.52)  # the robot's backs at 2.0 rest
    uri = f"file:{tmp_path / 'tape'}"
    setup = open_tape(uri)
    setup.create_topic(TOPIC)
    gateway = gateway_proc(uri, ex, cert, tmp_path, dead_after=2 if how == "watchdog" else 60)
    runner = bet_runner(uri, "k", tmp_path, every=2)
    procs = [gateway, runner]
    try:
        start_gateway_and_runner(gateway, runner)
        setup.append(TOPIC, ticks(10), partition=0)
        wait_for("five bets resting", lambda: sum(not b.complete for b in ex.bets.values()) == 5, 60, procs)
        if how == "watchdog":
            runner.kill9()
            wait_for("the watchdog to cancel them at Betfair", lambda: all(b.complete for b in ex.bets.values()),
                     30, procs)
            assert all(b.cancelled_c == b.size_c for b in ex.bets.values()) and len(ex.bets) == 5
            wait_for("the cancels on the tape", lambda: sum(
                1 for e in run_records(setup, EVENT_TOPIC, "k") if type(e) is OrderCancelled) == 5, 30, procs)
            verdicts = [rec.event for _, entry in Journal(setup, "gateway-betfair").entries()
                        if entry.topic == INLINE for rec in JournalReplay(setup).records(entry)
                        if type(rec.event) is Control and rec.event.param == "watchdog"]
            assert [(v.target, v.command) for v in verdicts] == [("k", "PAUSE")], verdicts
            assert gateway.terminate() == 0
            return
        if how == "stop":
            assert runner.terminate() == 0, runner.tail()
            wait_for("the stop to cancel them at Betfair", lambda: all(b.complete for b in ex.bets.values()), 30,
                     procs)
            assert all(b.cancelled_c == b.size_c for b in ex.bets.values()) and len(ex.bets) == 5
            assert gateway.terminate() == 0
            return
        control = Proc("control", ["--tape", uri, "control", "kill", "k", "--reason", "test"], tmp_path)
        control.start()
        assert control.proc is not None and control.proc.wait(60) == 0, control.tail()
        wait_for("the kill to cancel them at Betfair", lambda: all(b.complete for b in ex.bets.values()), 30, procs)
        assert all(b.cancelled_c == b.size_c for b in ex.bets.values())
        setup.append(TOPIC, ticks(4), partition=0)  # two more bets: refused by the kill switch, never sent

        def refused() -> int:
            return sum(1 for e in run_records(setup, EVENT_TOPIC, "k")
                       if type(e) is OrderRejected and e.control == "kill_switch")

        wait_for("the new bets refused", lambda: refused() == 2, 30, procs)
        assert len(ex.bets) == 5
        assert runner.terminate() == 0 and gateway.terminate() == 0
    finally:
        kill_all(procs)
        setup.close()


def test_matched_bets_are_settled_on_the_tape_when_their_market_is(
        exchange: tuple[LocalBetfairExchange, Path], tmp_path: Path) -> None:
    """The order stream says nothing of results: the gateway asks about filled bets at each poll until
    Betfair's cleared orders give their profit, then writes one `BetSettled` per order."""
    ex, cert = exchange
    uri = f"file:{tmp_path / 'tape'}"
    setup = open_tape(uri)
    setup.create_topic(TOPIC)
    gateway = gateway_proc(uri, ex, cert, tmp_path)
    runner = bet_runner(uri, "s", tmp_path, every=2)
    procs = [gateway, runner]
    try:
        start_gateway_and_runner(gateway, runner)
        setup.append(TOPIC, ticks(6), partition=0)  # three backs at 2.0, matched at once
        wait_for("three bets matched", lambda: sum(b.matched_c == b.size_c for b in ex.bets.values()) == 3, 30,
                 procs)
        ex.settle(MARKET, winner=SELECTION)

        def settled() -> list[BetSettled]:
            return [e for e in run_records(setup, EVENT_TOPIC, "s") if type(e) is BetSettled]

        wait_for("three settlements on the tape", lambda: len(settled()) == 3, 30, procs)
        for s in settled():
            (bet,) = ex.bets_for(s.client_order_id)
            assert (s.profit, s.size_matched, s.runner_status) == (bet.profit, bet.matched_c / 100, "WINNER")
            assert s.profit == 2.0  # a 2.00 back at 2.0 that won
        assert runner.terminate() == 0 and gateway.terminate() == 0
    finally:
        kill_all(procs)
        setup.close()
