"""`ticktape backtest` and `ticktape sweep` (attached to the main CLI by `register`)."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

import click

from robots.api import RobotError, parse_param_args
from robots.performance import PERIODS_PER_YEAR, ratio_text
from ticktape.cli import TIME, tape_uri
from ticktape.config import read_toml
from ticktape.errors import TicktapeError


def _topics(values: tuple[str, ...]) -> list[str] | None:
    out = [t.strip() for v in values for t in v.split(",") if t.strip()]
    return out or None


def _params(path: str | None, pairs: tuple[str, ...]) -> dict[str, object]:
    """Robot params: typed values from a TOML file, then `--param k=v` strings over them."""
    out: dict[str, object] = {}
    if path:
        doc = read_toml(path, "params file")
        table = doc.get("params", doc)
        out.update({k: v for k, v in table.items() if not isinstance(v, dict)})
    out.update(parse_param_args(pairs))
    return out


def _controls(path: str | None, pairs: tuple[str, ...]) -> dict[str, Any]:
    from robots.venues import coerce_setting

    table: dict[str, Any] = {}
    if path:
        table.update(read_toml(path, "controls file").get("controls", {}))
    table.update({k: coerce_setting(v) for k, v in parse_param_args(pairs).items()})
    return table


def _common(f: Any) -> Any:
    options = [
        click.option("--topics", multiple=True, help="Input topics, in tie-break order (default: the robot's)."),
        click.option("--from", "start", type=TIME, default=None,
                     help="First event time (ISO 8601, UTC if naive, or ns)."),
        click.option("--to", "end", type=TIME, default=None, help="End time, exclusive (ISO 8601 or ns)."),
        click.option("--param", "params", multiple=True, help="Robot parameter k=v (repeatable)."),
        click.option("--params", "params_file", default=None,
                     help="TOML file of robot parameters (a [params] table, or top-level keys); --param wins."),
        click.option("--allow-impure", is_flag=True, help="Skip the purity check of a module:Class robot."),
        click.option("--venue", default=None, help="Simulated venue: crypto, betfair or naive (default: the robot's)."),
        click.option("--venue-param", "venue_params", multiple=True, help="Venue setting k=v (repeatable)."),
        click.option("--controls", "controls_file", default=None, help="TOML file with a [controls] table."),
        click.option("--control", "control_pairs", multiple=True, help="Control setting k=v (repeatable)."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc)) from exc


def _human(summary: dict[str, Any]) -> str:
    lines = [
        f"run {summary['run_id']}: {summary['robot']} on {summary['source']} {','.join(summary['topics'])}",
        f"  events processed  {summary['events']:,}  ({summary['first_event']} .. {summary['last_event']})",
        f"  intents           {summary['intents']:,}  (rejected by controls: {summary['rejected_by_controls']})",
        f"  fills             {summary['fills']:,}",
        f"  PnL               {summary['pnl_exact']}  (after fees)",
        f"  fees              {summary['fees_exact']}",
        f"  max drawdown      {summary['max_drawdown_exact']}  (equity at every fill and mark)",
        f"  Sharpe            {ratio_text(summary.get('sharpe'), summary.get('sharpe_note'))}"
        f"  (daily, x sqrt({PERIODS_PER_YEAR}))",
        f"  Sortino           {ratio_text(summary.get('sortino'), summary.get('sortino_note'))}"
        f"  (daily, x sqrt({PERIODS_PER_YEAR}))",
        f"  wall time         {summary['wall_time_s']:.3f} s  ({summary['events_per_s'] or 0:,} events/s)",
        f"  intents_sha256    {summary['intents_sha256']}",
    ]
    if summary.get("out"):
        lines.append(f"  written to        {summary['out']} (topics orders.intent, orders.event, runs;"
                     f" key {summary['run_id']})")
    return "\n".join(lines)


@click.command()
@click.argument("robot")
@_common
@click.option("--out", "out", default=None, help="Output tape URI for the run (default: the input tape).")
@click.option("--no-out", is_flag=True, help="Do not write the run to any tape.")
@click.option("--run-id", default=None, help="Run id (default: ROBOT_ID-<random>).")
@click.option("--robot-id", default=None, help="Robot id carried by the intents (default: the robot's name).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.pass_context
def backtest(ctx: click.Context, robot: str, topics: tuple[str, ...], start: int | None,
             end: int | None, params: tuple[str, ...], params_file: str | None, allow_impure: bool,
             venue: str | None, venue_params: tuple[str, ...],
             controls_file: str | None, control_pairs: tuple[str, ...], as_json: bool, out: str | None,
             no_out: bool, run_id: str | None, robot_id: str | None, progress: bool | None) -> None:
    """Backtest ROBOT (a built-in name or module:Class) on a tape and print the summary."""
    from robots.backtest import backtest as run_backtest

    uri = tape_uri(ctx)
    try:
        res = run_backtest(robot, tape=uri, topics=_topics(topics), params=_params(params_file, params), start=start,
                           end=end, venue=venue, venue_settings=parse_param_args(venue_params),
                           controls=_controls(controls_file, control_pairs), out_tape=None if no_out else (out or uri),
                           run_id=run_id, robot_id=robot_id, keep=False, allow_impure=allow_impure,
                           progress=sys.stderr.isatty() if progress is None else progress,
                           topics_flag="--topics")
    except (TicktapeError, RobotError, ValueError, OSError) as exc:
        _fail(exc)
        return
    click.echo(json.dumps(res.summary, sort_keys=True) if as_json else _human(res.summary))


@click.command()
@click.argument("robot")
@_common
@click.option("--grid", "grids", multiple=True, required=True, help="Parameter values k=v1,v2,... (repeatable).")
@click.option("--search", default="grid", show_default=True,
              help="grid (every point), random:N (N distinct grid points drawn with --seed) or optuna:N (N trials "
                   "of Optuna's TPE over the grid's values, seeded by --seed, maximising --objective; "
                   "ticktape[optuna] extra).")
@click.option("--seed", default=0, show_default=True, help="Seed of --search random:N and optuna:N.")
@click.option("--train", "train", default=None, metavar="FROM..TO",
              help="Walk-forward: search on this window only, then run the best --top sets on --test.")
@click.option("--test", "test", default=None, metavar="FROM..TO",
              help="Walk-forward: the window (after or before --train, never overlapping) the best sets are scored on.")
@click.option("--top", default=1, show_default=True, help="Walk-forward: how many of the best sets to test.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: worker processes here; ray: one Ray task per run (ticktape[ray] extra).")
@click.option("--address", default=None, help="Ray cluster HOST:PORT (default: $RAY_ADDRESS, else a local Ray).")
@click.option("--workers", default=1, show_default=True, help="Worker processes (--engine local).")
@click.option("--sweep-id", default=None, help="Sweep id; again on the same output tape, runs only what is missing.")
@click.option("--out", "out", default=None, help="Output tape URI for the runs (default: the input tape).")
@click.option("--no-out", is_flag=True, help="Do not write the runs to any tape.")
@click.option("--objective", "--sort", "sort_by", default="pnl", show_default=True,
              help="Summary field to rank by and to search for: pnl, sharpe, sortino, max_drawdown, ...")
@click.option("--ascending", is_flag=True, help="Lower is better (default: higher is better).")
@click.option("--save", "save", default=None, help="Also write the results as JSON to this file.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr: runs, runs/s, best --sort value (default: when stderr is a terminal).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the runs as one JSON array (one summary object per run, sorted); nothing else on stdout.")
@click.pass_context
def sweep(ctx: click.Context, robot: str, topics: tuple[str, ...], start: int | None,
          end: int | None, params: tuple[str, ...], params_file: str | None, allow_impure: bool,
          venue: str | None, venue_params: tuple[str, ...],
          controls_file: str | None, control_pairs: tuple[str, ...], as_json: bool, grids: tuple[str, ...],
          search: str, seed: int, train: str | None, test: str | None, top: int, engine: str,
          address: str | None, workers: int, sweep_id: str | None,
          out: str | None, no_out: bool, sort_by: str, ascending: bool, save: str | None,
          progress: bool | None) -> None:
    """Backtest ROBOT over a parameter grid (locally or on Ray); every run goes to the output tape
    under one sweep id; print a sorted table (or JSON)."""
    from robots.sweep import format_table, new_sweep_id, parse_grid
    from robots.sweep import sweep as run_sweep
    from robots.sweep_walk import parse_window, walk_forward

    uri = tape_uri(ctx)
    sid = sweep_id or new_sweep_id(robot)
    out_uri = None if no_out else (out or uri)
    walk: dict[str, Any] | None = None
    try:
        grid = parse_grid(grids)
        if (train is None) != (test is None):
            raise RobotError("walk-forward needs both --train FROM..TO and --test FROM..TO")
        kwargs: dict[str, Any] = dict(
            fixed=_params(params_file, params), workers=workers, sort_by=sort_by, descending=not ascending,
            progress=sys.stderr.isatty() if progress is None else progress, engine=engine, address=address,
            sweep_id=sid, out_tape=out_uri, search=search, seed=seed, tape=uri, topics=_topics(topics),
            venue=venue, venue_settings=parse_param_args(venue_params),
            controls=_controls(controls_file, control_pairs), allow_impure=allow_impure, topics_flag="--topics")
        # Whatever prints while the sweep runs (Ray's notes on a lost worker, a chatty robot) goes to
        # stderr: stdout carries the table or the --json document only.
        with contextlib.redirect_stdout(sys.stderr):
            if train is not None and test is not None:
                if start is not None or end is not None:
                    raise RobotError("--start/--end and --train/--test both set the window: give one or the other")
                walk = walk_forward(robot, grid, train=parse_window(train, "--train"),
                                    test=parse_window(test, "--test"), top=top, **kwargs)
                rows = walk["train"]
            else:
                rows = run_sweep(robot, grid, start=start, end=end, **kwargs)
    except (TicktapeError, RobotError, ValueError, OSError) as exc:
        _fail(exc)
        return
    text = json.dumps(walk if walk is not None else rows, sort_keys=True)
    if save:
        with open(save, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    if as_json:
        click.echo(text)
        return
    click.echo(format_table(rows, list(grid)))
    where = f"written to {out_uri} (topic runs)" if out_uri else "not written to a tape"
    click.echo(f"sweep {sid}: {len(rows)} runs, {where}")
    if walk is not None:
        click.echo(f"\nscored on --test {test} (sweep {sid}.test): the best {len(walk['test'])} by {sort_by} "
                   "on --train, on data they were not chosen on")
        click.echo(format_table(walk["test"], list(grid)))
        for r in walk["test"]:
            click.echo(f"  {json.dumps({n: r['params'].get(n) for n in grid})}: train {sort_by} "
                       f"{r.get(f'train_{sort_by}')}, test {sort_by} {r.get(sort_by, r['params'].get(sort_by))}")


def register(cli: click.Group) -> None:
    """Attach `backtest` and `sweep` to the CLI."""
    cli.add_command(backtest)
    cli.add_command(sweep)
