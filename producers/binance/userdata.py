"""The user-data stream, the way python-binance 1.0.37 opens it, on our own thread and websocket client.

- Spot: python-binance no longer uses a listen key (Binance retired `POST /api/v3/userDataStream`
  for the WebSocket API). It sends `userDataStream.subscribe.signature` (apiKey, timestamp,
  HMAC-SHA256 signature) on the WebSocket API connection (`wss://ws-api.binance.com/ws-api/v3`),
  and events arrive on that connection as `{"subscriptionId", "event"}`.
- USD-M futures: a listen key from `POST /fapi/v1/listenKey`, the socket
  `wss://fstream.binance.com/private/ws?listenKey=<key>`, kept alive by `PUT /fapi/v1/listenKey`;
  a `listenKeyExpired` event means the key is dead: fetch a new one and reconnect.

python-binance's own managers are not used here: its spot subscription is not renewed when the
WebSocket API connection reconnects (events would silently stop), it reconnects after at least
one second with random jitter, and it ignores `listenKeyExpired`. This thread reconnects with
a bounded backoff (`ticktape.retry`), subscribes again on every connection, and renews a listen key when told.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from ticktape.retry import backoff_delays

log = logging.getLogger(__name__)

Handler = Callable[[Mapping[str, Any]], None]

SPOT_WS_API = {False: "wss://ws-api.binance.com/ws-api/v3", True: "wss://ws-api.testnet.binance.vision/ws-api/v3"}
FUTURES_STREAM = {False: "wss://fstream.binance.com/private/ws", True: "wss://fstream.binancefuture.com/private/ws"}
USER_DATA_URLS = {"spot": SPOT_WS_API, "futures": FUTURES_STREAM}
"""market -> testnet -> the user-data stream's URL."""


def ws_api_signature(params: Mapping[str, Any], secret: str) -> str:
    """HMAC-SHA256 of the WebSocket API request's parameters, sorted by name and url-encoded (hex)."""
    text = urlencode(sorted((k, str(v)) for k, v in params.items()))
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


class UserDataStream:
    """One thread: connect, subscribe, hand every event to `handler`, reconnect on drops, until `stop()`.

    Spot: `subscribe_params()` gives the signed subscription's params. Futures: `listen_key()`
    (a new or the current key), `keepalive(key)` every `keepalive_every` seconds.
    """

    def __init__(self, *, url: str, handler: Handler, market: str,
                 subscribe_params: Callable[[], dict[str, Any]] | None = None,
                 listen_key: Callable[[], str] | None = None, keepalive: Callable[[str], None] | None = None,
                 keepalive_every: float = 1800.0, backoff: tuple[float, float] = (0.05, 10.0),
                 open_timeout: float = 10.0) -> None:
        self.url = url
        self.handler = handler
        self.market = market
        self.subscribe_params = subscribe_params
        self.listen_key = listen_key
        self.keepalive = keepalive
        self.keepalive_every = keepalive_every
        self.backoff = backoff
        self.open_timeout = open_timeout
        self.connections = 0  # connections opened (tests watch reconnects)
        self.renewals = 0  # listen keys fetched after an expiry
        self.subscribed = threading.Event()  # set while a connection is subscribed
        self._stop = threading.Event()
        self._conn: ClientConnection | None = None
        self._key: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"binance-user-data-{market}", daemon=True)

    def start(self) -> None:
        """Start the thread; `subscribed` is set once the first connection listens."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the connection and wait for the thread."""
        self._stop.set()
        conn = self._conn
        if conn is not None:
            conn.close()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        delays = self._delays()
        while not self._stop.is_set():
            try:
                self._session()
                delays = self._delays()  # a session that ended normally (expiry, server close): reconnect now
            except (OSError, ConnectionClosed, InvalidHandshake, InvalidURI, TimeoutError, ValueError) as exc:
                delay = next(delays)
                log.warning("binance user-data stream (%s) dropped: %s; reconnecting in %.2f s", self.market,
                            type(exc).__name__, delay)
                self._stop.wait(delay)
            except Exception:  # the REST listen key call failed (OutcomeUnknown, VenueBusy, ...): try again later
                log.exception("binance user-data stream (%s) could not (re)subscribe", self.market)
                self._stop.wait(next(delays))
            finally:
                self.subscribed.clear()
                self._conn = None

    def _delays(self) -> Iterator[float]:
        # jittered: the gateway's and a recorder's streams on one account do not reconnect in step
        return backoff_delays(self.backoff[0], self.backoff[1], jitter=0.5)

    def _session(self) -> None:
        if self.market == "spot":
            conn = connect(self.url, open_timeout=self.open_timeout)
        else:
            assert self.listen_key is not None
            self._key = self._key or self.listen_key()
            conn = connect(f"{self.url}?listenKey={self._key}", open_timeout=self.open_timeout)
        self._conn = conn
        self.connections += 1
        with conn:
            if self._stop.is_set():
                return
            if self.market == "spot":
                self._subscribe(conn)
            self.subscribed.set()
            next_keepalive = time.monotonic() + self.keepalive_every
            while not self._stop.is_set():
                try:
                    raw = conn.recv(timeout=0.5)
                except TimeoutError:
                    if self.market != "spot" and time.monotonic() >= next_keepalive and self._key:
                        assert self.keepalive is not None
                        self.keepalive(self._key)
                        next_keepalive = time.monotonic() + self.keepalive_every
                    continue
                msg = json.loads(raw)
                if not isinstance(msg, Mapping):
                    continue
                event = msg.get("event", msg) if isinstance(msg.get("event"), Mapping) else msg
                if event.get("e") == "listenKeyExpired":
                    self.renewals += 1
                    assert self.listen_key is not None
                    self._key = self.listen_key()  # the old key is dead: a new one, then a new connection
                    return
                if event.get("e") == "eventStreamTerminated":
                    return  # spot: the subscription ended (session logged out): subscribe again
                if "id" in msg and "status" in msg:
                    continue  # an answer to a request of ours
                self.handler(event)

    def _subscribe(self, conn: ClientConnection) -> None:
        assert self.subscribe_params is not None
        rid = str(uuid.uuid4())
        conn.send(json.dumps({"id": rid, "method": "userDataStream.subscribe.signature",
                              "params": self.subscribe_params()}))
        deadline = time.monotonic() + self.open_timeout
        while True:
            answer = json.loads(conn.recv(timeout=max(0.01, deadline - time.monotonic())))
            if answer.get("id") == rid:
                break
            if isinstance(answer.get("event"), Mapping):
                self.handler(answer["event"])
        if answer.get("status") != 200:
            raise ValueError(f"user-data subscription refused: {answer.get('error')}")
