"""`ticktape record betfair` killed with SIGKILL and started again on the same tape resumes the
stream where it left off: it subscribes with the last recorded clocks and the books after the
restart are the ones the whole file gives. With `--raw` the caches and clocks come back from
`raw.betfair`; without it, from the last `StreamClock` checkpoint on `meta.betfair.clock` and the
books it covers (unit tests of that restore, cut between books and checkpoint: test_betfair_resume.py).

Real processes, real sockets: the command as an operator runs it, against the local Betfair login
and stream servers (tests/venues/betfair_exchange.py) over TLS.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from betfair_helpers import FIXTURES, SHARED

from producers.betfair.parse import CLOCK_TOPIC, GAP_TOPIC, MARKET_TOPIC, ORDERS_TOPIC, RAW_TOPIC, StreamDecoder
from tests.venues.betfair_exchange import BetfairApiServer, BetfairStreamServer, self_signed_cert
from ticktape.events import CustomData, Event, FeedGap, MarketBook, MarketDefinition, StreamClock
from ticktape.tape.file import FileTape

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the server's certificate")

SOURCES = {
    "fixture": (FIXTURES / "market.stream", 1),  # the first connection is cut after this many changes
    "real": (SHARED / "1.197931750", 60),
}


def _events(tape_dir: Path, topic: str) -> list[Event]:
    tape = FileTape(tape_dir)
    if topic not in tape.topic_names():
        return []
    return [r.event for r in tape.read(topic)]


def _untimed(event: object) -> Event:
    """A market event without its capture time (a restart captures the same changes later)."""
    assert isinstance(event, MarketBook | MarketDefinition)
    return event._replace(ts_recv=0)


def _books(tape_dir: Path) -> int:
    return sum(isinstance(e, MarketBook) for e in _events(tape_dir, MARKET_TOPIC))


def _wait(what: str, done: object, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():  # type: ignore[operator]
            return
        if proc.poll() is not None:
            raise AssertionError(f"the recorder exited ({proc.returncode}) before {what}: "
                                 f"{proc.stderr.read().decode() if proc.stderr else ''}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _kill_when(command: list[str], env: dict[str, str], what: str, done: object, sig: int,
               settle: float = 0.0) -> None:
    """Start the recorder, wait until `done()`, give it `settle` seconds more, then send it `sig`."""
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    try:
        _wait(what, done, proc)
        time.sleep(settle)
        proc.send_signal(sig)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "checkpoints"])
@pytest.mark.parametrize("source", [pytest.param("fixture"),
                                    pytest.param("real", marks=pytest.mark.shared_data("betfair/1.197931750"))])
def test_a_killed_recorder_resumes_from_the_recorded_clocks(source: str, raw: bool, tmp_path: Path) -> None:
    path, cut = SOURCES[source]
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    changes = [orjson.loads(line) for line in lines]
    decoder = StreamDecoder()
    expected = [e for line in lines for t, e in decoder.decode_line(line) if t == MARKET_TOPIC]
    books = sum(isinstance(e, MarketBook) for e in expected)
    cert, key = self_signed_cert(tmp_path)
    # The first subscription is cut after `cut` changes; the recorder then backs off (1 s) and is killed
    # in that pause, once what it received is on the tape.
    stream = BetfairStreamServer(changes, [cut], cert, key)
    api = BetfairApiServer([], "user", "pa55word", "app-key", cert, key)
    market_id = changes[0]["mc"][0]["id"]
    tape_dir = tmp_path / "tape"
    command = [sys.executable, "-m", "ticktape", "--tape", f"file:{tape_dir}", "record", "betfair",
               "--market-ids", market_id, "--no-orders", "--raw" if raw else "--no-raw", "--catalogue-interval", "0",
               "--heartbeat-ms", "500", "--stream-endpoint", f"127.0.0.1:{stream.port}",
               "--identity-url", api.identity_url, "--api-url", api.api_url]
    env = {**os.environ, "BETFAIR_USERNAME": "user", "BETFAIR_PASSWORD": "pa55word", "BETFAIR_APP_KEY": "app-key",
           "REQUESTS_CA_BUNDLE": str(cert), "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    try:
        # killed once the first changes and what resumes them (raw payloads, or the checkpoint appended
        # after the books) are on the tape: in the backoff pause, not between the two appends
        _kill_when(command, env, "the first changes and their raw payloads or checkpoint are on the tape",
                   lambda: _books(tape_dir) >= cut and bool(_events(tape_dir, RAW_TOPIC if raw else CLOCK_TOPIC)),
                   signal.SIGKILL)
        before = _books(tape_dir)
        assert cut <= before < books
        if raw:
            payloads = [orjson.loads(e.payload) for e in _events(tape_dir, RAW_TOPIC) if isinstance(e, CustomData)]
            last_clk = [m["clk"] for m in payloads if m.get("clk")][-1]
            assert not _events(tape_dir, CLOCK_TOPIC)
        else:
            assert not _events(tape_dir, RAW_TOPIC)
            clocks = [e for e in _events(tape_dir, CLOCK_TOPIC) if isinstance(e, StreamClock)]
            last_clk = clocks[-1].clk
            assert clocks[-1].initial_clk == "initial" and clocks[-1].end_offsets[0] <= len(
                _events(tape_dir, MARKET_TOPIC))

        # settle: a duplicate, were there one, would be appended by then
        _kill_when(command, env, "every change is on the tape",
                   lambda: stream.all_sent.is_set() and _books(tape_dir) >= books, signal.SIGINT, settle=0.3)
    finally:
        stream.close()
        api.close()

    subs = [m for m in stream.received if m["op"] == "marketSubscription"]
    assert subs[0].get("clk") is None
    assert (subs[-1].get("initialClk"), subs[-1].get("clk")) == ("initial", last_clk)  # the restart's
    recorded = [_untimed(e) for e in _events(tape_dir, MARKET_TOPIC)]
    assert recorded == [_untimed(e) for e in expected]  # every change once, in order, right books
    gaps = [e for e in _events(tape_dir, GAP_TOPIC) if isinstance(e, FeedGap)]
    assert gaps and gaps[-1].repaired and "recorder restarted" in gaps[-1].reason


def test_books_on_the_tape_without_their_raw_payload_are_not_appended_again(tmp_path: Path) -> None:
    """The kill -9 window between a flush's appends: `md.betfair.market` is appended before
    `raw.betfair`, so the last message's books can be on the tape without its raw line. The resumed
    stream resends that message (its clk was never recorded); its books must not land twice."""
    from producers.betfair.live import resume_sessions
    from producers.betfair.session import StreamSession

    lines = [line for line in (FIXTURES / "market.stream").read_bytes().splitlines() if line.strip()]
    killed = 3  # a line with a book (line 2 is a heartbeat)
    decoder = StreamDecoder()
    expected = [[e for t, e in decoder.decode_line(line) if t == MARKET_TOPIC] for line in lines]
    assert expected[killed] and expected[killed + 1]
    tape = FileTape(tmp_path / "tape")
    first = StreamSession("market", keep_raw=True)
    for i, line in enumerate(lines[:killed + 1]):
        for topic, event in first.on_message(line, 7).events:
            if not (i == killed and topic == RAW_TOPIC):  # killed before this raw payload was appended
                tape.append(topic, [event])  # type: ignore[list-item]

    resumed = StreamSession("market", keep_raw=True)
    resume_sessions(tape, [resumed], 9)
    assert resumed.clk == orjson.loads(lines[killed - 1])["clk"]  # the last one whose raw line is on the tape
    again = resumed.on_message(lines[killed], 10)  # resent by Betfair: its books are on the tape already
    assert [t for t, _ in again.events] == [RAW_TOPIC]  # only its missing raw line
    fresh = resumed.on_message(lines[killed + 1], 11)
    assert [_untimed(e) for t, e in fresh.events if t == MARKET_TOPIC] == [_untimed(e) for e in expected[killed + 1]]


@pytest.mark.parametrize("bad", ["127.0.0.1", ":443", "localhost:https"])
def test_a_bad_stream_endpoint_is_a_usage_error_naming_the_option(bad: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ticktape.cli import _register_plugins, cli

    _register_plugins()
    result = CliRunner().invoke(cli, ["--tape", f"file:{tmp_path / 'tape'}", "record", "betfair",
                                      "--market-ids", "1.1", "--stream-endpoint", bad])
    assert result.exit_code == 2 and "--stream-endpoint" in result.output and "ADDRESS:PORT" in result.output


def test_a_killed_recorder_records_each_order_event_once(tmp_path: Path) -> None:
    """The order stream keeps no clocks: a restarted recorder (without --raw) rebuilds its orders from
    `orders.betfair` and subscribes afresh. The local server then sends every change again, including
    those made while the recorder was down; the tape ends as one uninterrupted recording's, each order
    accepted once and each stake filled once."""
    order_lines = [line for line in (FIXTURES / "orders.stream").read_bytes().splitlines() if line.strip()]
    order_changes = [orjson.loads(line) for line in order_lines]
    decoder = StreamDecoder()
    expected = [e._replace(ts_recv=0) for line in order_lines  # type: ignore[union-attr]
                for t, e in decoder.decode_line(line) if t == ORDERS_TOPIC]
    first_decoder = StreamDecoder()
    first_part = [e for line in order_lines[:2] for t, e in first_decoder.decode_line(line) if t == ORDERS_TOPIC]
    market = [orjson.loads(line) for line in (FIXTURES / "market.stream").read_bytes().splitlines() if line.strip()]
    cert, key = self_signed_cert(tmp_path)
    stream = BetfairStreamServer(market, [], cert, key, order_changes=order_changes[:2])
    api = BetfairApiServer([], "user", "pa55word", "app-key", cert, key)
    tape_dir = tmp_path / "tape"
    command = [sys.executable, "-m", "ticktape", "--tape", f"file:{tape_dir}", "record", "betfair",
               "--market-ids", market[0]["mc"][0]["id"], "--no-raw", "--catalogue-interval", "0",
               "--heartbeat-ms", "500", "--stream-endpoint", f"127.0.0.1:{stream.port}",
               "--identity-url", api.identity_url, "--api-url", api.api_url]
    env = {**os.environ, "BETFAIR_USERNAME": "user", "BETFAIR_PASSWORD": "pa55word", "BETFAIR_APP_KEY": "app-key",
           "REQUESTS_CA_BUNDLE": str(cert), "PYTHONPATH": str(Path(__file__).resolve().parents[3])}

    def orders() -> list[Event]:
        return _events(tape_dir, ORDERS_TOPIC)
    try:
        _kill_when(command, env, "the first order changes are on the tape",
                   lambda: len(orders()) >= len(first_part), signal.SIGKILL)
        assert len(orders()) == len(first_part)
        for change in order_changes[2:]:  # the orders change while no recorder runs
            stream.publish(change)
        _kill_when(command, env, "every order event is on the tape", lambda: len(orders()) >= len(expected),
                   signal.SIGINT, settle=0.5)  # settle: a duplicate, were there one, would be appended by then
    finally:
        stream.close()
        api.close()
    assert [e._replace(ts_recv=0) for e in orders()] == expected  # type: ignore[union-attr]
    order_subs = [m for m in stream.received if m["op"] == "orderSubscription"]
    assert len(order_subs) == 2 and all(m.get("clk") is None for m in order_subs)  # afresh, both times
