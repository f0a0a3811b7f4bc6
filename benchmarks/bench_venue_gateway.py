"""The gateway on a real venue's API: the adapter's round trip, intent -> answer latency, burst throughput.

    python -m benchmarks.bench_venue_gateway [--venue binance|betfair] [--orders N] [--rate R] [--burst B]

The venue is the local one the tests use (`tests/venues/`: Binance's REST order API over HTTP,
Betfair's JSON-RPC over TLS, on 127.0.0.1), so the figures are ticktape's and its client
library's cost (python-binance / betfairlightweight, requests, the gateway's journal and fold)
plus a local server's, never a network's: on the real venues add the round trip to them.

- `adapter`: `LiveVenue.place` called directly, one market order (Binance) or matching back bet
  (Betfair) at a time: the client stack's round trip.
- `latency`: the gateway (in this process, a thread) serves a live run whose intents this
  process appends to a file tape on tmpfs at R per second; per intent, append -> its first
  answer (`OrderAccepted`) seen on `orders.event` by a follower (`LiveInputs`).
- `burst`: B intents appended at once; time until every one is answered (orders/s).

The local Binance declares limits no run reaches unless `--binance-limits`: then it declares
Binance's spot limits (100 orders per 10 s), which the gateway honours by waiting.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.common import machine, report
from robots.live.exchange import Command, LiveVenue
from robots.live.fold import run_tag
from robots.live.gateway import Gateway
from robots.live.inputs import LiveInputs
from robots.live.topics import EVENT_TOPIC, INTENT_TOPIC, RUNS_TOPIC
from ticktape.events import OrderAccepted, OrderRejected, PlaceOrder, RunStarted
from ticktape.tape import Tape, open_tape

REPO = Path(__file__).resolve().parent.parent
RUN = "bench-venue"
MARKET, SELECTION = "1.100", 11


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(_pct(ms, 0.5), 2), "p99_ms": round(_pct(ms, 0.99), 2), "max_ms": round(max(ms), 2),
            "mean_ms": round(statistics.fmean(ms), 2), "n": len(ms)}


GENEROUS = [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 10_000_000},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 10_000_000}]
"""Limits no benchmark reaches (Binance's own, 100 orders per 10 s on spot, cap a gateway at 10 orders/s)."""


@contextmanager
def local_venue(name: str, binance_limits: bool = False) -> Iterator[tuple[dict[str, object], dict[str, str]]]:
    """(gateway venue settings, credentials environment) of a local venue running in this process."""
    sys.path.insert(0, str(REPO))
    if name == "binance":
        from tests.venues.binance_exchange import LocalBinanceExchange

        ex = LocalBinanceExchange(balances={"USDT": "1000000000", "BTC": "0"},
                                  rate_limits=None if binance_limits else GENEROUS)
        ex.set_price("BTCUSDT", 30_000.0, 30_000.1)
        try:
            yield ({"rest_url": ex.rest_url, "ws_url": ex.ws_url, "timeout": 5.0},
                   {"BINANCE_API_KEY": ex.api_key, "BINANCE_API_SECRET": ex.api_secret})
        finally:
            ex.close()
        return
    from tests.venues.betfair_exchange import LocalBetfairExchange, self_signed_cert

    certs = Path(tempfile.mkdtemp(prefix="bench-cert-"))
    cert, key = self_signed_cert(certs)
    bf = LocalBetfairExchange(cert, key, balance=1e12, dedup_window=60.0)
    bf.set_prices(MARKET, SELECTION, back=2.0, lay=2.02)
    try:
        yield bf.settings(cert, timeout=5.0), bf.credentials_env()
    finally:
        bf.close()
        shutil.rmtree(certs, ignore_errors=True)


def intent(venue: str, k: int) -> PlaceOrder:
    """The k-th intent of the benchmark's run: a Binance market buy, or a Betfair back bet that matches."""
    ts = time.time_ns()
    coid = f"{run_tag(RUN)}-{k}-0"
    if venue == "binance":
        return PlaceOrder("bench", coid, "binance", "BTCUSDT", ts, ts, "BUY", "MARKET", 0.0, 0.001, "GTC")
    return PlaceOrder("bench", coid, "betfair", f"{MARKET}:{SELECTION}", ts, ts, "BUY", "LIMIT", 2.0, 2.0, "GTC")


def adapter(venue_name: str, settings: dict[str, object], n: int) -> dict[str, Any]:
    """`LiveVenue.place` round trips, one at a time."""
    from robots.live.real_venues import open_real_venue

    venue: LiveVenue = open_real_venue(venue_name, settings)
    try:
        venue.rules()
        times = []
        for k in range(n):
            order = intent(venue_name, 10_000_000 + k)
            t0 = time.perf_counter()
            venue.place(Command("place", order, order, 0, run_tag(RUN)))
            times.append((time.perf_counter() - t0) * 1e3)
        return _summary(times[min(50, n // 10):])
    finally:
        venue.close()


class Answers(threading.Thread):
    """Follows `orders.event`: when each client order id's first answer was seen."""

    def __init__(self, uri: str, tape: Tape) -> None:
        super().__init__(daemon=True)
        positions = {(EVENT_TOPIC, p): end for p, end in tape.end_offsets(EVENT_TOPIC).items()}
        self.inputs = LiveInputs(uri, positions)
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        self.inputs.start()
        while not self.stop.is_set():
            for rec in self.inputs.get(0.05):
                if type(rec.event) in (OrderAccepted, OrderRejected):
                    self.seen.setdefault(rec.event.client_order_id, time.perf_counter())
        self.inputs.close()


def gateway_run(venue_name: str, settings: dict[str, object], tape_dir: Path, n: int, rate: float,
                burst: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The gateway in a thread; paced intents (latency), then a burst (throughput)."""
    uri = f"file:{tape_dir}"
    tape = open_tape(uri)
    for topic in (RUNS_TOPIC, INTENT_TOPIC, EVENT_TOPIC):
        tape.create_topic(topic)
    tape.append(RUNS_TOPIC, [RunStarted(RUN, "bench", "bench", 0, 0, "{}", "bench", ("md",), None, None, "{}",
                                        json.dumps({"name": venue_name, "gateway": "external"}), "{}", "live")],
                keys=[RUN])
    gateway = Gateway(uri, venue=venue_name, venue_settings=settings, poll_seconds=60.0)
    gateway.start()
    stop = threading.Event()
    serving = threading.Thread(target=gateway.run, args=(stop,), daemon=True)
    serving.start()
    answers = Answers(uri, tape)
    answers.start()
    try:
        sent: dict[str, float] = {}
        for k in range(n):
            due = time.perf_counter()
            order = intent(venue_name, k)
            tape.append(INTENT_TOPIC, [order], keys=[RUN])
            sent[order.client_order_id] = due
            time.sleep(max(0.0, due + 1 / rate - time.perf_counter()))
        _wait(lambda: all(c in answers.seen for c in sent), 120)
        warm = min(100, n // 10)
        latency = _summary([(answers.seen[c] - t) * 1e3 for c, t in list(sent.items())[warm:]])
        orders = [intent(venue_name, n + k) for k in range(burst)]
        t0 = time.perf_counter()
        tape.append(INTENT_TOPIC, orders, keys=[RUN] * burst)
        _wait(lambda: all(o.client_order_id in answers.seen for o in orders), 300)
        took = time.perf_counter() - t0
        return latency, {"orders": burst, "seconds": round(took, 2), "orders_per_s": round(burst / took, 1)}
    finally:
        answers.stop.set()
        stop.set()
        serving.join(10)
        gateway.close()
        tape.close()


def _wait(done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("the gateway did not answer every intent in time")
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venue", choices=("binance", "betfair"), default="binance")
    parser.add_argument("--orders", type=int, default=1000, help="paced intents (latency) and adapter calls")
    parser.add_argument("--rate", type=float, default=50.0, help="paced intents per second")
    parser.add_argument("--burst", type=int, default=1000, help="intents appended at once (throughput)")
    parser.add_argument("--binance-limits", action="store_true",
                        help="the local Binance declares Binance's spot limits (100 orders / 10 s), not unlimited")
    args = parser.parse_args()
    sys.setswitchinterval(0.0005)  # as `ticktape gateway` does (robots.live.cli._live_process)
    root = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    with local_venue(args.venue, args.binance_limits) as (settings, env):
        os.environ.update(env)
        report("venue_adapter_place", venue=args.venue, machine=machine(), **adapter(args.venue, settings, args.orders))
        tape_dir = Path(tempfile.mkdtemp(prefix="bench-venue-", dir=root))
        try:
            latency, burst = gateway_run(args.venue, settings, tape_dir, args.orders, args.rate, args.burst)
        finally:
            shutil.rmtree(tape_dir, ignore_errors=True)
        report("venue_gateway_latency", venue=args.venue, rate=args.rate, tape="file (tmpfs)", **latency)
        report("venue_gateway_burst", venue=args.venue, tape="file (tmpfs)", binance_limits=args.binance_limits,
               **burst)


if __name__ == "__main__":
    main()
