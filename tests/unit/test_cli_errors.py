"""Every storage and input error is one line on stderr and a non-zero exit, never a traceback.

Each case runs the real CLI (`python -m ticktape ...`) in a fresh directory. Add a case to `CASES`:
`argv` (after `python -m ticktape`; `{tmp}` is the case's directory, `{tape}` a file tape URI in
it), optional `stdin`, `env` and `setup(tmp)` that prepares files first, and `expect`, a piece of
the one line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import make_trades
from ticktape.codec import to_python
from ticktape.tape.file import FileTape

REPO = Path(__file__).resolve().parents[2]
BINANCE = REPO / "tests" / "fixtures" / "binance"
BETFAIR = REPO / "tests" / "fixtures" / "betfair"


@dataclass(frozen=True)
class Case:
    """One way for a command to fail on bad input or storage."""

    name: str
    argv: tuple[str, ...]
    expect: str
    stdin: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None


def trade_json(**changes: object) -> str:
    """One `put` input line: a Trade as JSON, with `changes` spliced in as raw JSON text."""
    line = json.dumps(to_python(make_trades(1)[0]))
    for name, text in changes.items():
        value = json.dumps(to_python(make_trades(1)[0])[name])
        line = line.replace(f'"{name}": {value}', f'"{name}": {text}')
    return line + "\n"


def write(name: str, data: bytes | str) -> Callable[[Path], None]:
    """A setup step: write `data` to `name` in the case's directory."""
    def setup(tmp: Path) -> None:
        path = tmp / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return setup


def damaged_zip(tmp: Path) -> None:
    """A real data.binance.vision zip with one byte of its first member's deflate stream flipped."""
    data = bytearray((BINANCE / "BTCUSDT-aggTrades-2024-01-01.zip").read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[26:30])
    data[30 + name_len + extra_len + 5] ^= 0xFF
    (tmp / "BTCUSDT-aggTrades-2024-01-02.zip").write_bytes(bytes(data))


def trades_on_tape(tmp: Path) -> None:
    with FileTape(tmp / "tape") as tape:
        tape.append("md.trade", make_trades(5))


BUGGY_ROBOT = '''
from dataclasses import dataclass

from robots.api import Context, Params, Robot, Subscription
from ticktape.events import Trade


@dataclass(frozen=True)
class P(Params):
    pass


@dataclass
class S:
    seen: int = 0


class Buggy(Robot[P, S]):
    name, params_type = "buggy", P

    def subscriptions(self) -> Subscription:
        return Subscription(topics=("md.trade",))

    def init_state(self) -> S:
        return S()

    def on_trade(self, state: S, event: Trade, ctx: Context) -> None:
        raise RuntimeError("a bug in the robot")
'''


def buggy_robot(tmp: Path) -> None:
    """A tape of trades and a robot whose handler raises: an error no layer of ticktape expects."""
    trades_on_tape(tmp)
    (tmp / "buggy_robot.py").write_text(BUGGY_ROBOT)


def stray_file(tmp: Path) -> None:
    """A copy of a segment under another name, left in the partition directory."""
    trades_on_tape(tmp)
    shutil.copy(tmp / "tape/md.trade/0" / f"{0:020d}.avro", tmp / "tape/md.trade/0/backup.avro")


def garbage_topic_json(tmp: Path) -> None:
    trades_on_tape(tmp)
    (tmp / "tape/md.trade/topic.json").write_text("{partitions: two")


def damaged_header(tmp: Path) -> None:
    """One byte of the segment's schema JSON changed."""
    trades_on_tape(tmp)
    segment = tmp / "tape/md.trade/0" / f"{0:020d}.avro"
    data = bytearray(segment.read_bytes())
    data[40] ^= 0x20
    segment.write_bytes(bytes(data))


CASES = [
    # the file tape's own files
    Case("stray file in a partition", ("cat", "md.trade"), "stray file", setup=stray_file),
    Case("garbage in topic.json", ("topics",), "md.trade/topic.json cannot be read", setup=garbage_topic_json),
    Case("damaged segment header", ("cat", "md.trade"), "header fails its checksum: it is damaged; run `ticktape "
         "repair`", setup=damaged_header),
    Case("damaged segment header, writing", ("put", "md.trade", "--type", "Trade"),
         "not appending to md.trade partition 0", stdin=trade_json(), setup=damaged_header),
    # input files
    Case("corrupt zip", ("import", "binance", "BTCUSDT-trades-2024-01-01.zip", "--kind", "trades"),
         "BTCUSDT-trades-2024-01-01.zip: not a readable zip file (File is not a zip file)",
         setup=write("BTCUSDT-trades-2024-01-01.zip", b"PK\x03\x04 not really a zip")),
    Case("damaged zip member", ("import", "binance", "BTCUSDT-aggTrades-2024-01-02.zip", "--kind", "aggTrades"),
         "BTCUSDT-aggTrades-2024-01-02.zip: not a readable zip file (Error -3 while decompressing data",
         setup=damaged_zip),
    Case("corrupt parquet", ("import", "bars", "bars.parquet", "--venue", "sim", "--instrument", "X",
                             "--interval", "1m"),
         "bars.parquet: cannot be read as Parquet", setup=write("bars.parquet", b"PAR1 not parquet")),
    # put's input
    Case("401-digit integer price", ("put", "md.trade", "--type", "Trade"),
         "line 1, field 'price': an integer of 401 digits is too large for an Avro double",
         stdin=trade_json(price="1" * 401)),
    Case("401-digit integer time", ("put", "md.trade", "--type", "Trade"),
         "line 1, field 'ts_event': an integer of 401 digits is out of range for an Avro long",
         stdin=trade_json(ts_event="9" * 401)),
    Case("non-Latin-1 bytes", ("put", "dlq.x", "--type", "DeadLetter"),
         "line 1, field 'raw': character '€' at 3 is not a byte",
         stdin='{"source": "s", "position": "p", "error": "e", "ts_event": 1, "ts_recv": 1, "raw": "ab\\n€"}\n'),
    Case("invalid Unicode", ("put", "md.trade", "--type", "Trade"),
         "line 1, field 'venue': not valid Unicode text", stdin=trade_json(venue='"b\\ud800"')),
    Case("NaN price", ("put", "md.trade", "--type", "Trade"),
         "line 1, field 'price': nan is not a finite number", stdin=trade_json(price="NaN")),
    Case("1e400 size", ("put", "md.trade", "--type", "Trade"),
         "line 1, field 'size': inf is not a finite number", stdin=trade_json(size="1e400")),
    Case("topic name with a newline", ("put", "md.trade\n", "--type", "Trade"),
         "invalid topic name 'md.trade\\n'", stdin=trade_json()),
    # tape URIs
    Case("partitions=abc", ("--tape", "{tape}?partitions=abc", "topics"),
         "partitions must be a whole number, not 'abc'"),
    Case("partitions=0", ("--tape", "{tape}?partitions=0", "put", "md.trade", "--type", "Trade"),
         "partitions must be at least 1, not 0", stdin=trade_json()),
    Case("partitions=-1", ("--tape", "{tape}?partitions=-1", "topics"), "partitions must be at least 1, not -1"),
    Case("segment_bytes=0", ("--tape", "{tape}?segment_bytes=0", "topics"), "segment_bytes must be at least 1, not 0"),
    Case("tape on a file", ("--tape", "file:{tmp}/notes.txt", "topics"), "notes.txt: it is a file, not a directory",
         setup=write("notes.txt", "hello")),
    Case("tape on /etc/passwd", ("--tape", "file:/etc/passwd", "topics"), "/etc/passwd: it is a file, not a directory"),
    Case("tape in /proc/self", ("--tape", "file:/proc/self", "put", "md.trade", "--type", "Trade"),
         "cannot write /proc/self/md.trade/topic.json", stdin=trade_json()),
    Case("tape without a path", ("--tape", "file:", "topics"), "a file tape needs a directory"),
    # settings
    Case("log level", ("--log-level", "bogus", "topics"),
         "--log-level: log_level must be one of debug, info, warning, error, critical, not 'bogus'"),
    Case("malformed ticktape.toml", ("topics",), "config file ticktape.toml is not valid TOML",
         setup=write("ticktape.toml", 'tape = "file:./tape\n')),
    Case("wrong type in ticktape.toml", ("topics",), "config file ticktape.toml: log_level must be a string, not 5",
         setup=write("ticktape.toml", "log_level = 5\n")),
    Case("missing --config", ("--config", "nope.toml", "topics"), "config file nope.toml does not exist"),
    Case("misspelt setting in ticktape.toml", ("topics",),
         "config file ticktape.toml: unknown setting 'log_levl' (did you mean 'log_level'?)",
         setup=write("ticktape.toml", 'log_levl = "debug"\n')),
    Case("unknown setting in [ticktape]", ("topics",), "config file ticktape.toml: unknown setting 'colour' (known: ",
         setup=write("ticktape.toml", '[ticktape]\ncolour = "red"\n')),
    Case("TICKTAPE_LOG_LEVEL", ("topics",), "$TICKTAPE_LOG_LEVEL: log_level must be one of",
         env={"TICKTAPE_LOG_LEVEL": "loud"}),
    Case("unreachable Kafka", ("--tape", "kafka://127.0.0.1:9?timeout=3", "topics"),
         "Kafka at 127.0.0.1:9: connecting: KafkaTimeoutError: Unable to bootstrap"),
    Case("Betfair certificates folder without certificates",
         ("record", "betfair", "--market-ids", "1.1", "--credentials", "{tmp}/bf.toml"),
         "Betfair: Certificates not found in directory: '{tmp}/certs'",
         setup=lambda tmp: ((tmp / "certs").mkdir(), (tmp / "bf.toml").write_text(
             f'[betfair]\nusername = "u"\npassword = "p"\napp_key = "k"\ncerts = "{tmp}/certs"\n'))),
    Case("partitions in ticktape.toml", ("topics",),
         "config file ticktape.toml: partitions is set per tape: --tape 'file:PATH?partitions=N'",
         setup=write("ticktape.toml", "partitions = 4\n")),
    Case("malformed credentials TOML", ("record", "betfair", "--market-ids", "1.1", "--credentials", "{tmp}/bf.toml"),
         "credentials file {tmp}/bf.toml is not valid TOML: Expected ']' at the end of a table declaration (at line 1",
         setup=write("bf.toml", '[betfair\nusername = "x"\n')),
    Case("malformed Binance credentials", ("record", "binance", "--symbols", "BTCUSDT", "--user-data",
                                           "--credentials", "{tmp}/bn.toml"),
         "credentials file {tmp}/bn.toml is not valid TOML", setup=write("bn.toml", "api_key = \n")),
    Case("missing --params file", ("backtest", "ema_cross", "--params", "nope.toml", "--no-out"),
         "params file nope.toml does not exist"),
    Case("malformed --controls file", ("backtest", "ema_cross", "--controls", "c.toml", "--no-out"),
         "controls file c.toml is not valid TOML", setup=write("c.toml", "[controls\n")),
    # options
    Case("--from-time garbage", ("cat", "md.trade", "--from-time", "garbage"),
         "Invalid value for '--from-time': not an ISO 8601 time or integer ns: 'garbage'", setup=trades_on_tape),
    Case("load --to garbage", ("load", "--db", "x.duckdb", "--to", "soon"), "Invalid value for '--to'"),
    Case("put --batch-size 0", ("put", "md.trade", "--type", "Trade", "--batch-size", "0"),
         "Invalid value for '--batch-size': 0 is not in the range x>=1", stdin=trade_json()),
    Case("put --batch-size -1", ("put", "md.trade", "--type", "Trade", "--batch-size", "-1"),
         "Invalid value for '--batch-size': -1 is not in the range x>=1", stdin=trade_json()),
    Case("mirror --batch-size 0", ("mirror", "--from", "{tape}", "--to", "{tape}2", "--batch-size", "0"),
         "Invalid value for '--batch-size': 0 is not in the range x>=1"),
    Case("import betfair --batch-size -1", ("import", "betfair", str(BETFAIR / "market.stream"), "--batch-size", "-1"),
         "Invalid value for '--batch-size': -1 is not in the range x>=1"),
    Case("load --batch-rows 0", ("load", "--db", "x.duckdb", "--batch-rows", "0"),
         "Invalid value for '--batch-rows': 0 is not in the range x>=1"),
    # a bug, not bad input: still one line, naming the exception
    Case("unexpected error", ("backtest", "buggy_robot:Buggy", "--no-out"),
         "RuntimeError: a bug in the robot (unexpected; --log-level debug shows the traceback)",
         env={"PYTHONPATH": "{tmp}"}, setup=buggy_robot),
]


def run_case(case: Case, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run the case's command in `tmp` (prepared by its setup already) the way a user would."""
    fill = {"tmp": str(tmp), "tape": f"file:{tmp / 'tape'}"}
    argv = [a.format(**fill) for a in case.argv]
    if "--tape" not in argv:
        argv = ["--tape", fill["tape"], *argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKTAPE_")}
    env.update({k: v.format(**fill) for k, v in case.env.items()})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(REPO)]))
    return subprocess.run([sys.executable, "-m", "ticktape", *extra, *argv], input=case.stdin, capture_output=True,
                          text=True, cwd=tmp, env=env, timeout=120)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_one_line_and_a_non_zero_exit(case: Case, tmp_path: Path) -> None:
    if any("/proc/self" in a for a in case.argv) and not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    if case.setup is not None:
        case.setup(tmp_path)
    topics_before = sorted((tmp_path / "tape").glob("*/topic.json"))
    done = run_case(case, tmp_path)
    lines = done.stderr.splitlines()
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and case.expect.format(tmp=tmp_path) in lines[0], lines[0]
    assert sorted((tmp_path / "tape").glob("*/topic.json")) == topics_before, "a failed command created a topic"


def test_debug_level_shows_the_traceback_of_an_unexpected_error(tmp_path: Path) -> None:
    case = next(c for c in CASES if c.name == "unexpected error")
    buggy_robot(tmp_path)
    done = run_case(case, tmp_path, "--log-level", "debug", "--log-format", "text")
    assert done.returncode != 0
    assert "Traceback (most recent call last)" in done.stderr
    assert 'raise RuntimeError("a bug in the robot")' in done.stderr  # the robot's own line, not just ours
    assert done.stderr.rstrip().splitlines()[-1].startswith("error: RuntimeError: a bug in the robot")


def test_a_good_command_still_succeeds_quietly(tmp_path: Path) -> None:
    """The harness itself: the same invocation with good input exits 0 (so the cases fail for their reason)."""
    done = run_case(Case("good put", ("put", "md.trade", "--type", "Trade"), "", stdin=trade_json()), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["appended 1 Trade events to md.trade"]
    shutil.rmtree(tmp_path / "tape")


def test_disk_full_on_put_is_one_line(tmp_path: Path) -> None:
    """A real full disk (a small tmpfs), then the same command once there is room again."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=262144", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()})")
    try:
        case = Case("disk full on put", ("--tape", f"file:{disk / 'tape'}", "put", "md.trade", "--type", "Trade"),
                    "", stdin="".join(trade_json(trade_id=f'"{i}"') for i in range(5_000)))
        done = run_case(case, tmp_path)
        lines = done.stderr.splitlines()
        assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert lines[0].startswith("error: append to md.trade partition 0") and "the disk is full" in lines[0]
        assert "nothing of this batch was written" in lines[0]
        done = run_case(dataclasses.replace(case, stdin=trade_json()), tmp_path)  # one line fits
        assert done.returncode == 0, done.stderr
        assert [r.event.trade_id for r in FileTape(disk / "tape").read("md.trade")] == ["0"]  # type: ignore[attr-defined]
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_network_failures_are_said_plainly_not_as_bugs() -> None:
    """Real requests failures (a name that cannot resolve, RFC 6761; a closed local port) become one
    plain line naming the address, without the "unexpected" hint."""
    import socket

    import requests

    from ticktape.cli import outside_failure

    with pytest.raises(requests.exceptions.ConnectionError) as unresolvable:
        requests.get("https://no-such-host.invalid/api/v3/ping", timeout=10)
    assert outside_failure(unresolvable.value) == (
        "cannot reach https://no-such-host.invalid/api/v3/ping: its host name does not resolve (no network or DNS?)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(requests.exceptions.ConnectionError) as refused:
            requests.get(f"http://127.0.0.1:{port}/x?signature=secret", timeout=10)
    assert outside_failure(refused.value) == f"cannot reach http://127.0.0.1:{port}/x: the connection was refused"
    assert outside_failure(RuntimeError("a bug")) is None
