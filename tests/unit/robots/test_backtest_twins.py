"""A backtest reading Parquet copies gives the same run whichever twin builds the events.

`ticktape._rows` (C, from the Arrow buffers) and the Python lists path must feed the runner the
same events: the same intents (and `intents_sha256`), order events, ledger summary, positions
and stats, on a tape with several instruments, inputs out of time order, sealed segments (their
Parquet copies) and the growing last one, with orders the controls reject and ones they pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from robots.backtest import backtest
from ticktape.events import Trade
from ticktape.tape import arrow_rows, open_tape

TOPIC = "md.sim.trade"
TIMINGS = ("wall_time_s", "events_per_s", "segments_s", "segments_cpu_s")  # clock readings differ run to run
T0 = 1_700_000_000_000_000_000


def trades(n: int) -> list[Trade]:
    out = []
    price = {"BTCUSDT": 30_000.0, "ETHUSDT": 2_000.0}
    for k in range(n):
        inst = "BTCUSDT" if k % 3 else "ETHUSDT"
        price[inst] = round(price[inst] + ((k * 7919) % 13 - 6) * 0.25, 2)
        ts = T0 + k * 100_000_000 - (250_000_000 if k % 97 == 5 else 0)  # now and then one out of order
        out.append(Trade("sim", inst, ts, ts, price[inst], 0.001 * (1 + k % 5), "SELL" if k % 2 else "BUY", str(k),
                         None, None, k % 4 == 0))
    return out


def run(uri: str, controls: dict[str, Any]) -> tuple[Any, ...]:
    res = backtest("ema_cross", tape=uri, topics=[TOPIC], params={"fast": 3, "slow": 8, "topic": TOPIC},
                   venue="naive", controls=controls, out_tape=None, keep=True, run_id="twin")
    summary = {k: v for k, v in res.summary.items() if k not in TIMINGS}
    return res.intent_events, res.order_events, summary, res.position_rows


@pytest.mark.skipif(arrow_rows.ROWS is None, reason="the C builder is not built (or TICKTAPE_NO_CEXT=1)")
@pytest.mark.parametrize("controls", [{}, {"max_position": 0.0025, "max_orders": 40, "orders_window_ns": 10**10}])
def test_the_c_and_python_readers_give_the_same_backtest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         controls: dict[str, Any]) -> None:
    uri = f"file:{tmp_path / 'tape'}?segment_bytes=200000"
    tape = open_tape(uri)
    events = trades(12_000)
    for k in range(0, len(events), 1_000):  # segments roll between appends
        tape.append(TOPIC, events[k:k + 1_000])
    tape.close()
    first = run(uri, controls)  # writes the Parquet copies of the sealed segments, then reads them
    fast = run(uri, controls)
    assert list((tmp_path / "tape" / TOPIC / "0").glob("*.parquet")), "no sealed segment was read from Parquet"
    monkeypatch.setattr(arrow_rows, "ROWS", None)
    slow = run(uri, controls)
    assert fast == slow == first
    summary = fast[2]
    assert summary["intents"] > 100 and summary["out_of_order_inputs"] > 0
    if controls:
        assert summary["rejected_by_controls"] > 0


class _Silent:
    """A control of a class the view does not know: the view then folds orders and fills."""

    name = "silent"

    def check(self, intent: Any, view: Any) -> str | None:
        return None


def test_controls_that_read_no_order_state_decide_the_same_without_the_order_fold() -> None:
    from robots.controls import Controls, KillSwitch, MaxOrderSize
    from ticktape.events import Control

    events: list[Any] = trades(6_000)
    stop, go = events[2_000].ts_event, events[3_500].ts_event
    events += [Control("*", stop, stop, "PAUSE", None, None, "test", "ops"),
               Control("*", go, go, "RESUME", None, None, "test", "ops")]
    runs = []
    for extra in ((), (_Silent(),)):
        controls = Controls([KillSwitch(), MaxOrderSize(limit=0.004), *extra])
        assert controls.tracks_orders == bool(extra)
        res = backtest("ema_cross", events=events, params={"fast": 3, "slow": 8, "topic": TOPIC, "size": 0.003},
                       venue="naive", controls=controls, out_tape=None, keep=True, run_id="twin")
        summary = {k: v for k, v in res.summary.items() if k not in TIMINGS}
        runs.append((res.intent_events, res.order_events, summary, res.position_rows))
    assert runs[0] == runs[1]
    assert runs[0][2]["rejected_by_controls"] > 0 and runs[0][2]["fills"] > 100
