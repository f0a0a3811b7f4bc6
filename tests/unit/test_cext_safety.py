"""Memory safety of the C extensions (`ticktape._avrovm`, `producers.betfair._ladders`) where they call
back into Python: a `__bool__`, `__float__` or a mutated container must not leave C holding a dangling
pointer or a stale length.

Each case runs in a child process, so a segfault is this test's failure and not a dead pytest; the child
inherits the environment, so under `scripts/sanitize` it runs under AddressSanitizer as well.

The C modules must be built: set TICKTAPE_NO_CEXT=1 to skip these tests on purpose.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

if os.environ.get("TICKTAPE_NO_CEXT") == "1":
    pytest.skip("C extensions disabled by TICKTAPE_NO_CEXT=1", allow_module_level=True)

from producers.betfair import _ladders, cache  # type: ignore[attr-defined]
from ticktape import _avrovm as vm  # type: ignore[attr-defined]
from ticktape import avro_program as ap
from ticktape.codec import default_codec
from ticktape.events import RECORD_TYPES, MarketBook, PriceSize, RunnerBook, Trade

ROOT = Path(__file__).resolve().parents[2]

PRELUDE = """\
import gc, sys
from producers.betfair import _ladders, cache  # cache configures _ladders
from ticktape.codec import default_codec
from ticktape.events import MarketBook, PriceSize
assert cache.FAST is _ladders, "the C twin is not in use"
HEADER = b"\\xc3\\x01" + default_codec().fingerprint(MarketBook)
FIELDS = ("1.1", 5, 6, "OPEN", True, 1, 12.0, 7, True, True, 2)

def runner(selection_id, status="ACTIVE"):
    r = _ladders.Runner(selection_id, 0.0)
    r.set_status(status)
    r.apply({"atb": [[2.0, 1.0], [1.9, 3.0]], "atl": [[2.1, 4.0]], "trd": [[2.0, 5.0]]})
    return r
"""


def run_child(body: str, prelude: str = PRELUDE) -> str:
    """Run prelude + body in a fresh interpreter; its stdout (fails on a crash or a non-zero exit)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(body)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (
        f"child exited with {proc.returncode} (negative: killed by that signal)\n"
        f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}")
    return proc.stdout


# --- encode_book: a flag's __bool__ must not leave a runner's cached bytes invalid ------------------


def test_encode_book_takes_real_bools_only_so_no_flag_runs_python_mid_encoding() -> None:
    """A `__bool__` on a flag invalidated an already encoded runner (`enc_len = -1`), then its bytes were
    copied with length -1: a crash. Flags are real bools now; anything else is a TypeError."""
    out = run_child("""
        r = runner(1)
        class Evil:
            def __bool__(self):
                r.apply({"atb": [[3.0, 1.0]]})  # invalidates r's cached encoding
                return True
        for position in (5, 9, 10):  # in_play, complete, cross_matching
            args = list(FIELDS)
            args[position - 1] = Evil()
            try:
                _ladders.encode_book(HEADER, *args, [r])
            except TypeError as exc:
                print("TypeError", exc)
            else:
                print("accepted")
    """)
    assert out.splitlines() == [
        "TypeError in_play: expected a bool, got Evil",
        "TypeError complete: expected a bool, got Evil",
        "TypeError cross_matching: expected a bool, got Evil"]


def test_encode_book_ints_for_flags_are_refused_like_any_non_bool() -> None:
    r = _ladders.Runner(1, 0.0)
    header = b"\xc3\x01" + default_codec().fingerprint(MarketBook)
    with pytest.raises(TypeError, match="in_play: expected a bool, got int"):
        _ladders.encode_book(header, "1.1", 5, 6, "OPEN", 1, 1, 12.0, 7, True, True, 2, [r])


def test_encode_book_a_status_whose_bool_invalidates_another_runner_gives_valid_bytes() -> None:
    """A runner's status is any object `set_status` was given; its `__bool__` ran after the runners before it
    were encoded and could invalidate them (or shrink the list). Each runner is now copied as soon as it is
    encoded, from a snapshot of the list: the bytes are a valid book of the runners as they were then."""
    out = run_child("""
        a, b = runner(1), runner(2)
        runners = [a, b]
        class Status(str):
            def __bool__(self):
                a.apply({"atb": [[3.0, 9.0]]})  # invalidates a, already encoded
                runners.clear()
                return True
        b.set_status(Status("ACTIVE"))
        data = _ladders.encode_book(HEADER, *FIELDS, runners)
        book = default_codec().decode(data)
        print(len(book.runners), book.runners[0].selection_id, book.runners[0].available_to_back[0])
        print(a.runner_book().available_to_back[0])  # a's own state did take the change
    """)
    assert out.splitlines() == ["2 1 PriceSize(price=2.0, size=1.0)", "PriceSize(price=3.0, size=9.0)"]


def test_runner_encoding_survives_a_status_bool_that_encodes_the_same_runner() -> None:
    """`__bool__` of the status re-entering `encode_book` on the same runner reallocated its byte buffer
    while the outer call held the old pointer."""
    out = run_child("""
        r = runner(1)
        _ladders.encode_book(HEADER, *FIELDS, [r])  # r now has a byte buffer, the outer call takes it
        depth = []
        class Status(str):
            def __bool__(self):
                if not depth:
                    depth.append(1)
                    for i in range(200):  # grow r's ladder: the inner encoding reallocates the buffer
                        r.apply({"atl": [[10.0 + i, 1.0]]})
                    _ladders.encode_book(HEADER, *FIELDS, [r])
                return True
        r.set_status(Status("ACTIVE"))
        data = _ladders.encode_book(HEADER, *FIELDS, [r])
        book = default_codec().decode(data)
        print(len(book.runners[0].available_to_lay), book.runners[0].status)
    """)
    assert out.split() == ["201", "ACTIVE"]


# --- ladder_update / Runner.apply: no pointer into a row or the dict across __float__ / __bool__ -----


def test_ladder_row_cleared_by_float_does_not_read_freed_items() -> None:
    """`ladder_update` kept a pointer into a row's item array across `PyFloat_AsDouble` (which runs an
    int subclass's `__float__`): clearing the row freed the array, and the size was read from whatever
    reused it. The row's values are held while they are converted."""
    out = run_child("""
        row = []
        class Key(int):
            def __float__(self):
                row.clear()  # frees the row's item array
                reuse = [[0, "not a number"] for _ in range(50)]  # 16-byte arrays: one reuses it
                return 2.0
        size = float("5.5")
        row.extend([Key(2), size])
        del size
        r = _ladders.Runner(1, 0.0)
        r.apply({"atl": [row]})
        print(r.ladder("atl"))
    """)
    assert out.strip() == "(PriceSize(price=2.0, size=5.5),)"


def test_ladder_rows_cleared_by_float_stop_the_update_like_python_iteration() -> None:
    """The rows list emptied by `__float__` mid-update: C read row 1 of an empty list (NULL items). It now
    stops where the list ends, as `for row in rows` does in the Python twin."""
    out = run_child("""
        rows = []
        class Key(int):
            def __float__(self):
                rows.clear()
                return 2.0
        rows.extend([[Key(2), 1.0], [3.0, 1.0], [4.0, 1.0]])
        r = _ladders.Runner(1, 0.0)
        r.apply({"atl": rows})
        print(r.ladder("atl"))
    """)
    assert out.strip() == "(PriceSize(price=2.0, size=1.0),)"


def test_runner_apply_holds_the_value_whose_bool_deletes_it_from_the_change() -> None:
    """`Runner.apply` used the value borrowed from `PyDict_Next` after its `__bool__` deleted it from the
    dict (its only owner): a use after free. The value is held while it is applied; the change of size is
    a RuntimeError, as the Python twin's `for name, value in rc.items()` raises."""
    out = run_child("""
        class Rows(list):
            def __bool__(self):
                rc.clear()  # frees this list: the dict held the only reference
                for _ in range(100):
                    [[7.0, 7.0]] * 3  # reuse the freed memory
                return True
        rc = {"atl": Rows([[2.0, 1.0], [3.0, 2.0]])}
        r = _ladders.Runner(1, 0.0)
        try:
            r.apply(rc)
        except RuntimeError as exc:
            print("RuntimeError", exc)
        print(r.ladder("atl"))
    """)
    assert out.splitlines() == ["RuntimeError dictionary changed size during iteration",
                                "(PriceSize(price=2.0, size=1.0), PriceSize(price=3.0, size=2.0))"]


def test_python_twin_raises_the_same_error_on_a_change_that_shrinks_mid_apply() -> None:
    class Rows(list):  # type: ignore[type-arg]
        def __bool__(self) -> bool:
            rc.clear()
            return True

    rc = {"atl": Rows([[2.0, 1.0]]), "ltp": 2.0}
    with pytest.raises(RuntimeError, match="dictionary changed size during iteration"):
        cache.RunnerCache(1, 0.0).apply(rc)
    rc = {"atl": Rows([[2.0, 1.0]]), "ltp": 2.0}
    with pytest.raises(RuntimeError, match="dictionary changed size during iteration"):
        _ladders.Runner(1, 0.0).apply(rc)


def test_a_runner_book_built_mid_apply_is_not_served_stale_afterwards() -> None:
    """A `__float__` that asks for the runner's book mid-update caches a half-applied book; the caches are
    dropped again once the update is done."""
    r = _ladders.Runner(1, 0.0)

    class Key(int):
        def __float__(self) -> float:
            r.runner_book()  # caches the book (and the ladder's levels) before the rows are applied
            return 2.0

    r.apply({"atb": [[Key(2), 1.0], [3.0, 4.0]]})
    assert r.ladder("atb") == (PriceSize(3.0, 4.0), PriceSize(2.0, 1.0))
    assert r.runner_book().available_to_back == (PriceSize(3.0, 4.0), PriceSize(2.0, 1.0))


# --- tuples built in C have the tuple hash cache of the CPython they run on -----------------------


def test_decoded_records_hash_like_constructed_ones() -> None:
    """`alloc_record` builds NamedTuples without tuple.__new__; on CPython 3.14+ (tuples cache their
    hash) the cache must start as 'not computed', or hash() is garbage and dict/set lookups miss."""
    codec = default_codec()
    trade = Trade("binance", "BTCUSDT", 1, 2, 3.5, 0.25, "BUY", "7")
    assert hash(codec.decode(codec.encode(trade))) == hash(trade)
    prog = ap.compile_schema(default_codec().registry.current["MarketBook"].schema, RECORD_TYPES)
    level = PriceSize(2.5, 100.0)
    rb = RunnerBook(1, 0.0, "ACTIVE", None, 0.0, (level,), (), ())
    book = MarketBook("1.1", 1, 2, "OPEN", False, 0, 0.0, 1, True, True, 1, (rb,))
    for _ in range(2):  # the second decode takes the levels from the pair cache
        decoded, _end = vm.decode(prog, vm.encode(prog, book))
        assert decoded == book
        assert hash(decoded.runners[0].available_to_back[0]) == hash(level)
        assert hash(decoded.runners[0]) == hash(rb)
        assert hash(decoded) == hash(book)
        assert {decoded: 1}[book] == 1


def test_ladder_levels_and_books_hash_like_constructed_ones() -> None:
    r = _ladders.Runner(1, 0.0)
    r.set_status("ACTIVE")
    r.apply({"atb": [[2.5, 100.0]], "ltp": 2.5, "tv": 3.0})
    assert hash(r.ladder("atb")[0]) == hash(PriceSize(2.5, 100.0))
    expected = RunnerBook(1, 0.0, "ACTIVE", 2.5, 3.0, (PriceSize(2.5, 100.0),), (), ())
    assert r.runner_book() == expected
    assert hash(r.runner_book()) == hash(expected)


# --- the pair cache lives in the module's state -------------------------------------------------


def test_pair_cache_belongs_to_the_module_instance() -> None:
    """The two-double record cache was a process-global array holding strong references: entries outlived
    the module (and would be shared by sub-interpreters, each with its own objects). It is module state now:
    dropping the module releases them, and the class they hold can be collected."""
    out = run_child("""
        import weakref
        from typing import NamedTuple
        import ticktape
        import ticktape._avrovm as vm

        class Pair(NamedTuple):
            a: float
            b: float

        prog = (vm.ARRAY, (vm.RECORD, Pair, ((vm.DOUBLE,), (vm.DOUBLE,))))
        data = vm.encode(prog, [Pair(1.0, 2.0), Pair(3.0, 4.0)])
        first = vm.decode(prog, data)[0]
        assert vm.decode(prog, data)[0][0] is first[0], "the pair cache is not in use"
        ref = weakref.ref(Pair)
        del Pair, prog, first
        del sys.modules["ticktape._avrovm"], ticktape._avrovm, vm
        for _ in range(5):  # the module is a cycle (through its functions); then the class is one
            gc.collect()
        print("released" if ref() is None else "kept alive")
    """, prelude="import gc, sys\n")  # (the codec would hold the module)
    assert out.strip() == "released"


SUB_CODE = """\
from typing import NamedTuple
import ticktape._avrovm as vm
class Pair(NamedTuple):
    a: float
    b: float
prog = (vm.ARRAY, (vm.RECORD, Pair, ((vm.DOUBLE,), (vm.DOUBLE,))))
data = vm.encode(prog, [Pair(float(i), 1.0) for i in range(5000)])
assert vm.decode(prog, data)[0] == vm.decode(prog, data)[0]
"""


def test_avrovm_in_a_sub_interpreter_does_not_touch_the_main_interpreters_objects() -> None:
    """A sub-interpreter (3.11's `_xxsubinterpreters`, one with its own GIL from 3.12, 3.13's `_interpreters`)
    imports its own module instance, so has its own pair cache: decoding there, ending the interpreter, then
    decoding here is safe."""
    out = run_child(f"""
        SUB_CODE = {SUB_CODE!r}
        try:
            import _interpreters as interpreters  # 3.13+
        except ImportError:
            try:
                import _xxsubinterpreters as interpreters  # 3.11, 3.12
            except ImportError:
                print("no sub-interpreters"); sys.exit(0)
        interp = interpreters.create()  # 3.12+: an isolated one (its own GIL), which the module declares it supports
        run = getattr(interpreters, "exec", None) or interpreters.run_string
        failed = run(interp, SUB_CODE)  # 3.11 raises on failure; 3.13 returns what failed
        if failed is not None:
            raise SystemExit(f"the sub-interpreter failed: {{failed}}")
        interpreters.destroy(interp)
        from typing import NamedTuple
        import ticktape._avrovm as vm
        class Pair(NamedTuple):
            a: float
            b: float
        prog = (vm.ARRAY, (vm.RECORD, Pair, ((vm.DOUBLE,), (vm.DOUBLE,))))
        for k in range(20):  # evicts whatever the cache holds
            data = vm.encode(prog, [Pair(float(i), float(k)) for i in range(5000)])
            assert vm.decode(prog, data)[0] == tuple(Pair(float(i), float(k)) for i in range(5000))
        gc.collect()
        print("ok")
    """)
    if out.strip() == "no sub-interpreters":
        pytest.skip("this CPython has no sub-interpreter module")
    assert out.strip() == "ok"


# --- split_market_line's skip_value, decode_columns' buffers ----------------------------------------


@pytest.mark.parametrize("line", [
    b'{"op":"mcm","clk":"\\',  # a backslash as the line's last byte, inside a skipped string
    b'{"op":"mcm","x":["\\',
    b'{"op":"mcm","x":"a\\"',
    b'{"op":"mcm","mc":[{"id":"1.1","x":"\\',
])
def test_split_market_line_refuses_a_line_ending_in_an_escape(line: bytes) -> None:
    """`skip_value` stepped over an escape's two bytes even when only one was left, pointing past the end
    of the buffer (harmless only because bytes objects carry a trailing NUL). Not taken: orjson reports it."""
    assert _ladders.split_market_line(line) is None


def test_decode_columns_allocates_string_payloads_by_what_the_block_holds() -> None:
    """Each string column (and the key column) allocated the whole rest of the input for its payload:
    a block of short strings in a large buffer cost columns x buffer size. It now grows as it is filled."""
    import tracemalloc

    trade_prog = ap.compile_schema(default_codec().registry.current["Trade"].schema, RECORD_TYPES)
    entry_prog = (ap.RECORD, None, ((ap.UNION, ((ap.NULL,), (ap.STRING,)), None), (ap.UNION, (trade_prog,), None)))
    trade = Trade("binance", "BTCUSDT", 1, 2, 3.5, 0.25, "BUY", "7")
    one = vm.encode(entry_prog, ("k", trade))
    count = 1000
    block = one * count + b"\x00" * (20 << 20)  # 20 MiB after the entries: 'the rest of the block'
    tracemalloc.start()
    try:
        res = vm.decode_columns(entry_prog, block, 0, count)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert res is not None and res[3] == len(one) * count
    assert peak < 2 << 20, f"decode_columns of {len(one) * count} bytes peaked at {peak / 2**20:.1f} MiB"
