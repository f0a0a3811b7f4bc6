"""The analyzer's subcommands: `load`, `sql`, `replay`, `audit`, `report` (attached by `register`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

import click

from ticktape.cli import TIME, tape_uri

T = TypeVar("T")


def open_database(open_fn: Callable[[str], T], db: str, *, existing: bool = True) -> T:
    """Open an analyzer database, turning DuckDB's errors (file locked by another process, not a
    database) into a one-line CLI error. `existing`: a database file that is not there is an error
    (DuckDB would create an empty one, and a mistyped path would read as empty), except for `load`.
    """
    import duckdb

    if existing and db != ":memory:" and not os.path.exists(db):
        raise click.ClickException(f"no database {db}: create it with `ticktape load --tape ... --db {db}`")

    try:
        return open_fn(db)
    except duckdb.Error as exc:
        raise click.ClickException(f"cannot open database {db}: {exc}") from exc


@click.command("load")
@click.option("--db", required=True, help="DuckDB file to load into (created if missing).")
@click.option("--topics", multiple=True, help="Topics to load (repeat or comma-separate; default: all).")
@click.option("--from", "from_time", type=TIME, default=None,
              help="First load of a partition starts here (ISO or ns).")
@click.option("--to", "to_time", type=TIME, default=None,
              help="Stop each partition before ts_event > this (ISO or ns).")
@click.option("--skip-bad", is_flag=True, help="List undecodable records in load_errors and load the rest.")
@click.option("--batch-rows", type=click.IntRange(min=1), default=500_000, show_default=True,
              help="Rows per transaction.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@click.pass_context
def load_cmd(ctx: click.Context, db: str, topics: tuple[str, ...], from_time: int | None,
             to_time: int | None, skip_bad: bool, batch_rows: int, progress: bool | None) -> None:
    """Load the tape into DuckDB: one table per event type, incremental and atomic per batch."""
    from analyzer.load import connect, load
    from analyzer.metrics import install_metrics
    from ticktape.tape import open_existing_tape

    names = [t for group in topics for t in group.split(",") if t]
    tape = open_existing_tape(tape_uri(ctx))
    con = open_database(connect, db, existing=False)
    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm import tqdm

        ends = sum(sum(tape.end_offsets(t).values()) for t in (names or [i.name for i in tape.topics()]))
        bar = tqdm(total=ends, unit="ev", unit_scale=True, file=sys.stderr, leave=False)
    try:
        summary = load(tape, con, topics=names or None,
                       from_ns=from_time, to_ns=to_time, skip_bad=skip_bad, batch_rows=batch_rows,
                       on_progress=bar.update if bar is not None else None)
        install_metrics(con)  # so any DuckDB client opening the file finds the metric views too
    finally:
        if bar is not None:
            bar.close()
        con.close()
        tape.close()
    click.echo(summary.line())


@click.command("sql")
@click.argument("db")
@click.argument("query", required=False)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
              help="table, csv, or json (one object per line).")
def sql_cmd(db: str, query: str | None, fmt: str) -> None:
    """Run QUERY on the analyzer database DB, or read statements from stdin (a SQL shell).

    QUERY may also be one of the shell's dot-commands: ".tables", ".schema TABLE".

    The metric views and macros (fills, positions, pnl_summary, equity_curve, ...) are there.
    """
    import duckdb

    from analyzer.sql import DotCommandError, dot_command, open_db, run_query, shell

    con = open_database(open_db, db)
    try:
        if query is not None:
            try:
                if query.strip().startswith("."):  # the shell's .tables / .schema T, one-shot
                    dot_command(con, query, fmt, sys.stdout)
                else:
                    run_query(con, query, fmt, sys.stdout)
            except (duckdb.Error, DotCommandError) as exc:
                raise click.ClickException(str(exc)) from exc
            return
        failures = shell(con, fmt)
    finally:
        con.close()
    if failures:
        sys.exit(1)


@click.command("replay")
@click.argument("robot", required=False)
@click.option("--run", "run_id", required=True, help="Run id (its RunStarted manifest is on topic `runs`).")
@click.option("--db", required=True, help="DuckDB file to write robot_state and replay_intents into.")
@click.option("--every", default=0, show_default=True,
              help="Store the state every N steps and at each intent instead of at every change (0: every change).")
@click.option("--param", "params", multiple=True,
              help="Robot parameter k=v over the run's own (repeatable; as in backtest).")
@click.pass_context
def replay_cmd(ctx: click.Context, robot: str | None, run_id: str, db: str, every: int,
               params: tuple[str, ...]) -> None:
    """Re-run a recorded run over its exact inputs; store the robot's state per step and its intents.

    ROBOT defaults to the run's own robot; another name (or module:Class) replays that robot over
    the same inputs, with the run's params it has; --param k=v overrides any of them.
    """
    from analyzer.load import connect
    from analyzer.replay import replay
    from robots.api import parse_param_args
    from ticktape.tape import open_existing_tape

    tape = open_existing_tape(tape_uri(ctx))
    con = open_database(connect, db, existing=False)  # it writes robot_state there
    try:
        summary = replay(tape, run_id, con, robot=robot, every=every, params=parse_param_args(params))
    finally:
        con.close()
        tape.close()
    click.echo(summary.line())


@click.command("audit")
@click.option("--run", "run_id", required=True, help="Run id to audit.")
@click.option("--robot", default=None, help="Audit another robot (name or module:Class) against the run.")
@click.pass_context
def audit_cmd(ctx: click.Context, run_id: str, robot: str | None) -> None:
    """Recompute a run's intents from its recorded inputs and compare them byte for byte with the recorded ones.

    Exit 0 with a one-line summary when identical; exit 1 with the first divergence (input
    position, expected and actual intent, the robot's state just before); exit 2 when the run
    cannot be rebuilt (no such run, unknown robot).
    """
    from analyzer.audit import audit
    from ticktape.tape import open_existing_tape

    tape = open_existing_tape(tape_uri(ctx))
    try:
        result = audit(tape, run_id, robot=robot)
    finally:
        tape.close()
    click.echo(result.line())
    if not result.identical:
        sys.exit(1)


def register(cli: click.Group) -> None:
    """Attach the analyzer's commands to the `ticktape` CLI."""
    from analyzer.report import report_cmd

    for command in (load_cmd, sql_cmd, replay_cmd, audit_cmd, report_cmd):
        cli.add_command(command)
