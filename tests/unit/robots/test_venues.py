"""The venue registry: built-in kinds, a registered kind used by name, errors that list the known names."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from robots import venues
from robots.api import RobotError
from robots.backtest import backtest, find_run, runner_for_run
from robots.ledger import Ledger, SettlementLedger
from robots.sim.betfair import BetfairSimVenue
from robots.sim.crypto import CryptoVenue
from robots.sim.naive import NaiveVenue
from robots.venues import (
    VenueKind,
    ledger_for,
    make_venue,
    register_venue,
    unregister_venue,
    venue_kind,
    venue_kind_of,
    venue_names,
    venue_spec,
)
from ticktape.demo import synthetic_trades
from ticktape.tape import open_tape

PARAMS = {"fast": "5", "slow": "20"}


@dataclass
class HalfNaive(NaiveVenue):
    """A venue of its own kind (a subclass is not `naive`): the naive venue with a `tag` setting."""

    tag: str = ""

    def config(self) -> dict[str, object]:
        return {**super().config(), "tag": self.tag}


@pytest.fixture
def half_naive() -> Iterator[VenueKind]:
    kind = register_venue(VenueKind(name="half_naive", factory=lambda s: HalfNaive(**s),  # type: ignore[arg-type]
                                    venue_class=HalfNaive, ledger=Ledger))
    yield kind
    unregister_venue("half_naive")


@pytest.mark.parametrize(("name", "cls", "ledger"), [("crypto", CryptoVenue, Ledger),
                                                     ("betfair", BetfairSimVenue, SettlementLedger),
                                                     ("naive", NaiveVenue, Ledger)])
def test_built_in_kinds(name: str, cls: type, ledger: type) -> None:
    venue = make_venue(name)
    assert type(venue) is cls and venue_kind_of(venue) is venue_kind(name)
    assert json.loads(venue_spec(venue))["name"] == name
    assert type(ledger_for(venue)) is ledger
    assert name in venue_names() and name in venues.VENUES


def test_unknown_name_lists_the_known_ones(half_naive: VenueKind) -> None:
    with pytest.raises(RobotError, match=r"unknown venue 'nope'; known: crypto, betfair, naive, paper, half_naive"):
        make_venue("nope")


def test_paper_is_a_live_kind_for_gateways_only() -> None:
    from robots.live.gateway import PaperVenue
    from robots.venues import live_venue

    with pytest.raises(RobotError, match=r"venue 'paper' is live; a backtest needs a simulated venue"):
        make_venue("paper")
    with pytest.raises(RobotError, match=r"venue 'crypto' is simulated \(for backtests\); live venues: paper"):
        live_venue("crypto")
    paper = live_venue("paper", {"crypto.taker_fee": "0.001"})
    assert type(paper) is PaperVenue and venue_kind_of(paper) is venue_kind("paper")
    assert paper.settings == {"crypto.taker_fee": 0.001}
    with pytest.raises(RobotError, match=r"paper venue setting 'taker_fee': use crypto.<setting> or betfair"):
        live_venue("paper", {"taker_fee": "1"})


def test_bad_settings_name_the_venue() -> None:
    with pytest.raises(RobotError, match=r"venue 'naive': bad settings \['colour'\]"):
        make_venue("naive", {"colour": "red"})


def test_a_registered_kind_backtests_by_name_and_replays(half_naive: VenueKind, tmp_path: Path) -> None:
    trades = synthetic_trades(3_000)
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    tape.append("md.sim.trade", trades)
    res = backtest("ema_cross", tape=tape, params=PARAMS, venue="half_naive",
                   venue_settings={"latency": "5", "tag": "x"}, out_tape=tape, run_id="r-1")
    alone = backtest("ema_cross", events=trades, params=PARAMS, venue=NaiveVenue(latency=5), keep=False)
    assert int(res.summary["intents"]) > 0 and res.summary["intents_sha256"] == alone.summary["intents_sha256"]
    manifest, _ = find_run(tape, "r-1")
    assert json.loads(manifest.venue) == {"name": "half_naive", "settings": {"latency": "5", "tag": "x"}}
    runner, source = runner_for_run(tape, manifest)  # the replay rebuilds the venue by its kind's name
    assert type(runner.venue) is HalfNaive and runner.venue.tag == "x" and runner.venue.latency == 5
    assert runner.run(source).intents_sha256 == res.summary["intents_sha256"]
    tape.close()


def test_venue_spec_and_ledger_of_an_unregistered_object() -> None:
    class Elsewhere(BetfairSimVenue):
        pass

    venue = Elsewhere()
    assert venue_kind_of(venue) is None
    assert json.loads(venue_spec(venue))["name"] == "Elsewhere"
    assert type(ledger_for(venue)) is SettlementLedger  # its `venue` attribute names the betfair kind
    assert type(ledger_for(object())) is Ledger


def test_a_taken_name_or_class_needs_replace(half_naive: VenueKind) -> None:
    with pytest.raises(RobotError, match="already registered"):
        register_venue(VenueKind(name="half_naive", factory=half_naive.factory))
    with pytest.raises(RobotError, match="already registered as 'half_naive'"):
        register_venue(VenueKind(name="other", factory=half_naive.factory, venue_class=HalfNaive))
    again = register_venue(VenueKind(name="half_naive", factory=half_naive.factory, venue_class=HalfNaive,
                                     ledger=SettlementLedger), replace=True)
    assert venue_kind("half_naive") is again and type(ledger_for(HalfNaive())) is SettlementLedger


def test_a_live_kind_is_refused_by_backtests() -> None:
    register_venue(VenueKind(name="live_test", factory=lambda s: NaiveVenue(), simulated=False))
    try:
        with pytest.raises(RobotError, match="'live_test' is live; a backtest needs a simulated venue"):
            make_venue("live_test")
    finally:
        unregister_venue("live_test")
    assert "live_test" not in venue_names()
