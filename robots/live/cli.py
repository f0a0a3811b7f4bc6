"""`ticktape run`, `ticktape gateway`, `ticktape control`, `ticktape runs` (attached by `register`)."""

from __future__ import annotations

import gc
import getpass
import json
import signal
import socket
import sys
import threading
import time
from typing import Any

import click

from robots.api import parse_param_args
from robots.cli import _controls, _params, _topics
from ticktape.cli import tape_uri
from ticktape.events import Control
from ticktape.timeutil import format_time

COMMANDS = ("pause", "resume", "flatten", "kill")


def _live_process() -> None:
    """Tune the interpreter for latency.

    Threads of a live process hand over work (follower -> loop -> gateway): switch between them
    every 0.5 ms instead of Python's default 5 ms, or each hand-over can wait that long for the GIL.
    The objects made at start-up (modules, schemas, codecs) are moved out of the collector's way
    (`gc.freeze`), and full collections come less often: a full pass over a live process's heap
    stalled the loop for tens of milliseconds.
    """
    sys.setswitchinterval(0.0005)
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _stop_on_signals(stop: threading.Event) -> dict[int, str]:
    """SIGINT / SIGTERM set `stop`; returns which signal came (filled in when it does)."""
    seen: dict[int, str] = {}

    def handler(signum: int, _frame: Any) -> None:
        seen[signum] = signal.Signals(signum).name
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return seen


def _guarded(target: Any, own_stop: threading.Event, run_stop: threading.Event,
             failures: list[BaseException]) -> None:
    """Run a thread's loop; if it fails, record why and stop the run (an inline gateway must not die silently)."""
    try:
        target(own_stop)
    except BaseException as exc:
        failures.append(exc)
        run_stop.set()


@click.command()
@click.argument("robot")
@click.option("--param", "params", multiple=True, help="Robot parameter k=v (repeatable).")
@click.option("--params", "params_file", default=None, help="TOML file of robot parameters.")
@click.option("--topics", "topics", multiple=True,
              help="Input topics, comma-separated or repeated (default: the robot's; a default topic missing from "
                   "the tape becomes its only topic of the kind, e.g. md.*.trade; a restart keeps the first start's).")
@click.option("--controls", "controls_file", default=None, help="TOML file with a [controls] table.")
@click.option("--control", "control_pairs", multiple=True, help="Control setting k=v (repeatable).")
@click.option("--venue", default="paper", show_default=True, help="Execution venue (paper: the simulator).")
@click.option("--venue-param", "venue_params", multiple=True,
              help="Inline gateway's venue setting k=v, e.g. crypto.taker_fee=0.001 (repeatable).")
@click.option("--gateway", "gateway_mode", type=click.Choice(["inline", "external"]), default="inline",
              show_default=True, help="inline: the paper gateway runs in this process; external: `ticktape "
                                      "gateway` serves the run.")
@click.option("--run-id", default=None, help="Run id (reuse it to restart a run; default: ROBOT_ID-live-<time>).")
@click.option("--robot-id", default=None, help="Robot id carried by the intents (default: the robot's name).")
@click.option("--from-start", is_flag=True, help="First start only: read the input topics from their beginning "
                                                 "(default: only what arrives from now on).")
@click.option("--snapshot-every", default=10_000, show_default=True, help="Snapshot every N inputs...")
@click.option("--snapshot-seconds", default=30.0, show_default=True, help="...or every S seconds.")
@click.option("--snapshots", "snapshots_uri", default=None,
              help="Snapshot store: a tape URI, or mongodb://host:port/db (default: the run's tape). While a "
                   "MongoDB server is down, snapshots are skipped with a warning and the run goes on; a start "
                   "waits up to 30 s for it to answer, then fails.")
@click.option("--keep-orders", is_flag=True, help="On stop, leave the open orders (default: cancel them).")
@click.option("--dead-after", default=5.0, show_default=True, help="Inline gateway: watchdog timeout, s.")
@click.option("--allow-impure", is_flag=True, help="Skip the purity check of a module:Class robot.")
@click.pass_context
def run(ctx: click.Context, robot: str, params: tuple[str, ...], params_file: str | None, topics: tuple[str, ...],
        controls_file: str | None, control_pairs: tuple[str, ...], venue: str, venue_params: tuple[str, ...],
        gateway_mode: str, run_id: str | None,
        robot_id: str | None, from_start: bool, snapshot_every: int, snapshot_seconds: float,
        snapshots_uri: str | None, keep_orders: bool, dead_after: float, allow_impure: bool) -> None:
    """Run ROBOT live on its topics until SIGINT/SIGTERM; restart with the same --run-id to resume."""
    from robots.live.gateway import Gateway
    from robots.live.runner import LiveRunner
    from robots.live.snapshots import open_snapshot_store
    from ticktape.tape import open_tape

    uri = tape_uri(ctx)
    _live_process()
    stop = threading.Event()
    seen = _stop_on_signals(stop)
    store = open_snapshot_store(snapshots_uri, open_tape(uri)) if snapshots_uri else None
    runner = LiveRunner(robot, tape=uri, run_id=run_id, params=_params(params_file, params), robot_id=robot_id,
                        controls=_controls(controls_file, control_pairs), venue=venue, gateway=gateway_mode,
                        store=store, snapshot_every=snapshot_every, snapshot_seconds=snapshot_seconds,
                        allow_impure=allow_impure, topics=_topics(topics))
    gateway: Gateway | None = None
    gateway_stop = threading.Event()
    failures: list[BaseException] = []
    threads: list[threading.Thread] = []
    try:
        runner.start(from_start=from_start)
        if gateway_mode == "inline":
            gateway = Gateway(uri, venue=venue, topics=runner.topics, dead_after=dead_after, only_run=runner.run_id,
                              venue_settings=parse_param_args(venue_params))
            gateway.start()
            threads.append(threading.Thread(target=_guarded, args=(gateway.run, gateway_stop, stop, failures),
                                            name="gateway", daemon=True))
            threads[-1].start()
        how = (f"restarted at input #{runner.fold.seq} ({runner.loop.replayed} journaled inputs replayed after "
               f"its snapshot)" if runner.restarted else "started")
        click.echo(f"run {runner.run_id}: {robot} live on {uri} ({', '.join(runner.topics)}); {how}", err=True)
        runner.run(stop)
        if failures:
            raise failures[0]
        reason = f"signal {', '.join(seen.values())}" if seen else "stop requested"
        runner.stop(keep_orders=keep_orders, reason=reason)
        if gateway is not None:  # let the inline gateway answer the stop's cancels before it goes
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline and not gateway.caught_up():
                time.sleep(0.01)
        left = len(runner.fold.run.open)
        what = (f"{left} open orders kept" if keep_orders else
                f"{runner.cancelled} open orders cancelled" + (f", {left} not confirmed" if left else ""))
        click.echo(f"run {runner.run_id}: stopped after {runner.fold.seq} inputs; {what}", err=True)
    finally:
        stop.set()
        gateway_stop.set()
        for t in threads:
            t.join(timeout=5)
        if gateway is not None:
            gateway.close()
        runner.close()


@click.command()
@click.option("--venue", default="paper", show_default=True,
              help="Venue to send to: paper (the simulator), binance, betfair (real orders).")
@click.option("--venue-param", "venue_params", multiple=True,
              help="Venue setting k=v, e.g. crypto.taker_fee=0.001 or market=futures (repeatable).")
@click.option("--topics", "topics", multiple=True, help="Market topics the paper venue matches against and the "
                                                        "runs' controls read (default: those of the live runs "
                                                        "known now).")
@click.option("--dead-after", default=5.0, show_default=True, help="Cancel a run's orders when its heartbeat "
                                                                   "is this old, s.")
@click.option("--credentials", "credentials_file", default=None,
              help="TOML file with the venue's credentials, outside any git repository (default: environment).")
@click.option("--testnet", is_flag=True, help="Binance: the spot / futures test network.")
@click.option("--poll-seconds", default=5.0, show_default=True,
              help="Real venues: ask for the open orders this often (fills still arrive if the stream is silent).")
@click.option("--no-position-check", is_flag=True,
              help="Real venues: start even if the venue's positions (spot: holdings) differ from the fills "
                   "on the tape, or it has orders of the tape's runs the tape never sent.")
@click.pass_context
def gateway(ctx: click.Context, venue: str, venue_params: tuple[str, ...], topics: tuple[str, ...],
            dead_after: float, credentials_file: str | None, testnet: bool, poll_seconds: float,
            no_position_check: bool) -> None:
    """Serve the live runs' intents on VENUE until SIGINT/SIGTERM; restart it any time."""
    from robots.live.gateway import Gateway, paper_topics

    uri = tape_uri(ctx)
    _live_process()
    stop = threading.Event()
    _stop_on_signals(stop)
    settings: dict[str, object] = dict(parse_param_args(venue_params))
    if testnet:
        settings["testnet"] = True
    market = _topics(topics) or paper_topics(uri, venue)
    gw = Gateway(uri, venue=venue, topics=market, dead_after=dead_after, venue_settings=settings,
                 credentials_file=credentials_file, poll_seconds=poll_seconds,
                 check_positions=not no_position_check)
    try:
        gw.start()
        click.echo(f"gateway {gw.loop.stream}: serving live runs on {uri} (market: {', '.join(market) or 'none'})",
                   err=True)
        gw.run(stop)
        click.echo(f"gateway {gw.loop.stream}: stopped after {gw.fold.seq} inputs", err=True)
    finally:
        gw.close()


@click.command()
@click.argument("command", type=click.Choice(COMMANDS))
@click.argument("run_id")
@click.option("--reason", default="", help="Why (kept on the tape).")
@click.pass_context
def control(ctx: click.Context, command: str, run_id: str, reason: str) -> None:
    """Send COMMAND (pause, resume, flatten, kill) to a live run (RUN_ID, or * for every run)."""
    from robots.live.status import live_runs
    from robots.live.topics import CONTROLS_TOPIC
    from ticktape.tape import open_tape

    uri = tape_uri(ctx)
    t = open_tape(uri)
    try:
        if run_id != "*" and run_id not in {r["run_id"] for r in live_runs(t)}:
            raise click.ClickException(f"no live run {run_id!r} on {uri} (see `ticktape runs`)")
        if t.partitions(CONTROLS_TOPIC) == 0:
            t.create_topic(CONTROLS_TOPIC)
        now = time.time_ns()
        who = f"{getpass.getuser()}@{socket.gethostname()}"
        event = Control(run_id, now, now, command.upper(), None, None, reason, who)  # type: ignore[arg-type]
        pos = t.append(CONTROLS_TOPIC, [event], keys=[run_id])
        click.echo(f"{command.upper()} {run_id}: appended to {CONTROLS_TOPIC} offset {pos[0].offset}")
    finally:
        t.close()


@click.command()
@click.option("--dead-after", default=5.0, show_default=True, help="A running run with an older heartbeat is dead.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run.")
@click.pass_context
def runs(ctx: click.Context, dead_after: float, as_json: bool) -> None:
    """List live runs: state (running, stopped, dead), last input time, open orders."""
    from robots.live.status import live_runs
    from ticktape.tape import open_tape

    t = open_tape(tape_uri(ctx))
    try:
        rows = live_runs(t, dead_after=dead_after)
    finally:
        t.close()
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, sort_keys=True))
        return
    if not rows:
        click.echo("no live runs")
        return
    click.echo(f"{'RUN':32} {'ROBOT':22} {'STATE':8} {'INPUTS':>9} {'OPEN':>5}  LAST INPUT")
    for row in rows:
        click.echo(f"{row['run_id']:32} {row['robot']:22} {row['state']:8} {row['inputs']:>9} "
                   f"{row['open_orders']:>5}  {format_time(row['last_input_ts']) or '-'}")


def register(cli: click.Group) -> None:
    """Attach the live commands."""
    for command in (run, gateway, control, runs):
        cli.add_command(command)

