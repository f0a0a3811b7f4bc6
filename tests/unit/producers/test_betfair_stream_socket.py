"""The live Betfair recorder over a real TLS socket: betfairlightweight's own stream client,
unchanged, against a local server speaking the Stream API protocol (tests/.../betfair_stream_server.py).

What is not Betfair here: the endpoint (127.0.0.1, reached by registering a host name with
betfairlightweight and setting its port) and the login (a session token is set, not fetched).
Everything from `run_recorder` through betfairlightweight's socket, handshake, CRLF framing and
resubscription to the tape runs as it does against Betfair.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import betfairlightweight
import orjson
import pytest
from betfair_helpers import FIXTURES, SHARED
from betfair_stream_server import BetfairStreamServer, self_signed_cert
from betfairlightweight.streaming.betfairstream import BetfairStream

from producers.betfair.live import RecordOptions, run_recorder
from producers.betfair.parse import GAP_TOPIC, MARKET_TOPIC, StreamDecoder
from ticktape.events import Event, FeedGap, MarketBook
from ticktape.tape.file import FileTape

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the server's certificate")

SOURCES = {
    "fixture": (FIXTURES / "market.stream", [1, 2]),  # cut in change 1, then 2 changes after resuming
    "real": (SHARED / "1.197931750", [40, 55]),
}


def _without_recv_time(events: list[Event]) -> list[Event]:
    """Live events are stamped with the capture time; everything else must match the file."""
    return [e._replace(ts_recv=0) for e in events]


@pytest.mark.parametrize("source", sorted(SOURCES))
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
    tape = FileTape(tmp_path / "tape")
    stop = threading.Event()
    failures: list[BaseException] = []

    def record() -> None:
        try:
            run_recorder(tape, None, options, client=client, stop=stop)
        except BaseException as exc:  # reported below
            failures.append(exc)

    recorder = threading.Thread(target=record, name="recorder")
    recorder.start()
    reader = FileTape(tmp_path / "tape")
    deadline = time.monotonic() + 60
    recorded: list[Any] = []
    while time.monotonic() < deadline and not failures:
        if server.all_sent.is_set() and MARKET_TOPIC in reader.topic_names():
            recorded = [r.event for r in reader.read(MARKET_TOPIC)]
            if sum(isinstance(e, MarketBook) for e in recorded) >= books:
                break
        time.sleep(0.05)
    stop.set()
    server.close()  # the recorder's socket read ends at once
    recorder.join(timeout=30)
    assert not recorder.is_alive() and not failures, failures

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
