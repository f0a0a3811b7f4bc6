"""A local Betfair Stream API endpoint for the recorder's socket tests.

It speaks the Stream API's wire protocol as Betfair documents it: TLS, one JSON message per
CRLF-terminated line, a `connection` message on connect, `status` answers to `authentication`
and `marketSubscription`, then `mcm` market changes numbered by `clk`, `HEARTBEAT`s when idle.
A subscription that carries `clk` resumes after that change (`ct` = `RESUB_DELTA`), as Betfair
does, so a recorder that resubscribes correctly loses nothing across a dropped connection.

It replays a recorded market's changes and can cut a connection in the middle of a message.
`BetfairApiServer` answers the HTTPS side the recorder uses: the interactive login and the
betting API's `listMarketCatalogue` (JSON-RPC), checking the app key and session token.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Sequence
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from local_http import JsonHandler


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate and key for 127.0.0.1 (trusted by pointing REQUESTS_CA_BUNDLE at it;
    betfairlightweight's stream client does not verify certificates at all)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


class BetfairApiServer:
    """Betfair's HTTPS endpoints the recorder calls: `POST {identity}login` (interactive login) and
    `POST {api}betting/json-rpc/v1` with `SportsAPING/v1.0/listMarketCatalogue`.

    Logs in `username`/`password` for `app_key` only, then wants that app key and the token it
    issued on every API call; answers the catalogue with `catalogues`. `calls` keeps every request.
    """

    TOKEN = "session-from-login"

    def __init__(self, catalogues: list[dict[str, Any]], username: str, password: str, app_key: str,
                 cert: Path, key: Path) -> None:
        self.calls: list[tuple[str, dict[str, str], Any]] = []  # (path, headers, body)
        server = self
        expected_login = {"username": username, "password": password}

        class Handler(JsonHandler):
            def do_POST(self) -> None:  # http.server's name for POST handlers
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                headers = dict(self.headers.items())
                if self.path == "/api/login":
                    form = {k: v[0] for k, v in parse_qs(body).items()}
                    server.calls.append((self.path, headers, form))
                    ok = form == expected_login and headers.get("X-Application") == app_key
                    self.reply_json({"token": server.TOKEN if ok else "", "product": app_key,
                                 "status": "SUCCESS" if ok else "FAIL", "error": "" if ok else "INVALID_USERNAME"})
                elif self.path == "/exchange/betting/json-rpc/v1":
                    request = json.loads(body)
                    server.calls.append((self.path, headers, request))
                    if (headers.get("X-Authentication"), headers.get("X-Application")) != (server.TOKEN, app_key):
                        self.reply_json({"jsonrpc": "2.0", "id": request.get("id"),
                                     "error": {"code": -32099, "message": "ANGX-0003", "data": {}}})
                    elif request.get("method") == "SportsAPING/v1.0/listMarketCatalogue":
                        self.reply_json({"jsonrpc": "2.0", "id": request.get("id"), "result": catalogues})
                    else:
                        self.reply_json({"jsonrpc": "2.0", "id": request.get("id"),
                                     "error": {"code": -32601, "message": "unknown method"}})
                else:
                    self.send_error(404)

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._http.socket = context.wrap_socket(self._http.socket, server_side=True)
        port = self._http.server_address[1]
        self.identity_url = f"https://127.0.0.1:{port}/api/"
        self.api_url = f"https://127.0.0.1:{port}/exchange/"
        self._thread = threading.Thread(target=self._http.serve_forever, name="betfair-api-server", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=10)


class BetfairStreamServer:
    """Serves `changes` (mcm messages of one recorded market, in order) to market subscriptions
    and `order_changes` (ocm messages) to order subscriptions, each connection on its own thread.

    `cuts[n]`: the n-th market subscription's connection is cut after that many changes, halfway
    through the next one (later ones run to the end, then idle until closed). `all_sent` /
    `orders_sent` are set once a connection has sent every market / order change. Every message
    a client sent is kept in `received`.
    """

    def __init__(self, changes: Sequence[dict[str, Any]], cuts: Sequence[int], cert: Path, key: Path,
                 order_changes: Sequence[dict[str, Any]] = ()) -> None:
        self.streams = {"marketSubscription": ("mcm", list(changes)), "orderSubscription": ("ocm", list(order_changes))}
        self.cuts = list(cuts)
        self.received: list[dict[str, Any]] = []
        self.all_sent = threading.Event()
        self.orders_sent = threading.Event()
        self._market_subscriptions = 0
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: set[ssl.SSLSocket] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._serve, name="betfair-stream-server", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop listening and drop the open connections (the client sees the server close them)."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (close() alone does not)
        self._listener.close()
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):  # already gone
                    conn.shutdown(socket.SHUT_RDWR)
        for t in [self._thread, *self._threads]:
            t.join(timeout=10)

    def _serve(self) -> None:
        connection = 0
        while not self._closed.is_set():
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return  # closed
            t = threading.Thread(target=self._connection, args=(raw, connection), daemon=True)
            self._threads.append(t)
            t.start()
            connection += 1

    def _connection(self, raw: socket.socket, connection: int) -> None:
        try:
            with self._context.wrap_socket(raw, server_side=True) as conn:
                with self._lock:
                    self._open.add(conn)
                try:
                    self._session(conn, connection)
                finally:
                    with self._lock:
                        self._open.discard(conn)
        except OSError:
            pass  # the client went away, or close() cut us off

    def _session(self, conn: ssl.SSLSocket, connection: int) -> None:
        def send(message: dict[str, Any], whole: bool = True) -> None:
            data = json.dumps(message, separators=(",", ":")).encode() + b"\r\n"
            conn.sendall(data if whole else data[:len(data) // 2])

        send({"op": "connection", "connectionId": f"002-{connection:06d}"})
        with conn.makefile("rb") as lines:
            for line in lines:
                msg = json.loads(line)
                self.received.append(msg)
                send({"op": "status", "id": msg.get("id"), "statusCode": "SUCCESS", "connectionClosed": False})
                if msg.get("op") in self.streams and not self._stream(send, msg):
                    return  # cut

    def _stream(self, send: Any, sub: dict[str, Any]) -> bool:
        """Send the changes after the subscription's clk; False if this connection is cut."""
        op, changes = self.streams[sub["op"]]
        cut = None
        if op == "mcm":
            with self._lock:
                n = self._market_subscriptions
                self._market_subscriptions += 1
            cut = self.cuts[n] if n < len(self.cuts) else None
        resume = sub.get("clk")
        start = int(resume) + 1 if resume else 0
        for i in range(start, len(changes)):
            message = dict(changes[i], op=op, id=sub["id"], clk=str(i))
            if i == start and "ct" not in message:  # (a recorded heartbeat stays one)
                message["ct"] = "RESUB_DELTA" if resume else "SUB_IMAGE"
                if not resume:
                    message["initialClk"] = "initial"
            if cut is not None and i - start == cut:
                send(message, whole=False)
                return False
            send(message)
        if changes:
            send({"op": op, "id": sub["id"], "clk": str(len(changes) - 1), "ct": "HEARTBEAT", "pt": changes[-1]["pt"]})
        (self.all_sent if op == "mcm" else self.orders_sent).set()
        return True
