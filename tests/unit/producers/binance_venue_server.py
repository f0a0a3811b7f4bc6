"""A local Binance for the recorder's socket tests: its REST and websocket APIs for one symbol.

A small market (an order book and aggregate trades) moves one message at a time. The
websocket serves Binance's combined streams (`/stream?streams=...`, `{"stream", "data"}`
wrappers) of diff-depth updates (`U`/`u` update ids) and aggregate trades (`a` ids); REST
serves `/api/v3/ping`, `/api/v3/time`, `/api/v3/depth` (the book now, with `lastUpdateId`) and
`/api/v3/aggTrades?fromId=`, in Binance's documented shapes. Connections can be cut: the
market keeps moving while the client is away, and what it missed is only on REST, as on
Binance.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
import time
from collections.abc import Sequence
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from websockets.sync.server import ServerConnection, serve

from tests.venues.local_http import JsonHandler

T0_MS = 1_700_000_000_000


class LocalBinance:
    """One symbol's market behind Binance's REST and websocket APIs on 127.0.0.1.

    `cuts`: per connection, (messages sent, messages the market moves on while the client
    is away) before the connection is cut without a close frame; the connection after the
    last cut sends `final` messages, sets `all_sent`, then stays open until `close()`.
    """

    def __init__(self, symbol: str, cuts: Sequence[tuple[int, int]], final: int, seed: int = 5) -> None:
        self.symbol = symbol
        self.cuts = list(cuts)
        self.final = final
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.bids = {round(30_000 - i * 0.1, 1): round(1 + i * 0.5, 3) for i in range(1, 21)}
        self.asks = {round(30_000 + i * 0.1, 1): round(1 + i * 0.5, 3) for i in range(1, 21)}
        self.update_id = 1_000
        self.trades: list[dict[str, Any]] = []  # every aggregate trade so far, REST's shape
        self.messages = 0
        self.connections = 0
        self.ws_paths: list[str] = []
        self.rest_paths: list[str] = []
        self.all_sent = threading.Event()
        self._closing = threading.Event()
        self._rest = ThreadingHTTPServer(("127.0.0.1", 0), self._rest_handler())
        self._ws = serve(self._serve_ws, "127.0.0.1", 0)
        self.rest_url = f"http://127.0.0.1:{self._rest.server_address[1]}/api"
        self.ws_url = f"ws://127.0.0.1:{self._ws.socket.getsockname()[1]}/"
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (self._rest, self._ws)]
        for t in self._threads:
            t.start()

    def close(self) -> None:
        self._closing.set()
        self._ws.shutdown()
        self._rest.shutdown()
        self._rest.server_close()
        for t in self._threads:
            t.join(timeout=10)

    # --- the market ----------------------------------------------------------------------------

    def _move(self) -> dict[str, Any]:
        """The market's next event, as the websocket's combined-stream message."""
        self.messages += 1
        t = T0_MS + self.messages * 10
        if self.messages % 3 == 0:
            return {"stream": f"{self.symbol.lower()}@aggTrade", "data": self._trade(t)}
        return {"stream": f"{self.symbol.lower()}@depth@100ms", "data": self._depth_update(t)}

    def _depth_update(self, t: int) -> dict[str, Any]:
        first = self.update_id + 1
        self.update_id += self.rng.randint(1, 3)  # ids count changes, several per message
        changes: dict[str, list[list[str]]] = {"b": [], "a": []}
        for _ in range(self.rng.randint(1, 3)):
            side, book, sign = ("b", self.bids, -1) if self.rng.random() < 0.5 else ("a", self.asks, 1)
            price = round(30_000 + sign * self.rng.randint(1, 25) * 0.1, 1)
            size = 0.0 if self.rng.random() < 0.25 else round(self.rng.uniform(0.001, 5), 3)
            if size == 0:
                book.pop(price, None)
            else:
                book[price] = size
            changes[side].append([f"{price:.2f}", f"{size:.8f}"])
        return {"e": "depthUpdate", "E": t, "s": self.symbol, "U": first, "u": self.update_id,
                "b": changes["b"], "a": changes["a"]}

    def _trade(self, t: int) -> dict[str, Any]:
        trade_id = len(self.trades) + 1
        row = {"a": trade_id, "p": f"{30_000 + self.rng.randint(-5, 5) * 0.1:.2f}",
               "q": f"{self.rng.uniform(0.001, 1):.8f}", "f": trade_id * 2, "l": trade_id * 2 + 1, "T": t,
               "m": self.rng.random() < 0.5, "M": True}
        self.trades.append(row)
        return {"e": "aggTrade", "E": t, "s": self.symbol, **row}

    def book(self) -> tuple[int, dict[float, float], dict[float, float]]:
        """(last update id, bids, asks) now."""
        with self.lock:
            return self.update_id, dict(self.bids), dict(self.asks)

    # --- websocket -------------------------------------------------------------------------------

    def _serve_ws(self, conn: ServerConnection) -> None:
        assert conn.request is not None
        self.ws_paths.append(conn.request.path)
        n = self.connections
        self.connections += 1
        if n < len(self.cuts):
            sent, missed = self.cuts[n]
            self._send(conn, sent)
            with self.lock:
                for _ in range(missed):
                    self._move()  # the market goes on while the client is away
            conn.socket.shutdown(socket.SHUT_RDWR)  # cut: no close frame
            return
        self._send(conn, self.final)
        self.all_sent.set()
        while not self._closing.wait(0.05):
            pass  # stay connected, idle, until the test is done
        with contextlib.suppress(Exception):
            conn.close()

    def _send(self, conn: ServerConnection, count: int) -> None:
        for _ in range(count):
            with self.lock:
                message = self._move()
            conn.send(json.dumps(message))
            time.sleep(0.002)  # a live feed's pace: the client fetches snapshots while it streams

    # --- REST ------------------------------------------------------------------------------------

    def _rest_handler(self) -> type[JsonHandler]:
        venue = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                venue.rest_paths.append(url.path)
                body = venue._answer(url.path, query)
                self.reply_json(body, 200 if body is not None else 404)

        return Handler

    def _answer(self, path: str, query: dict[str, str]) -> Any:
        if path == "/api/v3/ping":
            return {}
        if path == "/api/v3/time":
            return {"serverTime": T0_MS}
        if path == "/api/v3/depth" and query.get("symbol") == self.symbol:
            last, bids, asks = self.book()
            limit = int(query.get("limit", 100))
            return {"lastUpdateId": last,
                    "bids": [[f"{p:.2f}", f"{bids[p]:.8f}"] for p in sorted(bids, reverse=True)[:limit]],
                    "asks": [[f"{p:.2f}", f"{asks[p]:.8f}"] for p in sorted(asks)[:limit]]}
        if path == "/api/v3/aggTrades" and query.get("symbol") == self.symbol:
            start, limit = int(query.get("fromId", 1)), int(query.get("limit", 500))
            with self.lock:
                return [row for row in self.trades if row["a"] >= start][:limit]
        return None
