"""`ticktape`: one CLI for every backend. Subcommands from other packages register here."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

import click

from ticktape.codec import default_codec, to_python
from ticktape.config import DEFAULT_TAPE, load_settings
from ticktape.errors import TicktapeError, ValidationError
from ticktape.events import Event
from ticktape.logs import setup_logging
from ticktape.tape import Tape, open_existing_tape, open_tape
from ticktape.tape.base import Record
from ticktape.timeutil import format_time, parse_time


class Context:
    """What every subcommand gets: settings and a lazily opened tape."""

    def __init__(self, tape_uri: str) -> None:
        self.tape_uri = tape_uri
        self._tape: Tape | None = None

    def tape(self, *, existing: bool = False) -> Tape:
        """The global `--tape`, opened once. `existing`: for commands that only read it, a file
        tape that is not there is an error rather than a new empty tape."""
        if self._tape is None:
            self._tape = open_existing_tape(self.tape_uri) if existing else open_tape(self.tape_uri)
        return self._tape

    def close(self) -> None:
        if self._tape is not None:
            self._tape.close()


pass_ctx = click.make_pass_decorator(Context)


def tape_uri(ctx: click.Context) -> str:
    """The tape URI a command runs on: its own `--tape`, else the group's, else settings (default `file:./tape`)."""
    obj = ctx.find_object(Context)
    return obj.tape_uri if obj is not None else DEFAULT_TAPE


TAPE_HELP = "Tape URI: file:PATH (default file:./tape) or kafka://HOST:PORT."


def _set_tape(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """`--tape` given after a subcommand overrides the group's: the last, most specific flag wins."""
    if value is not None:
        obj = ctx.find_object(Context)
        if obj is not None:
            obj.tape_uri = value


def accept_tape_option(command: click.Command) -> None:
    """Give `command` (and, for a group, every command under it) the `--tape URI` option.

    One option object shape for every command, added where the group resolves the command, so a
    plugin's commands take `--tape` after their name as ticktape's own do (`ticktape put X --tape U`).
    A command that declares its own `--tape` keeps it.
    """
    if not any(isinstance(p, click.Option) and "--tape" in p.opts for p in command.params):
        command.params.append(click.Option(["--tape"], default=None, expose_value=False, is_eager=False,
                                           callback=_set_tape, help=TAPE_HELP))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            accept_tape_option(sub)


class TicktapeGroup(click.Group):
    """The root group: every subcommand it resolves accepts `--tape` (see `accept_tape_option`), and
    ticktape's own command plugins are loaded when a command of theirs is asked for (`_load_builtin`)."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        # every path to a subcommand (running it, its --help) comes through here
        command = super().get_command(ctx, cmd_name)
        if command is None:
            _load_builtins_for(cmd_name)
            command = super().get_command(ctx, cmd_name)
        if command is not None:
            accept_tape_option(command)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        _load_builtins_for(None)  # listing (`--help`) shows every command
        return super().list_commands(ctx)


class TimeParam(click.ParamType):  # type: ignore[type-arg]  # generic only from click 8.2 (we take 8.1)
    """A time option: ISO 8601 (UTC if naive) or integer ns, as ns; a bad one is a usage error naming the option."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_time(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


TIME = TimeParam()
"""The type of every time option (`--from-time`, `--from`, `--to`, `--start`, `--end`)."""


@click.group(cls=TicktapeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--tape", "tape_uri", envvar="TICKTAPE_TAPE", default=None,
              help=TAPE_HELP + " Every subcommand also takes it after its name.")
@click.option("--config", "config_file", default=None, help="TOML config file (default ./ticktape.toml).")
@click.option("--log-level", default=None, help="debug, info, warning, error.")
@click.option("--log-format", type=click.Choice(["auto", "json", "text"]), default=None)
@click.version_option(package_name="ticktape")
@click.pass_context
def cli(ctx: click.Context, tape_uri: str | None, config_file: str | None, log_level: str | None,
        log_format: str | None) -> None:
    """ticktape: record every tick, replay every decision."""
    settings = load_settings(config_file, tape=tape_uri, log_level=log_level, log_format=log_format)
    setup_logging(settings.log_level, settings.log_format)
    ctx.obj = Context(settings.tape)
    ctx.call_on_close(ctx.obj.close)


def record_json(record: Record) -> str:
    """A record as one JSON line: position and type first, then the event's fields."""
    out: dict[str, Any] = {"topic": record.topic, "partition": record.partition, "offset": record.offset,
                           "key": record.key, "type": type(record.event).__name__}
    out.update(to_python(record.event))
    return json.dumps(out, allow_nan=True, default=_json_bytes)


def _json_bytes(value: object) -> str:
    """Avro's JSON form of `bytes` (one char per byte, latin-1), which `put` reads back."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per topic.")
@pass_ctx
def topics(obj: Context, as_json: bool) -> None:
    """Topics with partitions, event counts and first/last ts_event."""
    infos = obj.tape(existing=True).topics()
    if as_json:
        for t in infos:
            click.echo(json.dumps({"topic": t.name, "partitions": len(t.partitions), "events": t.events,
                                   "first_ts_event": t.first_ts, "last_ts_event": t.last_ts}))
        return
    rows = [("TOPIC", "PARTITIONS", "EVENTS", "FIRST TS_EVENT", "LAST TS_EVENT")]
    rows += [(t.name, str(len(t.partitions)), str(t.events), format_time(t.first_ts), format_time(t.last_ts))
             for t in infos]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _parse_lines(type_name: str, key_field: str | None, batch_size: int
                 ) -> Iterator[tuple[list[Event], list[str | None]]]:
    codec = default_codec()
    events: list[Event] = []
    keys: list[str | None] = []
    for lineno, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"invalid JSON: {exc.msg} at column {exc.colno}", where=f"line {lineno}") from None
        if not isinstance(data, dict):
            raise ValidationError("expected a JSON object", where=f"line {lineno}")
        event = codec.from_dict(type_name, data, where=f"line {lineno}")
        if key_field is not None:
            if key_field not in event._fields:
                raise ValidationError(f"--key {key_field!r} is not a field of {type_name}", where=f"line {lineno}")
            value = getattr(event, key_field)
            keys.append(None if value is None else str(value))
        else:
            keys.append(codec.key_of(event))
        events.append(event)
        if len(events) >= batch_size:
            yield events, keys
            events, keys = [], []
    if events:
        yield events, keys


@cli.command()
@click.argument("topic")
@click.option("--type", "type_name", required=True, help="Event type, e.g. Trade.")
@click.option("--key", "key_field", default=None, help="Field to key (partition) by; default: the schema's key.")
@click.option("--batch-size", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Lines validated before each atomic append.")
@pass_ctx
def put(obj: Context, topic: str, type_name: str, key_field: str | None, batch_size: int) -> None:
    """Append JSON lines from stdin as events of TYPE.

    Each batch is validated line by line before it is appended; a bad line stops the
    command naming the line and field, and nothing of its batch is written.
    """
    tape = obj.tape()
    total = 0
    for events, keys in _parse_lines(type_name, key_field, batch_size):
        tape.append(topic, events, keys=keys)
        total += len(events)
    click.echo(f"appended {total} {type_name} events to {topic}", err=True)


@cli.command()
@click.argument("topic")
@click.option("--partition", type=int, default=None, help="Only this partition (default: all, merged by time).")
@click.option("--from-offset", type=int, default=None)
@click.option("--from-time", type=TIME, default=None, help="ISO 8601 time (UTC if naive) or integer ns.")
@click.option("--limit", type=int, default=None)
@click.option("--follow", "-f", is_flag=True, help="Keep waiting for new events.")
@pass_ctx
def cat(obj: Context, topic: str, partition: int | None, from_offset: int | None, from_time: int | None,
        limit: int | None, follow: bool) -> None:
    """Print events as JSON lines (offset, partition, type and the event's fields)."""
    from ticktape.tape.merge import follow_all, read_merged

    if from_offset is not None and from_time is not None:
        raise click.UsageError("give --from-offset or --from-time, not both")
    ts = from_time
    tape = obj.tape(existing=True)
    if partition is not None:
        records: Iterator[Record] = tape.read(topic, partition, from_offset=from_offset, from_time=ts,
                                              follow=follow, limit=limit)
    elif follow:
        records = follow_all(tape, topic, from_offset=from_offset, from_time=ts, limit=limit)
    else:
        if not tape.partitions(topic):
            raise click.ClickException(f"no topic {topic!r} on {obj.tape_uri}")
        records = read_merged(tape, [topic], from_offset=from_offset, from_time=ts, limit=limit)
    out = sys.stdout
    try:
        for r in records:
            out.write(record_json(r) + "\n")
            if follow:
                out.flush()
    except BrokenPipeError:  # `ticktape cat ... | head`
        sys.stderr.close()


@cli.group()
def schemas() -> None:
    """List, show and check the Avro schemas."""


@schemas.command("list")
def schemas_list() -> None:
    """Every schema version with its fingerprint."""
    reg = default_codec().registry
    for v in reg.versions:
        current = " (current)" if reg.current[v.name] is v else ""
        click.echo(f"{v.name:<18} v{v.version:<3} {v.fingerprint.hex()}  {v.path.name}{current}")


@schemas.command("show")
@click.argument("name")
@click.option("--version", "version", type=int, default=None, help="A past version (default: the current one).")
def schemas_show(name: str, version: int | None) -> None:
    """The fields of event type NAME (e.g. Trade): name, type and doc, one per line."""
    reg = default_codec().registry
    if name not in reg.current:
        raise click.ClickException(f"no schema {name!r}: one of {', '.join(sorted(reg.current))}")
    versions = [v for v in reg.versions if v.name == name]
    chosen = reg.current[name] if version is None else next((v for v in versions if v.version == version), None)
    if chosen is None:
        raise click.ClickException(f"{name} has no version {version}: "
                                   f"{', '.join(str(v.version) for v in versions)}")
    doc = chosen.schema.get("doc")
    click.echo(f"{name} v{chosen.version} ({chosen.path.name}, fingerprint {chosen.fingerprint.hex()})"
               + (f": {doc}" if doc else ""))
    rows = [("FIELD", "TYPE", "DOC")]
    rows += [(f["name"], _type_name(f["type"]), str(f.get("doc", ""))) for f in chosen.schema["fields"]]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    for r in rows:
        click.echo(f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2]}".rstrip())


def _type_name(avro_type: Any) -> str:
    """An Avro type as a short readable name: `double`, `string?` (nullable), `enum AggressorSide{BUY|SELL|NONE}`,
    `array<PriceSize>`, a record by its name."""
    if isinstance(avro_type, str):
        return avro_type
    if isinstance(avro_type, list):
        others = [t for t in avro_type if t != "null"]
        inner = " | ".join(_type_name(t) for t in others)
        return f"{inner}?" if len(others) < len(avro_type) else inner
    kind = avro_type.get("type")
    if kind == "enum":
        return f"enum {avro_type['name']}{{{'|'.join(avro_type['symbols'])}}}"
    if kind == "array":
        return f"array<{_type_name(avro_type['items'])}>"
    if kind == "map":
        return f"map<{_type_name(avro_type['values'])}>"
    if kind == "record":
        return f"record {avro_type['name']}"
    if avro_type.get("logicalType"):
        return f"{kind} ({avro_type['logicalType']})"
    return str(kind)


@schemas.command("check")
def schemas_check() -> None:
    """Fail when a schema version cannot read data written with the previous one."""
    from ticktape import gen_events
    from ticktape.schemas import SchemaRegistry

    reg = SchemaRegistry.load()
    problems = reg.check_compatibility()
    events_file = gen_events.__file__.replace("gen_events.py", "events.py")
    with open(events_file) as f:
        if f.read() != gen_events.render(reg):
            problems.append("ticktape/events.py is out of date: run python -m ticktape.gen_events")
    for p in problems:
        click.echo(f"FAIL {p}", err=True)
    if problems:
        sys.exit(1)
    click.echo(f"ok: {len(reg.versions)} schema versions of {len(reg.names())} types are backward compatible")


def main() -> None:
    """Console entry point: every error is one line on stderr and a non-zero exit, never a traceback.

    Usage errors exit 2 with the command's --help named, ClickExceptions exit 1, the project's own
    errors 2, anything unexpected 1 with its type and a hint; `--log-level debug` also logs the
    traceback of whatever went wrong.
    """
    try:
        # ticktape's own plugins load with the command that needs them (TicktapeGroup.get_command)
        _register_plugins(builtins=False)
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _fail(exc, exc.format_message() + hint, exc.exit_code)
    except click.ClickException as exc:
        _fail(exc, exc.format_message(), exc.exit_code)
    except TicktapeError as exc:
        _fail(exc, str(exc), 2)
    except Exception as exc:  # a bug or an untranslated library error: still one line, the trace on request
        outside = outside_failure(exc)
        if outside is not None:
            _fail(exc, outside, 2)
        _fail(exc, f"{type(exc).__name__}: {exc} (unexpected; --log-level debug shows the traceback)", 1)


def outside_failure(exc: BaseException) -> str | None:
    """A failure of the world outside ticktape (no network, a venue refusing) said plainly, or None.

    These are not bugs: the message names what could not be reached or what the venue said, without
    the "unexpected" hint. Only libraries already imported are consulted.
    """
    requests = sys.modules.get("requests")
    if requests is not None and isinstance(exc, requests.exceptions.RequestException):
        request = getattr(exc, "request", None)
        url = getattr(request, "url", None) or ""
        where = url.split("?")[0] or "the venue"
        text = str(exc)
        if "resolve" in text or "Name or service not known" in text:
            reason = "its host name does not resolve (no network or DNS?)"
        elif "refused" in text.lower():
            reason = "the connection was refused"
        elif isinstance(exc, requests.exceptions.Timeout):
            reason = "it did not answer in time"
        else:
            reason = text
        return f"cannot reach {where}: {reason}"
    for module, venue in (("betfairlightweight.exceptions", "Betfair"), ("binance.exceptions", "Binance")):
        errors = sys.modules.get(module)
        base = getattr(errors, "BetfairError", None) or getattr(errors, "BinanceAPIException", None)
        if isinstance(base, type) and isinstance(exc, base):
            text = str(exc)  # betfairlightweight's APIError reads "method | Params: ... | Exception: what"
            return f"{venue}: {text.rsplit('Exception: ', 1)[-1] if 'Exception: ' in text else text}"
    return None


def _fail(exc: BaseException, message: str, code: int) -> NoReturn:
    """Print `message` as one line (`error: ...`) and exit with `code`; the traceback only at debug level."""
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("ticktape.cli").debug("traceback of the error below", exc_info=exc)
    one_line = " | ".join(part.strip() for part in message.strip().splitlines() if part.strip())
    click.echo(f"error: {one_line}", err=True)
    sys.exit(code)


BUILTIN_COMMANDS = {
    "demo": "ticktape.demo:register",
    "mirror": "ticktape.mirror:register",
    "repair": "ticktape.tape.repair:register",
    "producers": "producers.cli:register",
    "robots": "robots.cli:register",
    "live": "robots.live.cli:register",
    "analyzer": "analyzer.cli:register",
    "mongo": "ticktape.mongo.cli:register",
}
"""ticktape's own command groups, as declared under `[project.entry-points."ticktape.commands"]`."""

BUILTIN_PROVIDES: dict[str, tuple[str, ...]] = {
    "demo": ("demo",),
    "mirror": ("mirror",),
    "repair": ("repair",),
    "producers": ("import", "record"),
    "robots": ("backtest", "sweep"),
    "live": ("control", "gateway", "run", "runs"),
    "analyzer": ("audit", "load", "replay", "report", "sql"),
    "mongo": ("mongo",),
}
"""The top-level commands each of ticktape's own plugins adds (a test holds them to what `register`
adds): a command loads only its plugin, not all eight (importing them all cost ~0.1 s of every start)."""

PLUGIN_GROUP = "ticktape.commands"
"""Entry-point group of command plugins: `name = "module:register"`, `register(cli)` adds commands."""


class PluginError(TicktapeError):
    """A command plugin that cannot be loaded: named, never silently left out."""


def _plugin_targets() -> dict[str, str]:
    """Every command plugin: ticktape's own (also from an uninstalled source tree) and the installed ones."""
    from importlib.metadata import entry_points

    targets = dict(BUILTIN_COMMANDS)
    for ep in entry_points(group=PLUGIN_GROUP):
        if targets.get(ep.name, ep.value) != ep.value:
            raise PluginError(f"command plugin {ep.name!r}: {ep.value} clashes with ticktape's own "
                              f"{targets[ep.name]} (rename the entry point)")
        targets[ep.name] = ep.value
    return targets


_registered: set[str] = set()


def _register_plugins(*, builtins: bool = True) -> None:
    """Attach every command plugin's commands (demo, import, backtest, load, ...) to `cli`.

    With `builtins=False` only the installed plugins that are not ticktape's own are loaded (and the
    entry points checked for clashes); ticktape's own then load when one of their commands is asked
    for (`TicktapeGroup`). A plugin that fails to import, or has no callable `register`, is an error
    naming it: a broken module must never quietly take its commands away.
    """
    for name, target in _plugin_targets().items():
        if builtins or BUILTIN_COMMANDS.get(name) != target:
            _load_plugin(name, target)


def _load_builtins_for(command: str | None) -> None:
    """Load ticktape's own plugins that add `command` (None: all of them; an unknown name: all too,
    so that click's "no such command" is said with every command attached)."""
    names = [name for name, provides in BUILTIN_PROVIDES.items() if command in provides]
    for name in names or BUILTIN_COMMANDS:
        _load_plugin(name, BUILTIN_COMMANDS[name])


def _load_plugin(name: str, target: str) -> None:
    """Import one plugin and call its `register(cli)`, once."""
    import importlib

    if name in _registered:
        return
    module, _, attr = target.partition(":")
    try:
        register = getattr(importlib.import_module(module), attr or "register")
    except Exception as exc:
        raise PluginError(f"command plugin {name!r} ({target}) failed to load: "
                          f"{type(exc).__name__}: {exc}") from exc
    if not callable(register):
        raise PluginError(f"command plugin {name!r} ({target}) is not callable")
    register(cli)
    _registered.add(name)
