"""The live Betfair recorder over a real TLS socket: betfairlightweight's own stream client,
unchanged, against a local server speaking the Stream API protocol (tests/.../betfair_stream_server.py).

What is not Betfair here: the endpoints (127.0.0.1, reached by registering a host name and a
locale with betfairlightweight, setting its stream port, and trusting the local certificate).
Everything from `run_recorder` through betfairlightweight's login, betting API, socket,
handshake, CRLF framing and resubscription to the tape runs as it does against Betfair.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import betfairlightweight
import orjson
import pytest
from betfair_helpers import FIXTURES, SHARED
from betfairlightweight.baseclient import BaseClient
from betfairlightweight.streaming.betfairstream import BetfairStream

from producers.betfair.live import Credentials, RecordOptions, load_credentials, run_recorder
from producers.betfair.parse import GAP_TOPIC, MARKET_TOPIC, ORDERS_TOPIC, StreamDecoder
from tests.venues.betfair_exchange import BetfairApiServer, BetfairStreamServer, self_signed_cert
from ticktape.events import Event, FeedGap, MarketBook, MarketDefinition
from ticktape.tape.file import FileTape

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the server's certificate")

SOURCES = {
    "fixture": (FIXTURES / "market.stream", [1, 2]),  # cut in change 1, then 2 changes after resuming
    "real": (SHARED / "1.197931750", [40, 55]),
}


def _without_recv_time(events: list[Event]) -> list[Event]:
    """Live events are stamped with the capture time; everything else must match the file."""
    return [e._replace(ts_recv=0) for e in events]


def _record_until(tape_dir: Path, credentials: Credentials | None, options: RecordOptions, client: Any,
                  done: Callable[[FileTape], bool], servers: list[Any]) -> None:
    """Run the recorder in a thread until `done(reader)` holds (at most 60 s), then stop it and the
    servers (closing them ends its socket read at once); fail with whatever the recorder raised."""
    tape = FileTape(tape_dir)
    stop = threading.Event()
    failures: list[BaseException] = []

    def record() -> None:
        try:
            run_recorder(tape, credentials, options, client=client, stop=stop)
        except BaseException as exc:  # reported below
            failures.append(exc)

    recorder = threading.Thread(target=record, name="recorder")
    recorder.start()
    reader = FileTape(tape_dir)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not failures and recorder.is_alive():
        if MARKET_TOPIC in reader.topic_names() and done(reader):
            break
        time.sleep(0.05)
    stop.set()
    for server in servers:
        server.close()
    recorder.join(timeout=30)
    assert not recorder.is_alive() and not failures, failures


def _books(reader: FileTape) -> int:
    return sum(isinstance(r.event, MarketBook) for r in reader.read(MARKET_TOPIC))


@pytest.mark.parametrize("source", [pytest.param("fixture"),
                                    pytest.param("real", marks=pytest.mark.shared_data("betfair/1.197931750"))])
def test_recorder_loses_nothing_when_betfair_cuts_the_connection_mid_message(
        source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, cuts = SOURCES[source]
    if not path.exists():
        pytest.skip(f"{path} is absent")
    changes = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    decoder = StreamDecoder()
    expected = [e for line in path.read_bytes().splitlines() if line.strip()
                for topic, e in decoder.decode_line(line) if topic == MARKET_TOPIC]
    books = sum(isinstance(e, MarketBook) for e in expected)
    assert books >= len(changes) - 1  # one per change (the fixture holds a heartbeat)

    server = BetfairStreamServer(changes, cuts, *self_signed_cert(tmp_path))
    monkeypatch.setitem(BetfairStream.HOSTS, "ticktape-test", "127.0.0.1")
    monkeypatch.setattr(BetfairStream, "_BetfairStream__port", server.port)
    client = betfairlightweight.APIClient("user", "password", app_key="app-key")
    client.set_session_token("session-token")
    market_id = changes[0]["mc"][0]["id"]
    options = RecordOptions(market_filter={"marketIds": [market_id]}, orders=False, catalogue_interval=0,
                            heartbeat_ms=500, backoff_initial=0.01, backoff_max=0.05, flush_interval=0.01,
                            stream_host="ticktape-test")
    _record_until(tmp_path / "tape", None, options, client,
                  lambda reader: server.all_sent.is_set() and _books(reader) >= books, [server])

    recorded = [r.event for r in FileTape(tmp_path / "tape").read(MARKET_TOPIC)]
    assert _without_recv_time(recorded) == _without_recv_time(expected)  # every change once, in order
    gaps = [r.event for r in FileTape(tmp_path / "tape").read(GAP_TOPIC)]
    assert len(gaps) == len(cuts) and all(isinstance(g, FeedGap) and g.repaired for g in gaps)

    auth = [m for m in server.received if m["op"] == "authentication"]
    assert len(auth) == len(cuts) + 1
    assert all((m["appKey"], m["session"]) == ("app-key", "session-token") for m in auth)
    subs = [m for m in server.received if m["op"] == "marketSubscription"]
    assert [s.get("clk") for s in subs] == [None, str(cuts[0] - 1), str(cuts[0] + cuts[1] - 1)]
    assert all(s.get("initialClk") == "initial" for s in subs[1:])
    assert all(s["marketFilter"] == {"marketIds": [market_id]} and s["heartbeatMs"] == 500 for s in subs)


CATALOGUE = {
    "marketId": "1.100", "marketName": "R1 480m", "marketStartTime": "2023-11-14T22:30:00.000Z",
    "description": {"marketType": "WIN", "bettingType": "ODDS", "marketTime": "2023-11-14T22:30:00.000Z",
                    "turnInPlayEnabled": True},
    "runners": [{"selectionId": 11, "runnerName": "1. Swift", "handicap": 0.0, "sortPriority": 1},
                {"selectionId": 22, "runnerName": "2. Steady", "handicap": 0.0, "sortPriority": 2}],
    "event": {"id": "31", "name": "Romford 14th Nov", "countryCode": "GB", "timezone": "Europe/London"},
    "eventType": {"id": "4339", "name": "Greyhound Racing"},
    "totalMatched": 10.0,
}


def _lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def test_record_betfair_logs_in_polls_the_catalogue_and_streams_with_the_session(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`run_recorder` from credentials alone: login, catalogue poller, market and order streams."""
    path, order_path = FIXTURES / "market.stream", FIXTURES / "orders.stream"
    changes = [orjson.loads(line) for line in _lines(path)]
    cert, key = self_signed_cert(tmp_path)
    stream = BetfairStreamServer(changes, [], cert, key, order_changes=[orjson.loads(x) for x in _lines(order_path)])
    api = BetfairApiServer([CATALOGUE], "user", "pa55-not-on-tape", "app-key", cert, key)
    monkeypatch.setitem(BaseClient.IDENTITY_URLS, "ticktape-test", api.identity_url)
    monkeypatch.setitem(BaseClient.API_URLS, "ticktape-test", api.api_url)
    monkeypatch.setitem(BetfairStream.HOSTS, "ticktape-test", "127.0.0.1")
    monkeypatch.setattr(BetfairStream, "_BetfairStream__port", stream.port)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # requests trusts the local certificate
    credentials = load_credentials(env={"BETFAIR_USERNAME": "user", "BETFAIR_PASSWORD": "pa55-not-on-tape",
                                        "BETFAIR_APP_KEY": "app-key"})
    options = RecordOptions(market_filter={"marketIds": ["1.100"]}, orders=True, catalogue_interval=0.1,
                            heartbeat_ms=500, flush_interval=0.01, stream_host="ticktape-test",
                            locale="ticktape-test")
    books = sum(isinstance(e, MarketBook) for line in _lines(path) for _, e in StreamDecoder().decode_line(line))
    orders_decoder = StreamDecoder()
    expected_orders = [e for line in _lines(order_path) for t, e in orders_decoder.decode_line(line)
                       if t == ORDERS_TOPIC]
    assert expected_orders

    def everything_recorded(reader: FileTape) -> bool:
        polls = [c for c in api.calls if c[0].endswith("json-rpc/v1")]
        orders = sum(1 for _ in reader.read(ORDERS_TOPIC)) if ORDERS_TOPIC in reader.topic_names() else 0
        return (stream.all_sent.is_set() and stream.orders_sent.is_set() and _books(reader) >= books
                and orders >= len(expected_orders) and len(polls) >= 2)

    _record_until(tmp_path / "tape", credentials, options, None, everything_recorded, [stream, api])

    login, *polls = api.calls
    assert login[0] == "/api/login" and login[1]["X-Application"] == "app-key"
    assert polls and all(p[1]["X-Authentication"] == BetfairApiServer.TOKEN for p in polls)
    assert polls[0][2]["params"]["filter"] == {"marketIds": ["1.100"]}
    auth = [m for m in stream.received if m["op"] == "authentication"]
    assert [(m["appKey"], m["session"]) for m in auth] == [("app-key", BetfairApiServer.TOKEN)] * 2  # two sockets
    assert sorted(m["op"] for m in stream.received if m["op"].endswith("Subscription")) == [
        "marketSubscription", "orderSubscription"]
    orders = [r.event for r in FileTape(tmp_path / "tape").read(ORDERS_TOPIC)]
    assert _without_recv_time(orders) == _without_recv_time(expected_orders)
    events = [r.event for r in FileTape(tmp_path / "tape").read(MARKET_TOPIC)]
    assert sum(isinstance(e, MarketBook) for e in events) == books
    from_catalogue = [e for e in events if isinstance(e, MarketDefinition) and e.status == "CATALOGUE"]
    assert len(from_catalogue) == 1  # polled again and again, recorded once: it did not change
    assert from_catalogue[0].market_name == "R1 480m"
    assert [r.name for r in from_catalogue[0].runners] == ["1. Swift", "2. Steady"]
    written = b"".join(p.read_bytes() for p in (tmp_path / "tape").rglob("*") if p.is_file())
    assert b"pa55-not-on-tape" not in written  # secrets never reach the tape
