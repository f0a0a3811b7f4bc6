"""The live recorder's logic, offline: recorded stream lines through the same session/listener path.

No Betfair connection exists here. What runs for real: `StreamSession` (message handling, clk
tracking, gap recording), `run_stream` (the reconnect loop, with a scripted connection standing
in for the socket), betfairlightweight's own `BetfairStream._data` -> our `RawListener`, the
catalogue tracker, credentials loading. The TLS socket runs in test_betfair_stream_socket.py;
login and the HTTP catalogue call do not run anywhere here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from betfair_helpers import FIXTURES, SHARED

from producers.betfair.catalogue import CataloguePoller, CatalogueTracker, betting_filter
from producers.betfair.live import (
    RawListener,
    load_credentials,
    market_filter_from,
    pump,
    run_stream,
)
from producers.betfair.parse import GAP_TOPIC, MARKET_TOPIC, RAW_TOPIC, StreamDecoder
from producers.betfair.session import StreamSession
from ticktape.errors import TicktapeError
from ticktape.events import CustomData, DeadLetter, Event, FeedGap, MarketBook
from ticktape.retry import backoff_delays
from ticktape.timeutil import VirtualClock

MARKET_LINES = (FIXTURES / "market.stream").read_bytes().splitlines()
RECV = 1_800_000_000_000_000_000


def _mcm(clk: str, ct: str | None = None, pt: int = 1700000009000, **extra: object) -> bytes:
    msg: dict[str, object] = {"op": "mcm", "id": 2, "clk": clk, "pt": pt, **extra}
    if ct:
        msg["ct"] = ct
    msg.setdefault("mc", [{"id": "1.100", "rc": [{"id": 11, "atb": [[2.0, 11]]}]}])
    return orjson.dumps(msg)


def _gaps(events: list[tuple[str, Event]]) -> list[FeedGap]:
    return [e for t, e in events if t == GAP_TOPIC and isinstance(e, FeedGap)]


def test_session_decodes_like_the_importer_but_stamps_capture_time() -> None:
    session = StreamSession("market")
    dec = StreamDecoder()
    for i, line in enumerate(MARKET_LINES):
        out = session.on_message(line, RECV + i)
        expected = dec.decode_line(line, RECV + i)
        assert out.events == expected and not out.dead_letters
    books = [e for t, e in StreamSession("market").on_message(MARKET_LINES[0], RECV).events if t == MARKET_TOPIC]
    assert isinstance(books[-1], MarketBook) and books[-1].ts_recv == RECV
    assert books[-1].ts_event == 1_700_000_000_000_000_000


def test_clocks_are_tracked_for_resubscription() -> None:
    session = StreamSession("market")
    assert session.resubscribe_clocks() == (None, None)  # nothing yet: a fresh subscription
    session.on_message(_mcm("A1", "SUB_IMAGE", initialClk="INIT"), RECV)
    session.on_message(_mcm("A2"), RECV + 1)
    session.on_message(orjson.dumps({"op": "mcm", "id": 2, "clk": "A3", "pt": 1700000010000, "ct": "HEARTBEAT"}),
                       RECV + 2)
    assert session.resubscribe_clocks() == ("INIT", "A3")


def test_reconnect_repaired_by_resub_delta_is_recorded_as_a_repaired_gap() -> None:
    session = StreamSession("market")
    session.on_message(_mcm("A1", "SUB_IMAGE", initialClk="INIT"), RECV)
    assert not _gaps(session.on_message(_mcm("A2"), RECV + 1).events)
    session.on_disconnected(RECV + 5, "disconnected: SocketError: timed out")
    out = session.on_message(_mcm("A3", "RESUB_DELTA"), RECV + 9)
    (gap,) = _gaps(out.events)
    assert gap.repaired and gap.stream == "market" and gap.ts_recv == RECV + 9
    assert "timed out" in gap.reason and "resent" in gap.reason
    assert not _gaps(session.on_message(_mcm("A4"), RECV + 10).events)  # recorded once
    assert session.close(RECV + 11) == []


def test_reconnect_answered_by_a_new_image_is_an_unrepaired_gap() -> None:
    session = StreamSession("market")
    session.on_message(_mcm("A1", "SUB_IMAGE", initialClk="INIT"), RECV)
    session.on_disconnected(RECV + 5, "connection closed")
    img = {"id": "1.100", "img": True, "rc": [{"id": 11, "atb": [[3.0, 1]]}]}
    (gap,) = _gaps(session.on_message(_mcm("B1", "SUB_IMAGE", initialClk="INIT2", mc=[img]), RECV + 9).events)
    assert not gap.repaired and "full image" in gap.reason


def test_stopping_while_disconnected_records_the_gap() -> None:
    session = StreamSession("order")
    session.on_message(orjson.dumps({"op": "ocm", "id": 3, "initialClk": "I", "clk": "C", "pt": 1700000000000}), RECV)
    session.on_disconnected(RECV + 1, "disconnected: OSError: reset")
    (gap,) = _gaps(session.close(RECV + 2))
    assert not gap.repaired and gap.stream == "order" and "stopped" in gap.reason


def test_stream_status_is_recorded_when_it_changes() -> None:
    session = StreamSession("market")
    first = session.on_message(_mcm("A1", status=503), RECV)
    second = session.on_message(_mcm("A2", status=503), RECV + 1)
    cleared = session.on_message(_mcm("A3"), RECV + 2)
    (gap,) = _gaps(first.events)
    assert "503" in gap.reason and not gap.repaired
    assert not _gaps(second.events) and not _gaps(cleared.events)


def test_raw_payloads_and_dead_letters() -> None:
    session = StreamSession("market", keep_raw=True)
    out = session.on_message(MARKET_LINES[0], RECV)
    raw = [e for t, e in out.events if t == RAW_TOPIC]
    assert len(raw) == 1 and isinstance(raw[0], CustomData) and raw[0].payload.encode() == MARKET_LINES[0]
    bad = session.on_message(b'{"op":"mcm","clk":"x","mc":[{"id":"1.1"}]}', RECV + 1)  # no pt
    (dl,) = bad.dead_letters
    assert isinstance(dl, DeadLetter) and dl.position == "message 2" and "publish time" in dl.error
    assert dl.raw == b'{"op":"mcm","clk":"x","mc":[{"id":"1.1"}]}' and dl.source == "betfair:market-stream"
    assert [t for t, _ in bad.events] == [RAW_TOPIC]  # the raw copy is kept even when parsing fails


def test_failure_status_closing_the_connection_is_reported() -> None:
    out = StreamSession("market").on_message(orjson.dumps({
        "op": "status", "id": 1, "statusCode": "FAILURE", "errorCode": "NOT_AUTHORIZED",
        "errorMessage": "AppKey is not configured for service", "connectionClosed": True}), RECV)
    assert out.close and out.error is not None and "NOT_AUTHORIZED" in out.error


def test_betfairlightweight_stream_feeds_the_session_through_our_listener() -> None:
    """The live path: betfairlightweight's BetfairStream hands each line to `RawListener.on_data`."""
    import betfairlightweight

    session = StreamSession("market")
    clock = VirtualClock(RECV)
    emitted: list[tuple[str, Event]] = []
    listener = RawListener(lambda raw: pump(session, raw, clock, emitted.extend))
    client = betfairlightweight.APIClient("user", "password", app_key="key")
    stream = client.streaming.create_stream(unique_id=2, listener=listener)
    for line in MARKET_LINES:
        stream._data(line.decode())  # what BetfairStream._read_loop does with each CRLF-split line
    dec = StreamDecoder()
    expected = [pair for line in MARKET_LINES for pair in dec.decode_line(line, RECV)]
    assert emitted == expected and len(expected) == 9
    with pytest.raises(betfairlightweight.exceptions.ListenerError):  # FAILURE + connectionClosed closes it
        stream._data('{"op":"status","statusCode":"FAILURE","errorCode":"X","connectionClosed":true}')


class ScriptedConnection:
    """Stands in for the socket: each call plays one script of raw lines, then drops or ends."""

    def __init__(self, scripts: list[tuple[list[bytes], Exception | None]], stop: threading.Event) -> None:
        self.scripts = scripts
        self.stop = stop
        self.clocks_seen: list[tuple[str | None, str | None]] = []

    def __call__(self, session: StreamSession, on_raw: Callable[[str | bytes], bool]) -> None:
        self.clocks_seen.append(session.resubscribe_clocks())
        lines, error = self.scripts.pop(0)
        for line in lines:
            on_raw(line)
        if not self.scripts:
            self.stop.set()
        if error is not None:
            raise error


def test_run_stream_reconnects_with_backoff_and_resubscribes_from_the_last_clk() -> None:
    stop = threading.Event()
    conn = ScriptedConnection([
        ([_mcm("A1", "SUB_IMAGE", initialClk="INIT"), _mcm("A2")], OSError("connection reset")),
        ([], ConnectionError("refused")),
        ([_mcm("A3", "RESUB_DELTA"), _mcm("A4")], None),
    ], stop)
    session = StreamSession("market")
    emitted: list[tuple[str, Event]] = []
    sleeps: list[float] = []
    run_stream(session, conn, VirtualClock(RECV), emitted.extend, stop, backoff_delays(1.0, 60.0), sleeps.append)
    assert conn.clocks_seen == [(None, None), ("INIT", "A2"), ("INIT", "A2")]
    assert sleeps == [1.0, 2.0]
    (gap,) = _gaps(emitted)
    assert gap.repaired and "connection reset" in gap.reason  # the first drop's cause is kept
    assert sum(isinstance(e, MarketBook) for _, e in emitted) == 4


def test_market_filter_from_options() -> None:
    assert market_filter_from('{"eventTypeIds":["7"]}', "1.1, 1.2") == {"eventTypeIds": ["7"], "marketIds": ["1.1",
                                                                                                             "1.2"]}
    with pytest.raises(TicktapeError, match="--filter or --market-ids"):
        market_filter_from(None, None)
    with pytest.raises(TicktapeError, match="not JSON"):
        market_filter_from("{oops", None)


def test_credentials_from_environment_masked_and_never_from_the_repo(tmp_path: Path) -> None:
    env = {"BETFAIR_USERNAME": "me", "BETFAIR_PASSWORD": "hunter2", "BETFAIR_APP_KEY": "k3y", "BETFAIR_CERTS": "/c"}
    creds = load_credentials(None, env)
    assert creds.username == "me" and creds.password.get() == "hunter2" and creds.certs == "/c"
    assert "hunter2" not in repr(creds) and "k3y" not in str(creds)
    with pytest.raises(TicktapeError, match="BETFAIR_PASSWORD"):
        load_credentials(None, {"BETFAIR_USERNAME": "me", "BETFAIR_APP_KEY": "k"})
    outside = tmp_path / "betfair.toml"
    outside.write_text('[betfair]\nusername = "file-user"\npassword = "pw"\napp_key = "ak"\n')
    assert load_credentials(str(outside), {}).username == "file-user"
    inside = Path(__file__).resolve().parent / "betfair-credentials-test.toml"
    with pytest.raises(TicktapeError, match="inside a git repository"):
        load_credentials(str(inside), {})


def _catalogue(market_id: str = "1.100", name: str = "R1") -> dict[str, object]:
    if SHARED.is_dir() and market_id == "1.197931750":
        return orjson.loads((SHARED / "1.197931750.catalogue.json").read_bytes())  # type: ignore[no-any-return]
    return {"marketId": market_id, "marketName": name, "totalMatched": 10.0,
            "description": {"marketType": "WIN", "marketTime": "2023-11-14T22:30:00.000Z", "bettingType": "ODDS"},
            "event": {"id": "31", "name": "Test", "venue": "Testville", "countryCode": "GB", "timezone": "UTC"},
            "eventType": {"id": "7"}, "runners": [{"selectionId": 11, "runnerName": "1. Fast", "sortPriority": 1}]}


def test_catalogue_tracker_emits_only_new_or_changed_catalogues() -> None:
    tracker = CatalogueTracker()
    first = tracker.update([_catalogue(), _catalogue("1.197931750")], RECV)
    assert [d.market_id for d in first] == ["1.100", "1.197931750"]
    assert first[0].runners[0].name == "1. Fast" and first[0].status == "CATALOGUE" and first[0].ts_event == RECV
    moved = dict(_catalogue(), totalMatched=99.0)  # money matched is not a definition change
    assert tracker.update([moved], RECV + 1) == []
    renamed = tracker.update([_catalogue(name="R1 renamed")], RECV + 2)
    assert [d.market_name for d in renamed] == ["R1 renamed"]


def test_catalogue_poller_asks_with_the_equivalent_betting_filter() -> None:
    calls: list[dict[str, object]] = []

    class Betting:
        def list_market_catalogue(self, **kwargs: object) -> list[dict[str, object]]:
            calls.append(kwargs)
            return [_catalogue()]

    class Client:
        betting = Betting()

    poller = CataloguePoller({"eventTypeIds": ["7"], "countryCodes": ["GB"], "marketTypes": ["WIN"]})
    assert len(poller.poll(Client(), VirtualClock(RECV))) == 1
    assert poller.poll(Client(), VirtualClock(RECV + 1)) == []
    assert calls[0]["filter"] == {"eventTypeIds": ["7"], "marketCountries": ["GB"], "marketTypeCodes": ["WIN"]}
    assert calls[0]["lightweight"] is True
    assert betting_filter({"marketIds": ["1.1"], "unknown": 1}) == {"marketIds": ["1.1"]}


class ReplaySocketStream:
    """betfairlightweight's real `BetfairStream` with only the socket replaced by recorded lines.

    Its own subscribe (message building, listener registration), read loop (CRLF split) and
    `_data` -> listener path run unchanged; `_connect`/`_send`/`_receive_all` stand in for TLS.
    """

    def __new__(cls, listener: object, plays: list[list[bytes]], sent: list[dict[str, object]],
                stop: threading.Event) -> object:
        from betfairlightweight.exceptions import SocketError
        from betfairlightweight.streaming.betfairstream import BetfairStream

        class Replay(BetfairStream):  # type: ignore[misc]
            def _connect(self) -> None:
                self._running = True
                self._chunks = [b'{"op":"connection","connectionId":"002-1"}'] + (plays.pop(0) if plays else [])

            def _send(self, message: dict[str, object]) -> None:
                if not self._running:
                    self._connect()
                sent.append(message)

            def _receive_all(self) -> str:
                if not self._chunks:
                    if not plays:
                        stop.set()
                    self.stop()
                    raise SocketError("[Connect: 1]: Connection closed by server")
                return self._chunks.pop(0).decode() + "\r\n"

        return Replay(1, listener, "app-key", "session", 1.0, 1024, None)


def test_run_recorder_end_to_end_with_only_the_socket_replaced(tmp_path: Path) -> None:
    from producers.betfair.live import RecordOptions, run_recorder
    from ticktape.tape import open_tape

    lines = MARKET_LINES[:2]
    first = [orjson.dumps(dict(orjson.loads(lines[0]), ct="SUB_IMAGE", initialClk="INIT", id=1)),
             orjson.dumps(dict(orjson.loads(lines[1]), id=1))]
    resumed = [_mcm("R1", "RESUB_DELTA", id=1)]
    plays = [first, resumed]
    sent: list[dict[str, object]] = []
    stop = threading.Event()

    class Streaming:
        def create_stream(self, listener: object, **_: object) -> object:
            return ReplaySocketStream(listener, plays, sent, stop)

    class Client:
        streaming = Streaming()

        def keep_alive(self) -> None:
            pass

    tape = open_tape(f"file:{tmp_path / 'tape'}")
    options = RecordOptions(market_filter={"marketIds": ["1.100"]}, orders=False, catalogue_interval=0,
                            backoff_initial=0.01, backoff_max=0.02, flush_interval=0.01)
    run_recorder(tape, None, options, clock=VirtualClock(RECV), client=Client(), stop=stop)
    subs = [m for m in sent if m.get("op") == "marketSubscription"]
    assert subs[0]["initialClk"] is None and subs[0]["marketFilter"] == {"marketIds": ["1.100"]}
    assert (subs[1]["initialClk"], subs[1]["clk"]) == ("INIT", "2")  # resubscribed from the last clk
    books = [r.event for r in tape.read(MARKET_TOPIC) if isinstance(r.event, MarketBook)]
    assert len(books) == 3 and all(b.ts_recv == RECV for b in books)
    gaps = [r.event for r in tape.read(GAP_TOPIC)]
    assert len(gaps) == 1 and isinstance(gaps[0], FeedGap) and gaps[0].repaired
    tape.close()


def test_a_bug_in_the_stream_thread_stops_the_recorder_loudly(tmp_path: Path) -> None:
    from producers.betfair.live import RecordOptions, run_recorder
    from ticktape.tape import open_tape

    class Streaming:
        def create_stream(self, listener: object, **_: object) -> object:
            raise ValueError("not a socket problem")

    class Client:
        streaming = Streaming()

    tape = open_tape(f"file:{tmp_path / 'tape'}")
    options = RecordOptions(market_filter={"marketIds": ["1.100"]}, orders=False, catalogue_interval=0,
                            flush_interval=0.01)
    with pytest.raises(TicktapeError, match="not a socket problem"):
        run_recorder(tape, None, options, clock=VirtualClock(RECV), client=Client())
    tape.close()


def test_record_command_without_credentials_names_the_variables(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ticktape.cli import _register_plugins, cli

    for var in ("BETFAIR_USERNAME", "BETFAIR_PASSWORD", "BETFAIR_APP_KEY", "BETFAIR_CERTS"):
        monkeypatch.delenv(var, raising=False)
    _register_plugins()
    result = CliRunner().invoke(cli, ["--tape", f"file:{tmp_path / 'tape'}", "record", "betfair",
                                      "--market-ids", "1.100"])
    assert isinstance(result.exception, TicktapeError)
    assert "BETFAIR_USERNAME" in str(result.exception) and "BETFAIR_APP_KEY" in str(result.exception)
