"""The backtest API (notebooks, the CLI, sweeps) and replay of recorded runs.

    from robots.backtest import backtest
    res = backtest("ema_cross", tape="file:./tape", topics=["md.sim.trade"], params={"fast": 10, "slow": 50})
    res.summary["pnl"], res.intents, res.fills, res.positions     # dict and pandas frames

A run reads one merged input sequence (`robots.sources`), drives `robots.runner.Runner` with a
simulated venue and the trading controls, and (with `out_tape`) writes under its run id: a
`RunStarted` manifest on topic `runs`, every intent on `orders.intent`, every venue answer or
control rejection on `orders.event`, then `RunFinished` with the summary. The manifest names the
robot, its params, the venue and controls settings and the exact input offsets, so
`replay_steps(tape, run_id)` re-runs it from the tape alone.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from functools import cached_property
from itertools import chain, islice, pairwise
from typing import Any

from robots.api import Intent, Robot, RobotError
from robots.performance import DAY_NS, daily_ratios, daily_returns, too_few_days_note
from robots.registry import get_robot
from robots.runner import ControlsLike, Runner, Step
from robots.sim.base import SimVenue
from robots.sources import FrameSource, ListSource, TapeSource, robot_topics
from robots.venues import default_venue, ledger_for, make_venue, venue_spec
from ticktape import code_version
from ticktape.events import Event, OrderFilled, RunFinished, RunStarted
from ticktape.tape import Tape, TapeLike, open_tape, using_tape
from ticktape.tape.base import Encoded
from ticktape.timeutil import format_time, parse_time

__all__ = ["EVENT_TOPIC", "INTENT_TOPIC", "RUNS_TOPIC", "BacktestResult", "CapturedRun", "append_captured", "backtest",
           "find_run", "replay_steps", "runner_for_run"]

INTENT_TOPIC = "orders.intent"
EVENT_TOPIC = "orders.event"
RUNS_TOPIC = "runs"
_BATCH = 10_000


@dataclass
class BacktestResult:
    """A finished run: the summary dict, the intents and venue answers, positions, the final state."""

    run_id: str
    summary: dict[str, Any]
    intent_events: list[Intent] = field(default_factory=list)
    order_events: list[Event] = field(default_factory=list)
    position_rows: list[dict[str, Any]] = field(default_factory=list)
    state: Any = None
    captured: CapturedRun | None = None

    @cached_property
    def intents(self) -> Any:
        """pandas DataFrame: one row per intent (type + fields)."""
        return _frame(self.intent_events)

    @cached_property
    def events(self) -> Any:
        """pandas DataFrame: one row per venue answer or control rejection."""
        return _frame(self.order_events)

    @cached_property
    def fills(self) -> Any:
        """pandas DataFrame of the fills."""
        return _frame([e for e in self.order_events if type(e) is OrderFilled])

    @cached_property
    def positions(self) -> Any:
        """pandas DataFrame: one row per (robot, instrument) with quantity and PnL."""
        import pandas as pd

        return pd.DataFrame(self.position_rows)


def _frame(events: Sequence[Event]) -> Any:
    import pandas as pd

    if not events:
        return pd.DataFrame()
    rows = [{"type": type(e).__name__, **e._asdict()} for e in events]
    df = pd.DataFrame(rows)
    if "ts_event" in df:
        df["time"] = pd.to_datetime(df["ts_event"], unit="ns", utc=True)
    return df


class _TapeWriter:
    """Buffers the run's output and appends it in batches, keyed by the run id."""

    def __init__(self, tape: Tape, run_id: str) -> None:
        self.tape = tape
        self.run_id = run_id
        self.buf: dict[str, list[Event]] = {INTENT_TOPIC: [], EVENT_TOPIC: []}
        for topic in (INTENT_TOPIC, EVENT_TOPIC, RUNS_TOPIC):
            if tape.partitions(topic) == 0:
                tape.create_topic(topic)

    def add(self, topic: str, event: Event) -> None:
        buf = self.buf[topic]
        buf.append(event)
        if len(buf) >= _BATCH:
            self.flush(topic)

    def flush(self, topic: str | None = None) -> None:
        for t in [topic] if topic else list(self.buf):
            if self.buf[t]:
                self.tape.append(t, self.buf[t], keys=[self.run_id] * len(self.buf[t]))
                self.buf[t] = []

    def write_run(self, event: RunStarted | RunFinished) -> None:
        self.flush()
        self.tape.append(RUNS_TOPIC, [event], keys=[self.run_id])


class CapturedRun:
    """A run's records encoded for a tape instead of written to it, in the order a `_TapeWriter` writes them.

    A sweep's workers capture their runs and hand them to the one process that writes the output
    tape (a file tape partition has one writer). `records` is [(topic, [Encoded, ...]), ...]:
    `RunStarted` first and `RunFinished` last, so a finished run on the tape is a whole one.
    """

    def __init__(self, run_id: str) -> None:
        from ticktape.codec import default_codec

        self.run_id = run_id
        self.codec = default_codec()
        self.buf: dict[str, list[Encoded]] = {INTENT_TOPIC: [], EVENT_TOPIC: []}
        self.records: list[tuple[str, list[Encoded]]] = []

    def add(self, topic: str, event: Event) -> None:
        self.buf[topic].append(Encoded(self.run_id, event.ts_event, self.codec.encode(event)))

    def flush(self, topic: str | None = None) -> None:
        for t in [topic] if topic else list(self.buf):
            if self.buf[t]:
                self.records.append((t, self.buf[t]))
                self.buf[t] = []

    def write_run(self, event: RunStarted | RunFinished) -> None:
        self.flush()
        self.records.append((RUNS_TOPIC, [Encoded(self.run_id, event.ts_event, self.codec.encode(event))]))


def append_captured(tape: Tape, records: Sequence[tuple[str, Sequence[Encoded]]]) -> None:
    """Write a `CapturedRun`'s records to `tape`, in order (creating the output topics if needed)."""
    for topic in (INTENT_TOPIC, EVENT_TOPIC, RUNS_TOPIC):
        if tape.partitions(topic) == 0:
            tape.create_topic(topic)
    for topic, items in records:
        tape.append_encoded(topic, items)


def _ts(value: int | str | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    return parse_time(value)


class _Output(Enum):
    """`backtest(out_tape=...)`'s default: the run goes where the CLI's does."""

    INPUT_TAPE = "the input tape"


INPUT_TAPE = _Output.INPUT_TAPE
"""`out_tape` default: write the run to the tape it reads (nowhere for a DataFrame or event list)."""


def backtest(robot: Robot[Any, Any] | str, *, tape: TapeLike | None = None, topics: Sequence[str] | None = None,
             params: Mapping[str, object] | None = None, start: int | str | None = None,
             end: int | str | None = None, frame: Any = None, frame_kind: str | None = None,
             events: Iterable[Event] | None = None, venue: SimVenue | str | None = None,
             venue_settings: Mapping[str, object] | None = None,
             controls: ControlsLike | Mapping[str, Any] | None = None,
             out_tape: TapeLike | _Output | None = INPUT_TAPE,
             run_id: str | None = None, robot_id: str | None = None,
             end_offsets: Mapping[str, Mapping[int, int]] | None = None, keep: bool = True,
             progress: bool = False, columnar: bool = True, allow_impure: bool = False, sweep_id: str = "",
             capture_for: str | None = None, topics_flag: str = "topics=[...]") -> BacktestResult:
    """Backtest a robot (name, `module:Class` or instance) on a tape, a DataFrame or events.

    `topics` default to the robot's subscriptions (a default topic missing from the tape is replaced by
    the tape's only topic of its kind, `robots.sources.robot_topics`; `topics_flag` is how the error for
    several such topics tells the caller to choose, e.g. `--topics` from the CLI); `start`/`end` are ISO
    times or ns (`end` exclusive); `venue` is a venue object or a name (`crypto`, `betfair`, `naive`) built
    with `venue_settings`; `controls` is a `Controls` object or a `[controls]` table (default: the
    kill switch only); `out_tape` receives the run's manifest, intents and order events: by default
    the input tape, as `ticktape backtest` does, so `ticktape load`/`report`/`replay` find the run
    (`out_tape=None` writes nothing; a DataFrame or event list has no tape to default to). `tape` and
    `out_tape` take a `Tape` or a URI/path string (`ticktape.tape.using_tape`);
    `allow_impure` skips the registry's purity check of the robot's module; `sweep_id` marks the
    run as one point of a sweep (`RunStarted.sweep_id`, and the summary). `capture_for` (an output
    tape URI, instead of `out_tape`) encodes the run's records into `result.captured` for the
    caller to append to that tape later (`append_captured`).
    """
    if capture_for is not None and out_tape is not None and out_tape is not INPUT_TAPE:
        raise RobotError("pass out_tape or capture_for, not both")
    robot_name = robot if isinstance(robot, str) else f"{type(robot).__module__}:{type(robot).__name__}"
    bot = (get_robot(robot, params, robot_id=robot_id, allow_impure=allow_impure) if isinstance(robot, str)
           else robot)
    if params and not isinstance(robot, str):
        raise RobotError("pass params only with a robot name (an instance already has its params)")
    t0, t1 = _ts(start), _ts(end)
    if out_tape is INPUT_TAPE:
        # a sweep's workers capture their runs for the driver to write instead
        out_tape = tape if capture_for is None else None
    with ExitStack() as stack:
        in_tape = stack.enter_context(using_tape(tape)) if tape is not None else None
        out = (in_tape if out_tape is tape or (isinstance(out_tape, str) and in_tape is not None
                                              and out_tape == in_tape.uri)
               else stack.enter_context(using_tape(out_tape)) if out_tape is not None else None)
        return _backtest(bot, robot_name, in_tape, out, t0=t0, t1=t1, topics=topics, frame=frame,
                         frame_kind=frame_kind, events=events, venue=venue, venue_settings=venue_settings,
                         controls=controls, run_id=run_id, end_offsets=end_offsets, keep=keep, progress=progress,
                         columnar=columnar, sweep_id=sweep_id, capture_for=capture_for, topics_flag=topics_flag)


def _backtest(bot: Robot[Any, Any], robot_name: str, in_tape: Tape | None, out: Tape | None, *, t0: int | None,
              t1: int | None, topics: Sequence[str] | None, frame: Any, frame_kind: str | None,
              events: Iterable[Event] | None, venue: SimVenue | str | None,
              venue_settings: Mapping[str, object] | None, controls: ControlsLike | Mapping[str, Any] | None,
              run_id: str | None, end_offsets: Mapping[str, Mapping[int, int]] | None, keep: bool, progress: bool,
              columnar: bool, sweep_id: str, capture_for: str | None, topics_flag: str) -> BacktestResult:
    """`backtest` on tapes already open (the caller closes them)."""
    source: TapeSource | ListSource
    if in_tape is not None:
        # the robot's own topics adapt to the data on the tape; topics the caller named are read as named
        topic_list = tuple(topics) if topics else robot_topics(in_tape, bot, flag=topics_flag)
        source = TapeSource(in_tape, topic_list, start=t0, end=t1, end_offsets=end_offsets, columnar=columnar)
    elif frame is not None:
        source = FrameSource(frame, kind=frame_kind, start=t0, end=t1)
    elif events is not None:
        source = ListSource(events, start=t0, end=t1)
    else:
        raise RobotError("backtest needs a source: tape=, frame= or events=")
    if isinstance(venue, str) or venue is None:
        venue_name = venue or default_venue(bot)
        sim = make_venue(venue_name, venue_settings)
        spec = venue_spec(sim, venue_name, venue_settings or {})
    else:
        sim = venue
        spec = venue_spec(sim)
    if controls is None or isinstance(controls, Mapping):
        from robots.controls import controls_from_config

        controls_json = json.dumps(dict(controls or {}), sort_keys=True, separators=(",", ":"))
        ctl: ControlsLike = _build_controls(controls_from_config, controls or {})
    else:
        ctl = controls
        controls_json = json.dumps({"object": type(controls).__name__})
    rid = run_id or f"{bot.robot_id}-{uuid.uuid4().hex[:12]}"
    writer: _TapeWriter | CapturedRun | None = (_TapeWriter(out, rid) if out is not None
                                                 else CapturedRun(rid) if capture_for is not None else None)
    intents: list[Intent] = []
    answers: list[Event] = []
    sink_i = sink_e = None
    if writer is not None or keep:
        def sink_i(i: Intent) -> None:
            if keep:
                intents.append(i)
            if writer is not None:
                writer.add(INTENT_TOPIC, i)

        def sink_e(e: Event) -> None:
            if keep:
                answers.append(e)
            if writer is not None:
                writer.add(EVENT_TOPIC, e)

    runner = Runner(bot, venue=sim, controls=ctl, ledger=ledger_for(sim), on_intent=sink_i, on_order_event=sink_e,
                    horizon=t1)
    manifest = RunStarted(rid, robot_name, bot.robot_id, 0, time.time_ns(), bot.params.to_json(), source.describe(),
                          tuple(source.topics), t0, t1, source.end_offsets_json(), spec, controls_json, "backtest",
                          code_version(), sweep_id)
    try:
        inputs: Iterable[Event] = source
        if progress:
            from tqdm import tqdm

            inputs = tqdm(source, total=source.count, unit="ev", unit_scale=True, mininterval=0.5, leave=False)
        wall0 = time.perf_counter()
        first_ts: int | None = None
        if writer is not None:
            first_ts = _first_ts(source, t0)
            writer.write_run(manifest._replace(ts_event=first_ts or 0))
        marks: list[tuple[float, float]] = []
        stats = runner.run(timed_segments(inputs, SEGMENT_EVENTS, marks))
        end = (time.perf_counter(), time.process_time())
        wall = end[0] - wall0
        summary = _summary(rid, robot_name, bot, source, t0, t1, stats, runner, wall)
        summary.update(_segment_times(marks, end))
        if sweep_id:
            summary["sweep_id"] = sweep_id
        if writer is not None:
            summary["out"] = out.uri if out is not None else capture_for
            writer.write_run(RunFinished(rid, stats.last_ts or 0, time.time_ns(), stats.events, stats.intents,
                                         stats.intents_sha256, json.dumps(summary, sort_keys=True)))
    finally:
        source_close = getattr(source, "close", None)
        if isinstance(writer, _TapeWriter) and out is in_tape:
            writer.flush()  # what the run wrote before it failed stays on the tape with its manifest
        if source_close is not None and not isinstance(source, TapeSource):
            source_close()
    return BacktestResult(rid, summary, intents, answers, runner.ledger.positions(), runner.state,
                          writer if isinstance(writer, CapturedRun) else None)


SEGMENT_EVENTS = 100_000
"""The run's summary reports the seconds each successive SEGMENT_EVENTS inputs took (`segments_s`)."""


def timed_segments(events: Iterable[Event], size: int, marks: list[tuple[float, float]]) -> Iterator[Event]:
    """`events` unchanged, appending (wall, CPU) clock readings to `marks` as each run of `size` starts.

    The clocks are read once per `size` inputs, by a generator step between two C-level `islice`
    runs: no Python frame per event (the runner's hot loop pulls events from C iterators only). A
    reading is taken when the runner asks for the first input of a run, i.e. once it has finished
    the previous run's last input."""
    it = iter(events)
    return chain.from_iterable(_runs(it, size, marks))


def _runs(it: Iterator[Event], size: int, marks: list[tuple[float, float]]) -> Iterator[Iterable[Event]]:
    for first in it:
        marks.append((time.perf_counter(), time.process_time()))
        yield chain((first,), islice(it, size - 1))


def _segment_times(marks: list[tuple[float, float]], end: tuple[float, float]) -> dict[str, list[float]]:
    """Wall and CPU seconds per segment from the marks `timed_segments` took (the last segment may be short)."""
    points = [*marks, end] if marks else []
    return {"segments_s": [round(b[0] - a[0], 6) for a, b in pairwise(points)],
            "segments_cpu_s": [round(b[1] - a[1], 6) for a, b in pairwise(points)]}


_PRICE_FREE_CONTROLS = frozenset({"kill_switch", "max_order_size", "max_position", "max_orders", "orders_window_ns"})
"""Control settings that never look at a price: with only these, market data need not reach the controls."""


def _build_controls(build: Any, table: Mapping[str, Any]) -> ControlsLike:
    ctl: ControlsLike = build(table)
    # The kill switch, sizes, positions and rates use no prices; skipping the controls' per-event
    # market-data tracking then saves ~25% of a backtest (see BENCHMARKS.md). Controls that
    # declare `needs_market_data` themselves decide for themselves.
    if set(table) <= _PRICE_FREE_CONTROLS and not hasattr(type(ctl), "needs_market_data"):
        ctl.needs_market_data = False  # type: ignore[attr-defined]
    return ctl


def _first_ts(source: TapeSource | ListSource, start: int | None) -> int | None:
    if start is not None:
        return start
    if isinstance(source, ListSource):
        return source.events[0].ts_event if source.events else None
    firsts: list[int] = []
    for topic, parts in source.ranges.items():
        for p, (lo, hi) in parts.items():
            if hi > lo:
                firsts.extend(r.event.ts_event for r in source.tape.read(topic, p, from_offset=lo, limit=1))
    return min(firsts) if firsts else None


def _summary(run_id: str, robot_name: str, bot: Robot[Any, Any], source: TapeSource | ListSource,
             t0: int | None, t1: int | None, stats: Any, runner: Runner[Any], wall: float) -> dict[str, Any]:
    money = runner.ledger.summary()
    out: dict[str, Any] = {
        "run_id": run_id, "robot": robot_name, "robot_id": bot.robot_id, "params": bot.params.to_dict(),
        "source": source.describe(), "topics": list(source.topics),
        "from": format_time(t0) or None, "to": format_time(t1) or None,
        "first_event": format_time(stats.first_ts) or None, "last_event": format_time(stats.last_ts) or None,
        "events": stats.events, "robot_steps": stats.robot_steps, "intents": stats.intents,
        "order_events": stats.order_events, "rejected_by_controls": stats.rejected_by_controls,
        "out_of_order_inputs": stats.out_of_order,
    }
    out.update(money)
    out.update(_ratios(runner.ledger, t0 if t0 is not None else stats.first_ts, stats.last_ts))
    out["wall_time_s"] = round(wall, 6)
    out["events_per_s"] = round(stats.events / wall) if wall > 0 else None
    out["intents_sha256"] = stats.intents_sha256
    return out


def _ratios(ledger: object, start_ts: int | None, end_ts: int | None) -> dict[str, Any]:
    """Daily Sharpe and Sortino of the ledger's equity (robots.performance; the analyzer's run_metrics in SQL)."""
    closes_of = getattr(ledger, "daily_closes", None)
    if start_ts is None or closes_of is None:  # no input, or a venue's own ledger that keeps no daily equity
        note = too_few_days_note(0) if start_ts is None else "the venue's ledger keeps no daily equity"
        return {"sharpe": None, "sortino": None, "days": 0, "sharpe_note": note, "sortino_note": note}
    closes: dict[int, Decimal] = closes_of()
    last = max([end_ts or start_ts] + [(d + 1) * DAY_NS - 1 for d in closes])
    r = daily_ratios(daily_returns(closes, start_ts, last))
    return {"sharpe": r.sharpe, "sortino": r.sortino, "days": r.days, "sharpe_note": r.sharpe_note,
            "sortino_note": r.sortino_note}


# --------------------------------------------------------------------------- replay


def find_run(tape: TapeLike, run_id: str) -> tuple[RunStarted, RunFinished | None]:
    """The manifest (and the end record, if the run finished) of `run_id` on topic `runs` of `tape`
    (a `Tape` or its URI)."""
    with using_tape(tape, existing=True) as t:
        return _find_run(t, run_id)


def _find_run(tape: Tape, run_id: str) -> tuple[RunStarted, RunFinished | None]:
    started: RunStarted | None = None
    finished: RunFinished | None = None
    for p in range(tape.partitions(RUNS_TOPIC)):
        for rec in tape.read(RUNS_TOPIC, p):
            e = rec.event
            if type(e) is RunStarted and e.run_id == run_id:
                started = e
            elif type(e) is RunFinished and e.run_id == run_id:
                finished = e
    if started is None:
        raise RobotError(f"no run {run_id!r} on topic {RUNS_TOPIC!r} of {tape.uri}")
    return started, finished


def runner_for_run(tape: Tape, manifest: RunStarted) -> tuple[Runner[Any], TapeSource]:
    """A fresh runner and the exact input source of a recorded run (robot, params, venue, controls).

    A live run (`mode="live"`) is re-run from its journal (`robots.live.replay`): the runner and
    source returned then have the same replay surface (`run`, `steps`, `on_intent`).
    """
    from robots.controls import controls_from_config

    if manifest.mode == "live":
        from robots.live.replay import runner_for_live_run

        return runner_for_live_run(tape, manifest)  # type: ignore[return-value]

    robot = get_robot(manifest.robot, json.loads(manifest.params), robot_id=manifest.robot_id)
    spec = json.loads(manifest.venue or "{}")
    venue = make_venue(spec.get("name", default_venue(robot)), spec.get("settings", {}))
    ctl_table = json.loads(manifest.controls or "{}")
    if "object" in ctl_table:
        raise RobotError(f"run {manifest.run_id}: its controls were a Python object, not a config; cannot rebuild")
    ends = {t: {int(p): int(o) for p, o in parts.items()} for t, parts in json.loads(manifest.end_offsets).items()}
    source_tape = tape if manifest.source == tape.uri else open_tape(manifest.source)
    source = TapeSource(source_tape, manifest.topics, start=manifest.from_ts, end=manifest.to_ts, end_offsets=ends)
    runner = Runner(robot, venue=venue, controls=_build_controls(controls_from_config, ctl_table),
                    ledger=ledger_for(venue), horizon=manifest.to_ts)
    return runner, source


def replay_steps(tape: TapeLike, run_id: str) -> Iterator[Step]:
    """Re-run a recorded run over its exact inputs, yielding every robot step (state JSON when changed).

    `tape` is a `Tape` or its URI (opened for as long as the steps are being read).
    """
    with using_tape(tape, existing=True) as t:
        manifest, _ = find_run(t, run_id)
        runner, source = runner_for_run(t, manifest)
        yield from runner.steps(source)
