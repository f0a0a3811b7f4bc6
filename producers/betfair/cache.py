"""A market's book state built from Betfair stream market changes (`mc`), the way betfairlightweight builds it.

Pure and deterministic: `MarketCache.apply(mc, pt, ts_recv)` applies one market change and returns
the `MarketBook` after it. It mirrors betfairlightweight's `MarketBookCache` (listener defaults:
`calculate_market_tv=False`, `cumulative_runner_tv=False`) rule for rule:

* ladders are dicts keyed by price (`atb`, `atl`, `trd`, `spb`, `spl`: `[price, size]`) or by
  position (`batb`, `batl`, `bdatb`, `bdatl`: `[level, price, size]`); size 0 deletes the level;
  an empty `trd` list clears the traded ladder; the dict is re-sorted only when a new key arrives
  (back ladders best = highest price first, lay ladders lowest first, traded ascending);
* a book's back/lay side is the full-depth ladder when it has levels, else best display offers,
  else best offers (as betfairlightweight's `serialise_available_to_back`);
* `tv` on the market or a runner replaces the total; `ltp` replaces the last traded price;
* starting prices (MarketBook v2): `spn`/`spf` replace the near/far price (Betfair's "NaN"/"Infinity"
  words as those floats: the fields are marked `ticktape.nonfinite`); the book's `sp_back_stake_taken`
  is the `spl` ladder (ascending) and `sp_lay_liability_taken` the `spb` ladder (highest first), as
  betfairlightweight's serialise pairs them (`backStakeTaken` <- spl, `layLiabilityTaken` <- spb);
* a runner seen in `rc` before any definition is added with what the change carries;
* a `marketDefinition` replaces the market fields and each runner's status.

Why not betfairlightweight itself: building its `MarketBook` resources costs ~400 µs per update;
this cache keeps each runner's `RunnerBook` and rebuilds only runners an update touches, and keeps
`PriceSize` tuples per level so an unchanged level is never rebuilt. The equivalence with
betfairlightweight is checked update by update on the real recorded markets (tests).

C twin: `FAST` is `producers/betfair/_ladders.c` when it is built and `TICKTAPE_NO_CEXT` is not 1:
its `Runner` replaces `RunnerCache` (same rules; ~5x faster, the per-level work was most of an
import), `apply_changes` the runner loop of `fold`, `encode_book` writes a book's Avro bytes
straight from the ladders for `encoded_book`, and `split_market_line` parses a line's runner
ladders into plain doubles (`StreamDecoder.decode_line`; orjson parses the rest). Both twins
are checked against each other and against betfairlightweight; a start-up self-check turns the
C twin off should its book bytes ever differ from the codec's (a schema change).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from ticktape.cext import optional_extension
from ticktape.errors import EncodeError
from ticktape.events import MarketBook, PriceSize, RunnerBook

if TYPE_CHECKING:
    from ticktape.codec import Codec

_new = tuple.__new__  # builds NamedTuples without their Python-level __new__ (per-level hot path)

UNKNOWN = "UNKNOWN"
"""Status of a market or runner before any definition said otherwise (betfairlightweight: None)."""


_NUMBER = frozenset((int, float))


def _is_number(x: object) -> bool:
    """A JSON number: an int or a float, not a bool (as the C twin takes them)."""
    return isinstance(x, int | float) and not isinstance(x, bool)


def _check_rows(name: str, rows: Any, width: int) -> None:
    """Raise what the C twin raises for a malformed ladder delta (same classes, same words)."""
    if not isinstance(rows, list | tuple):
        raise TypeError(f"{name}: expected a list of rows, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, list | tuple):
            raise TypeError(f"{name} row {i}: expected a list, got {type(row).__name__}")
        if len(row) != width:
            raise ValueError(f"{name} row {i}: expected {width} values, got {len(row)}")
        for value, what in ((row[0], "position" if width == 3 else "price"), (row[-1], "size"),
                            (row[1], "price")):
            if not _is_number(value):
                raise TypeError(f"{name} row {i}: {what} must be a number, got {type(value).__name__}")


SP_WORDS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
"""Betfair sends a starting price it cannot compute (no SP bets yet, or one side only) as these JSON
strings; the book holds them as the doubles they name (the schema's type), the C twin too."""


def sp_value(value: Any) -> Any:
    """A stream `spn`/`spf` as the book holds it: NaN/Infinity words as floats, anything else as sent
    (a value the schema cannot hold fails at encoding, as a bad `ltp` does)."""
    if type(value) is str:
        return SP_WORDS.get(value, value)
    return value


class Ladder:
    """Levels keyed by price (or position), kept sorted, each level a ready `PriceSize`."""

    __slots__ = ("by_key", "clear_on_empty", "levels", "name", "reverse", "triple")

    def __init__(self, reverse: bool, triple: bool = False, clear_on_empty: bool = False, name: str = "") -> None:
        self.by_key: dict[float, PriceSize] = {}
        self.levels: tuple[PriceSize, ...] = ()
        self.reverse = reverse
        self.triple = triple  # [position, price, size] rows (best offers) instead of [price, size]
        self.clear_on_empty = clear_on_empty  # traded volume: an empty list means 'cleared'
        self.name = name  # the stream's name for it (atb, ...), for errors

    def update(self, rows: list[list[float]]) -> None:
        """Apply a ladder delta: each row replaces its level; size 0 removes it.

        A malformed row (not a list of numbers) raises what the C twin raises, after the rows before
        it were applied, as in the C twin: the hot loops only compare types, `_check_rows` words it.
        """
        if not rows:
            if self.clear_on_empty:
                self.by_key = {}
                self.levels = ()
            return
        width = 3 if self.triple else 2
        if type(rows) is not list:
            _check_rows(self.name, rows, width)  # raises unless a tuple of good rows
        book = self.by_key
        n = len(book)
        pop = book.pop
        deleted = 0
        number = _NUMBER
        try:
            # Rows are unpacked as they come (orjson gives lists; any other iterable of the right length
            # gets through too); a value of another type than int/float goes to _check_rows, which raises
            # unless it is a subclass of them; an unpacking error is reworded by _check_rows below.
            if self.triple:
                for key, price, size in rows:
                    if type(key) not in number or type(price) not in number or type(size) not in number:
                        _check_rows(self.name, rows, 3)
                    if size:
                        book[key] = _new(PriceSize, (price, size))
                    elif pop(key, None) is not None:
                        deleted += 1
            else:
                for key, size in rows:
                    if type(key) not in number or type(size) not in number:
                        _check_rows(self.name, rows, 2)
                    if size:
                        book[key] = _new(PriceSize, (key, size))
                    elif pop(key, None) is not None:
                        deleted += 1
        except (TypeError, ValueError):
            _check_rows(self.name, rows, width)  # the C twin's error for the first bad row
            raise
        finally:  # also after a bad row: the levels before it stay applied and in order, as in C
            if len(book) + deleted > n:
                # New levels were appended at the dict's end: restore price order.
                self.by_key = book = dict(sorted(book.items(), reverse=self.reverse))
            self.levels = tuple(book.values())


class RunnerCache:
    """One runner's state and its last built `RunnerBook` (None when an update touched it)."""

    __slots__ = ("atb", "atl", "batb", "batl", "bdatb", "bdatl", "book", "handicap", "ladders", "ltp",
                 "selection_id", "spb", "spf", "spl", "spn", "status", "trd", "tv")

    def __init__(self, selection_id: int, handicap: float) -> None:
        self.selection_id = selection_id
        self.handicap = handicap
        self.status: str | None = None
        self.ltp: float | None = None
        self.tv: float = 0
        self.spn: float | None = None
        self.spf: float | None = None
        self.atb = Ladder(True, name="atb")
        self.atl = Ladder(False, name="atl")
        self.trd = Ladder(False, clear_on_empty=True, name="trd")
        self.batb = Ladder(False, True, name="batb")
        self.batl = Ladder(False, True, name="batl")
        self.bdatb = Ladder(False, True, name="bdatb")
        self.bdatl = Ladder(False, True, name="bdatl")
        self.spb = Ladder(True, name="spb")
        self.spl = Ladder(False, name="spl")
        self.ladders = {"atb": self.atb, "atl": self.atl, "trd": self.trd, "batb": self.batb, "batl": self.batl,
                        "bdatb": self.bdatb, "bdatl": self.bdatl, "spb": self.spb, "spl": self.spl}
        self.book: RunnerBook | None = None

    def apply(self, rc: dict[str, Any]) -> None:
        """Apply one runner change (`rc` entry)."""
        self.book = None
        ladders = self.ladders
        for name, value in rc.items():
            ladder = ladders.get(name)
            if ladder is not None:
                ladder.update(value)
            elif name == "ltp":
                self.ltp = value
            elif name == "tv":
                self.tv = value
            elif name == "spn":
                self.spn = sp_value(value)
            elif name == "spf":
                self.spf = sp_value(value)
            # "id" and "hc" identify the runner; unknown fields are ignored like betfairlightweight does.

    def set_status(self, status: str | None) -> None:
        """The runner's status from a market definition (None = not known yet)."""
        self.status = status
        self.book = None

    def ladder(self, name: str) -> tuple[PriceSize, ...]:
        """One ladder's levels by its stream name (`atb`, `batl`, ...), best first."""
        return self.ladders[name].levels

    def runner_book(self) -> RunnerBook:
        """The runner's book now (cached until the next change)."""
        book = self.book
        if book is None:
            back = self.atb.levels or self.bdatb.levels or self.batb.levels
            lay = self.atl.levels or self.bdatl.levels or self.batl.levels
            # spl -> back stake taken, spb -> lay liability taken: betfairlightweight's mapping
            # (its serialise pairs them this way; a backer's SP stake meets the SP lay side).
            book = self.book = _new(RunnerBook, (
                self.selection_id, self.handicap, self.status or UNKNOWN, self.ltp, self.tv, back, lay,
                self.trd.levels, self.spn, self.spf, self.spl.levels, self.spb.levels))
        return book


def _codec() -> Codec:
    from ticktape.codec import default_codec  # deferred: the codec loads every schema

    return default_codec()


_BOOK_HEADER = b""  # C3 01 + MarketBook's fingerprint, set by _load_fast()


class MarketCache:
    """One market's state; `apply` folds a market change into it and returns the new `MarketBook`."""

    __slots__ = ("bet_delay", "complete", "cross_matching", "definition", "in_play", "market_id", "n_active",
                 "runner_list", "runners", "status", "total_matched", "version")

    def __init__(self, market_id: str) -> None:
        self.market_id = market_id
        self.definition: dict[str, Any] | None = None
        self.status = UNKNOWN
        self.in_play = False
        self.bet_delay = 0
        self.version = 0
        self.complete = False
        self.cross_matching = False
        self.n_active = 0
        self.total_matched: float = 0
        self.runners: dict[tuple[int, float], RunnerCache] = {}
        self.runner_list: list[RunnerCache] = []

    def _runner(self, selection_id: int, handicap: float) -> RunnerCache:
        key = (selection_id, handicap)
        runner = self.runners.get(key)
        if runner is None:
            runner = self.runners[key] = FAST.Runner(selection_id, handicap) if FAST else RunnerCache(
                selection_id, handicap)
            self.runner_list.append(runner)
        return runner

    def apply_definition(self, definition: dict[str, Any]) -> None:
        """Take a `marketDefinition`: market fields and runners' statuses (new runners are added)."""
        self.definition = definition
        self.status = definition.get("status") or UNKNOWN
        self.in_play = bool(definition.get("inPlay"))
        self.bet_delay = definition.get("betDelay") or 0
        self.version = definition.get("version") or 0
        self.complete = bool(definition.get("complete"))
        self.cross_matching = bool(definition.get("crossMatching"))
        self.n_active = definition.get("numberOfActiveRunners") or 0
        for rd in definition.get("runners", ()):
            self._runner(rd["id"], rd.get("hc", 0)).set_status(rd.get("status"))

    def fold(self, mc: dict[str, Any]) -> None:
        """Fold one market change (`mc` entry of an `mcm`) into the state."""
        definition = mc.get("marketDefinition")
        if definition is not None:
            self.apply_definition(definition)
        tv = mc.get("tv")
        if tv is not None:
            self.total_matched = tv
        rcs = mc.get("rc")
        if rcs:
            if FAST is not None:
                FAST.apply_changes(self.runners, self.runner_list, rcs)
                return
            runners = self.runners
            for rc in rcs:
                runner = runners.get((rc["id"], rc.get("hc", 0)))
                if runner is None:
                    runner = self._runner(rc["id"], rc.get("hc", 0))
                runner.apply(rc)

    def book(self, pt: int, ts_recv: int) -> MarketBook:
        """The `MarketBook` now, stamped with the change's publish time `pt` and `ts_recv` (ns)."""
        return _new(MarketBook, (
            self.market_id, pt, ts_recv, self.status, self.in_play, self.bet_delay, self.total_matched,
            self.version, self.complete, self.cross_matching, self.n_active,
            tuple([r.runner_book() for r in self.runner_list])))

    def encoded_book(self, pt: int, ts_recv: int) -> bytes:
        """`Codec.encode(self.book(pt, ts_recv))`, written straight from the C ladders when they are in
        use (no Python objects per level; the importer's path), else through the codec. A value the
        schema cannot hold (a string `ltp`, a `betDelay` beyond 32 bits) is an EncodeError either way."""
        if FAST is None:
            return _codec().encode(self.book(pt, ts_recv))
        try:
            return FAST.encode_book(  # type: ignore[no-any-return]
                _BOOK_HEADER, self.market_id, pt, ts_recv, self.status, self.in_play, self.bet_delay,
                self.total_matched, self.version, self.complete, self.cross_matching, self.n_active,
                self.runner_list)
        except (TypeError, ValueError, OverflowError) as exc:  # what the codec raises for the same book
            raise EncodeError(f"MarketBook: {exc}") from exc

    def apply(self, mc: dict[str, Any], pt: int, ts_recv: int) -> MarketBook:
        """Fold one market change published at `pt` (ns); the book after it."""
        self.fold(mc)
        return self.book(pt, ts_recv)

    @property
    def closed(self) -> bool:
        """True once the definition says CLOSED."""
        return self.status == "CLOSED"


# What the self-check encodes: every ladder kind, a removed runner with a handicap, a runner without a
# last traded price, ints where Betfair sends whole numbers, starting prices (one only, one a word).
_SELF_CHECK_RUNNERS: tuple[tuple[int, float, str], ...] = ((1, 0, "ACTIVE"), (2, 0.5, "REMOVED"))
_SELF_CHECK_CHANGES = [
    {"id": 1, "ltp": 2.5, "tv": 3, "atb": [[2.5, 1.5], [2.4, 2]], "atl": [[2.6, 9.25], [1000, 1]],
     "trd": [[2.5, 3]], "batb": [[0, 2.5, 1.5]], "spb": [[1.01, 5], [1.5, 2]], "spl": [[4, 1], [3, 2]],
     "spn": 2.48, "spf": 3},
    {"id": 2, "hc": 0.5, "bdatb": [[1, 3.1, 4], [0, 3.2, 5]], "batl": [[0, 3.4, 1]], "spf": "Infinity"},
]


def _load_fast() -> Any:
    """The C twin (`_ladders`) if it is built, allowed, and writes exactly the codec's bytes; else None.

    The C encoder lays MarketBook out by hand; this start-up check (one book, ~0.1 ms) keeps a
    schema change from ever writing different bytes: the pure-Python twin and the codec run then.
    """
    global _BOOK_HEADER
    _ladders = optional_extension("producers.betfair._ladders")
    if _ladders is None:
        return None
    _ladders.configure(PriceSize, RunnerBook, UNKNOWN)
    codec = _codec()
    _BOOK_HEADER = b"\xc3\x01" + codec.fingerprint(MarketBook)
    runners: dict[tuple[int, float], Any] = {}
    runner_list: list[Any] = []
    for selection_id, handicap, status in _SELF_CHECK_RUNNERS:
        runner = runners[(selection_id, handicap)] = _ladders.Runner(selection_id, handicap)
        runner.set_status(status)
        runner_list.append(runner)
    _ladders.apply_changes(runners, runner_list, _SELF_CHECK_CHANGES)
    fields: tuple[Any, ...] = ("1.1", 5, 6, "OPEN", True, 1, 12, 7, True, True, 2)
    book = MarketBook(*fields, tuple(r.runner_book() for r in runner_list))  # type: ignore[call-arg]
    if _ladders.encode_book(_BOOK_HEADER, *fields, runner_list) != codec.encode(book):
        warnings.warn("producers.betfair: the C MarketBook encoder disagrees with the codec (schema changed?); "
                      "using the pure-Python twin", RuntimeWarning, stacklevel=1)
        return None
    return _ladders


FAST = _load_fast()
"""The C twin (`producers.betfair._ladders`) when in use, else None (the Python classes above run)."""
