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
* a runner seen in `rc` before any definition is added with what the change carries;
* a `marketDefinition` replaces the market fields and each runner's status.

Why not betfairlightweight itself: building its `MarketBook` resources costs ~400 µs per update;
this cache keeps each runner's `RunnerBook` and rebuilds only runners an update touches, and keeps
`PriceSize` tuples per level so an unchanged level is never rebuilt. The equivalence with
betfairlightweight is checked update by update on the real recorded markets (tests).
"""

from __future__ import annotations

from typing import Any

from ticktape.events import MarketBook, PriceSize, RunnerBook

_new = tuple.__new__  # builds NamedTuples without their Python-level __new__ (per-level hot path)

UNKNOWN = "UNKNOWN"
"""Status of a market or runner before any definition said otherwise (betfairlightweight: None)."""


class Ladder:
    """Levels keyed by price (or position), kept sorted, each level a ready `PriceSize`."""

    __slots__ = ("by_key", "clear_on_empty", "levels", "reverse", "triple")

    def __init__(self, reverse: bool, triple: bool = False, clear_on_empty: bool = False) -> None:
        self.by_key: dict[float, PriceSize] = {}
        self.levels: tuple[PriceSize, ...] = ()
        self.reverse = reverse
        self.triple = triple  # [position, price, size] rows (best offers) instead of [price, size]
        self.clear_on_empty = clear_on_empty  # traded volume: an empty list means 'cleared'

    def update(self, rows: list[list[float]]) -> None:
        """Apply a ladder delta: each row replaces its level; size 0 removes it."""
        if not rows:
            if self.clear_on_empty:
                self.by_key = {}
                self.levels = ()
            return
        book = self.by_key
        n = len(book)
        pop = book.pop
        deleted = 0
        if self.triple:
            for key, price, size in rows:
                if size:
                    book[key] = _new(PriceSize, (price, size))
                elif pop(key, None) is not None:
                    deleted += 1
        else:
            for key, size in rows:
                if size:
                    book[key] = _new(PriceSize, (key, size))
                elif pop(key, None) is not None:
                    deleted += 1
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
        self.atb = Ladder(True)
        self.atl = Ladder(False)
        self.trd = Ladder(False, clear_on_empty=True)
        self.batb = Ladder(False, True)
        self.batl = Ladder(False, True)
        self.bdatb = Ladder(False, True)
        self.bdatl = Ladder(False, True)
        self.spb = Ladder(True)
        self.spl = Ladder(False)
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
                self.spn = value
            elif name == "spf":
                self.spf = value
            # "id" and "hc" identify the runner; unknown fields are ignored like betfairlightweight does.

    def runner_book(self) -> RunnerBook:
        """The runner's book now (cached until the next change)."""
        book = self.book
        if book is None:
            back = self.atb.levels or self.bdatb.levels or self.batb.levels
            lay = self.atl.levels or self.bdatl.levels or self.batl.levels
            book = self.book = _new(RunnerBook, (
                self.selection_id, self.handicap, self.status or UNKNOWN, self.ltp, self.tv, back, lay,
                self.trd.levels))
        return book


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
            runner = self.runners[key] = RunnerCache(selection_id, handicap)
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
            runner = self._runner(rd["id"], rd.get("hc", 0))
            runner.status = rd.get("status")
            runner.book = None

    def apply(self, mc: dict[str, Any], pt: int, ts_recv: int) -> MarketBook:
        """Fold one market change (`mc` entry of an `mcm`) published at `pt` (ns); the book after it."""
        definition = mc.get("marketDefinition")
        if definition is not None:
            self.apply_definition(definition)
        tv = mc.get("tv")
        if tv is not None:
            self.total_matched = tv
        rcs = mc.get("rc")
        if rcs:
            runners = self.runners
            for rc in rcs:
                runner = runners.get((rc["id"], rc.get("hc", 0)))
                if runner is None:
                    runner = self._runner(rc["id"], rc.get("hc", 0))
                runner.apply(rc)
        return _new(MarketBook, (
            self.market_id, pt, ts_recv, self.status, self.in_play, self.bet_delay, self.total_matched,
            self.version, self.complete, self.cross_matching, self.n_active,
            tuple([r.runner_book() for r in self.runner_list])))

    @property
    def closed(self) -> bool:
        """True once the definition says CLOSED."""
        return self.status == "CLOSED"
