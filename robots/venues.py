"""Venues by name: a registry of venue kinds, built from plain settings and recorded so a replay rebuilds them.

`make_venue("crypto", {"taker_fee": "0.0005", "place_latency_ns": "1000000"})`. A `VenueKind`
says how to build a venue of that kind from its settings, which money model (ledger) its runs
use, which class its venues are (so the manifest names the kind of a venue object), and
whether it is simulated. Built in: `crypto` (`robots.sim.crypto`), `betfair`
(`robots.sim.betfair`), `naive` (`robots.sim.naive`, tests); a venue module imports only when
a venue of its kind is built. Another venue is one `register_venue(...)` call, made by the
module that defines it (import that module before using the name; with `sweep(workers > 1)`,
in the workers too, e.g. at the module level of the robot's module).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from robots.api import Robot, RobotError
from robots.ledger import Ledger, LedgerLike, SettlementLedger
from robots.sim.base import SimVenue

__all__ = [  # and VENUES, the registered names (a module __getattr__, so it follows register_venue)
    "VenueKind", "coerce_setting", "default_venue", "ledger_for", "live_venue", "make_venue", "register_venue",
    "unregister_venue", "venue_kind", "venue_kind_of", "venue_names", "venue_spec",
]

VenueFactory = Callable[[dict[str, object]], SimVenue]
"""Settings (already coerced by `coerce_setting`) -> a fresh venue."""


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


@dataclass(frozen=True, kw_only=True)
class VenueKind:
    """One kind of venue: its name, how to build one, its money model, how to recognise its venues.

    `venue_class` is the class the factory makes, or its `"module:QualName"` (so a kind is
    registered without importing its module); a venue object is of this kind when its class is
    exactly that one (a subclass behaves differently, so it is a kind of its own). `simulated`
    is False for a live venue, which `make_venue` (backtests) refuses.
    """

    name: str
    factory: VenueFactory
    venue_class: type | str = ""
    ledger: Callable[[], LedgerLike] = Ledger
    simulated: bool = True

    @property
    def class_path(self) -> str:
        """`"module:QualName"` of the venues this kind makes ("" when not given)."""
        cls = self.venue_class
        return cls if isinstance(cls, str) else _class_path(cls)


_KINDS: dict[str, VenueKind] = {}
_BY_CLASS: dict[str, VenueKind] = {}


def register_venue(kind: VenueKind, *, replace: bool = False) -> VenueKind:
    """Add a venue kind under `kind.name`; a name (or venue class) already taken fails unless `replace`."""
    if not kind.name:
        raise RobotError("a venue kind needs a name")
    path = kind.class_path
    if not replace:
        if kind.name in _KINDS:
            raise RobotError(f"venue {kind.name!r} is already registered; pass replace=True to replace it")
        if path in _BY_CLASS:
            raise RobotError(f"venue class {path} is already registered as {_BY_CLASS[path].name!r}")
    old = _KINDS.get(kind.name)
    if old is not None and old.class_path:
        _BY_CLASS.pop(old.class_path, None)
    _KINDS[kind.name] = kind
    if path:
        _BY_CLASS[path] = kind
    return kind


def unregister_venue(name: str) -> VenueKind:
    """Remove the venue kind `name` (plugins and tests); returns it."""
    kind = venue_kind(name)
    del _KINDS[name]
    if kind.class_path and _BY_CLASS.get(kind.class_path) is kind:
        del _BY_CLASS[kind.class_path]
    return kind


def venue_names() -> tuple[str, ...]:
    """The registered venue kind names, in registration order."""
    return tuple(_KINDS)


def __getattr__(name: str) -> tuple[str, ...]:
    if name == "VENUES":  # the registered names, read at the time of use (it grows with register_venue)
        return venue_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def venue_kind(name: str) -> VenueKind:
    """The registered kind `name`; an unknown name is a RobotError listing the known ones."""
    kind = _KINDS.get(name)
    if kind is None:
        raise RobotError(f"unknown venue {name!r}; known: {', '.join(_KINDS) or 'none'}")
    return kind


def venue_kind_of(venue: object) -> VenueKind | None:
    """The registered kind whose venues are of exactly `venue`'s class, else None."""
    return _BY_CLASS.get(_class_path(type(venue)))


# --------------------------------------------------------------------------- the built-in kinds


def _crypto(settings: dict[str, object]) -> SimVenue:
    from robots.sim.crypto import CryptoVenue, CryptoVenueConfig

    return CryptoVenue(CryptoVenueConfig.from_mapping(settings))


def _betfair(settings: dict[str, object]) -> SimVenue:
    from robots.sim.betfair import BetfairSimConfig, BetfairSimVenue

    return BetfairSimVenue(BetfairSimConfig(**settings))  # type: ignore[arg-type]


def _naive(settings: dict[str, object]) -> SimVenue:
    from robots.sim.naive import NaiveVenue

    return NaiveVenue(**settings)  # type: ignore[arg-type]


register_venue(VenueKind(name="crypto", factory=_crypto, venue_class="robots.sim.crypto:CryptoVenue"))
register_venue(VenueKind(name="betfair", factory=_betfair, venue_class="robots.sim.betfair:BetfairSimVenue",
                         ledger=SettlementLedger))
register_venue(VenueKind(name="naive", factory=_naive, venue_class="robots.sim.naive:NaiveVenue"))


def _paper(settings: dict[str, object]) -> SimVenue:
    from robots.live.gateway import PaperVenue

    return PaperVenue(settings)


register_venue(VenueKind(name="paper", factory=_paper, venue_class="robots.live.gateway:PaperVenue", simulated=False))
"""The live gateway's simulated venue (`ticktape gateway --venue paper`): crypto and Betfair matching."""


# --------------------------------------------------------------------------- building and recording


def coerce_setting(value: object) -> object:
    """`--venue-param` strings -> int / bool / float when they look like one, else the string."""
    if not isinstance(value, str):
        return value
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def make_venue(name: str, settings: Mapping[str, object] | None = None) -> SimVenue:
    """A fresh simulated venue of kind `name` configured by `settings` (strings are coerced)."""
    kind = venue_kind(name)
    if not kind.simulated:
        raise RobotError(f"venue {name!r} is live; a backtest needs a simulated venue "
                         f"({', '.join(k.name for k in _KINDS.values() if k.simulated)})")
    return _build(kind, settings)


def _build(kind: VenueKind, settings: Mapping[str, object] | None) -> SimVenue:
    """`kind`'s factory on the coerced settings; a missing module or a bad setting is a RobotError."""
    table = {k: coerce_setting(v) for k, v in (settings or {}).items()}
    try:
        return kind.factory(table)
    except ImportError as exc:
        raise RobotError(f"venue {kind.name!r} is not available: {exc}") from exc
    except TypeError as exc:
        raise RobotError(f"venue {kind.name!r}: bad settings {sorted(table)}: {exc}") from exc


def live_venue(name: str, settings: Mapping[str, object] | None = None) -> SimVenue:
    """A fresh live venue of kind `name` for a gateway (settings coerced); a simulated kind is refused."""
    kind = venue_kind(name)
    if kind.simulated:
        raise RobotError(f"venue {name!r} is simulated (for backtests); live venues: "
                         f"{', '.join(k.name for k in _KINDS.values() if not k.simulated)}")
    return _build(kind, settings)


def default_venue(robot: Robot[Any, Any]) -> str:
    """The venue kind a robot trades on by default: betfair for Betfair robots, else crypto."""
    if robot.venue == "betfair":
        return "betfair"
    try:
        import robots.sim.crypto  # noqa: F401
    except ImportError:
        return "naive"
    return "crypto"


def venue_spec(venue: object, name: str | None = None, settings: Mapping[str, object] | None = None) -> str:
    """Canonical JSON `{"name": ..., "settings": {...}}` for the run manifest.

    The name defaults to the venue's registered kind (by its class), else its class name.
    """
    if settings is None:
        config = getattr(venue, "config", None)
        if callable(config):
            config = config()
        if dataclasses.is_dataclass(config) and not isinstance(config, type):
            settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        elif isinstance(config, Mapping):
            settings = dict(config)
        else:
            settings = {}
    if name is None:
        kind = venue_kind_of(venue)
        name = kind.name if kind is not None else type(venue).__name__
    return json.dumps({"name": name, "settings": {k: _jsonable(v) for k, v in settings.items()}},
                      sort_keys=True, separators=(",", ":"))


def _jsonable(v: object) -> object:
    if isinstance(v, bool | int | float | str) or v is None:
        return v
    return str(v)  # Fractions / Decimals keep their exact text


def ledger_for(venue: object) -> LedgerLike:
    """The money model for a venue: its own `ledger` if it has one, else its kind's.

    The kind is the registered one of the venue's class, else the one named by its `venue`
    attribute (e.g. a Betfair venue subclass with `venue == "betfair"`); unknown venues get the
    linear ledger (cash + position x mark).
    """
    own = getattr(venue, "ledger", None)
    if own is not None:
        return own  # type: ignore[no-any-return]
    kind = venue_kind_of(venue)
    if kind is None:
        named = getattr(venue, "venue", None)
        kind = _KINDS.get(named) if isinstance(named, str) else None
    return kind.ledger() if kind is not None else Ledger()
