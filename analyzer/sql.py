"""`ticktape sql`: run SQL on an analyzer database, print tables/CSV/JSON, or an interactive shell."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TextIO

import duckdb

from analyzer.metrics import install_metrics
from analyzer.money import money_text

FORMATS = ("table", "csv", "json")


def open_db(path: str, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A connection to an analyzer database with the metric views/macros installed."""
    con = duckdb.connect(path, read_only=read_only)
    if not read_only:
        install_metrics(con)
    return con


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return money_text(value)
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return money_text(value)  # a string: JSON numbers would round exact money to a double
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


def format_rows(columns: Sequence[str], rows: Iterable[Sequence[Any]], fmt: str, out: TextIO) -> None:
    """Write a result as an aligned text table, CSV (with header) or JSON lines (one object per row)."""
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if v is None else _cell(v) for v in row])
        return
    if fmt == "json":
        for row in rows:
            obj = {c: _json_value(v) for c, v in zip(columns, row, strict=True)}
            out.write(json.dumps(obj, allow_nan=True) + "\n")
        return
    text = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in text]) for i, c in enumerate(columns)]
    out.write("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for r in text:
        out.write("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() + "\n")
    out.write(f"({len(text)} row{'s' if len(text) != 1 else ''})\n")


def run_query(con: duckdb.DuckDBPyConnection, query: str, fmt: str, out: TextIO) -> None:
    """Execute one or more statements; print the result of the last one that returns rows."""
    rel = con.execute(query)
    if rel.description is None:
        return
    columns = [d[0] for d in rel.description]
    format_rows(columns, rel.fetchall(), fmt, out)


_HELP = """.tables            list tables and views
.schema TABLE      columns of a table
.format FMT        table, csv or json
.quit              leave (or end of input)
Statements end with ';' and may span lines."""


class DotCommandError(ValueError):
    """A shell dot-command that does not exist or lacks its argument."""


def dot_command(con: duckdb.DuckDBPyConnection, command: str, fmt: str, out: TextIO) -> str:
    """Run one dot-command (`.tables`, `.schema TABLE`, `.format FMT`, `.help`); return the output format
    from now on. The shell and the one-shot `ticktape sql DB ".tables"` both come through here."""
    cmd, _, arg = command.strip().partition(" ")
    arg = arg.strip()
    if cmd == ".help":
        out.write(_HELP + "\n")
    elif cmd == ".tables":
        format_rows(["name", "type"], con.execute(
            "SELECT table_name, table_type FROM information_schema.tables ORDER BY table_name").fetchall(), fmt, out)
    elif cmd == ".schema" and arg:
        rows = con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
                           "ORDER BY ordinal_position", [arg]).fetchall()
        if not rows:
            raise DotCommandError(f"no table or view {arg!r} (see .tables)")
        format_rows(["column", "type"], rows, fmt, out)
    elif cmd == ".format" and arg in FORMATS:
        return arg
    else:
        raise DotCommandError(f"unknown command {command.strip()!r} (try .help)")
    return fmt


def shell(con: duckdb.DuckDBPyConnection, fmt: str, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout,
          err: TextIO = sys.stderr) -> int:
    """A small SQL shell reading statements from `stdin`; returns how many statements failed."""
    interactive = stdin.isatty()
    failures = 0
    buf = io.StringIO()
    while True:
        if interactive:
            out.write("ticktape> " if not buf.getvalue() else "      ...> ")
            out.flush()
        line = stdin.readline()
        if not line:
            break
        stripped = line.strip()
        if not buf.getvalue() and stripped.startswith("."):
            if stripped.split(" ", 1)[0] in (".quit", ".exit"):
                break
            try:
                fmt = dot_command(con, stripped, fmt, out)
            except DotCommandError as exc:
                err.write(f"{exc}\n")
                failures += 1
            continue
        buf.write(line)
        if stripped.endswith(";"):
            try:
                run_query(con, buf.getvalue(), fmt, out)
            except duckdb.Error as exc:
                err.write(f"error: {exc}\n")
                failures += 1
            buf = io.StringIO()
            out.flush()
    if buf.getvalue().strip():
        try:
            run_query(con, buf.getvalue(), fmt, out)
        except duckdb.Error as exc:
            err.write(f"error: {exc}\n")
            failures += 1
    return failures
