"""Betfair market definitions (stream `marketDefinition`, catalogue JSON) -> `MarketDefinition` events. Pure."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ticktape.events import KeyLineSelection, MarketDefinition, RunnerDefinition


def iso_ns(text: str | None) -> int | None:
    """Betfair's ISO time ('2022-04-19T18:26:00.000Z') as integer ns; None stays None."""
    if not text:
        return None
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    # Integer arithmetic: timestamp() is a float and would lose the sub-microsecond digits.
    return (int(dt.replace(microsecond=0).timestamp()) * 1_000_000 + dt.microsecond) * 1000


def _runner(rd: dict[str, Any], names: dict[int, str] | None) -> RunnerDefinition:
    sid = int(rd["id"])
    return RunnerDefinition(
        sid, float(rd.get("hc", 0)), str(rd.get("status", "ACTIVE")), int(rd.get("sortPriority", 0)),
        rd.get("name") or (names.get(sid) if names else None),
        rd.get("adjustmentFactor"), rd.get("bsp"), iso_ns(rd.get("removalDate")))


def _opt_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _ladder_type(ladder: Any) -> str | None:
    """`priceLadderDefinition` / `priceLadderDescription` (`{"type": "CLASSIC"}`) -> its type."""
    return _opt_str(ladder.get("type")) if isinstance(ladder, dict) else None


def _regulators(value: Any) -> tuple[str, ...] | None:
    """Stream `regulators` (a list) or the catalogue's single `regulator` (a string) as a tuple."""
    if value is None:
        return None
    return (str(value),) if isinstance(value, str) else tuple(str(r) for r in value)


def _key_line(md: dict[str, Any]) -> tuple[KeyLineSelection, ...] | None:
    """The key line of a line/handicap market: the stream's `keyLineDefinition.kl` (`{id, hc}` items)
    or the betting API's `keyLineDescription.keyLine` (`{selectionId, handicap}` items)."""
    stream = md.get("keyLineDefinition")
    if isinstance(stream, dict) and stream.get("kl") is not None:
        return tuple(KeyLineSelection(int(k["id"]), float(k.get("hc") or 0)) for k in stream["kl"])
    api = md.get("keyLineDescription")
    if isinstance(api, dict) and api.get("keyLine") is not None:
        return tuple(KeyLineSelection(int(k["selectionId"]), float(k.get("handicap") or 0)) for k in api["keyLine"])
    return None


def from_stream(market_id: str, md: dict[str, Any], ts_event: int, ts_recv: int,
                names: dict[int, str] | None = None, market_name: str | None = None) -> MarketDefinition:
    """A stream `marketDefinition` (as in historical files and live `mcm`) as an event.

    `names` (selection id -> runner name) and `market_name` come from the catalogue when known;
    the stream itself carries `eventName`/`name` only in some files (Betfair PRO data).
    """
    return MarketDefinition(
        market_id, ts_event, ts_recv, str(md.get("eventId", "")), str(md.get("eventTypeId", "")),
        md.get("eventName"), md.get("name") or market_name, str(md.get("marketType", "")),
        md.get("countryCode"), md.get("venue"), iso_ns(md.get("marketTime")) or 0, iso_ns(md.get("suspendTime")),
        iso_ns(md.get("settledTime")), str(md.get("status", "UNKNOWN")), bool(md.get("inPlay")),
        int(md.get("betDelay") or 0), bool(md.get("turnInPlayEnabled")), str(md.get("bettingType", "")),
        int(md.get("numberOfWinners") or 0), int(md.get("version") or 0), str(md.get("timezone", "")),
        tuple(_runner(rd, names) for rd in md.get("runners", ())),
        bsp_market=_opt_bool(md.get("bspMarket")), bsp_reconciled=_opt_bool(md.get("bspReconciled")),
        discount_allowed=_opt_bool(md.get("discountAllowed")),
        market_base_rate=_opt_float(md.get("marketBaseRate")), open_date=iso_ns(md.get("openDate")),
        persistence_enabled=_opt_bool(md.get("persistenceEnabled")),
        price_ladder_type=_ladder_type(md.get("priceLadderDefinition")), race_type=_opt_str(md.get("raceType")),
        regulators=_regulators(md.get("regulators")), runners_voidable=_opt_bool(md.get("runnersVoidable")),
        key_line=_key_line(md), number_of_runners=_opt_int(md.get("numberOfRunners")),
        number_of_active_runners=_opt_int(md.get("numberOfActiveRunners")),
        last_match_time=iso_ns(md.get("lastMatchTime")))


def from_catalogue(cat: dict[str, Any], ts_event: int, ts_recv: int) -> MarketDefinition:
    """A `listMarketCatalogue` entry (the `*.catalogue.json` files, the catalogue poller) as an event.

    The catalogue has no status, version or bet delay: they are reported as the catalogue
    knows them (status 'CATALOGUE', version 0); the stream's definitions carry the live values.
    Its description's single `regulator` becomes `regulators`, `priceLadderDescription` the ladder
    type, the event's `openDate` the open date; what it does not carry (bsp_reconciled,
    runners_voidable, the runner counts, ...) is null.
    """
    desc = cat.get("description") or {}
    event = cat.get("event") or {}
    event_type = cat.get("eventType") or {}
    runners = tuple(
        RunnerDefinition(int(r["selectionId"]), float(r.get("handicap", 0)), "ACTIVE", int(r.get("sortPriority", 0)),
                         r.get("runnerName"), None, None, None)
        for r in cat.get("runners", ()))
    return MarketDefinition(
        str(cat["marketId"]), ts_event, ts_recv, str(event.get("id", "")), str(event_type.get("id", "")),
        event.get("name"), cat.get("marketName"), str(desc.get("marketType", "")), event.get("countryCode"),
        event.get("venue"), iso_ns(desc.get("marketTime") or cat.get("marketStartTime")) or 0,
        iso_ns(desc.get("suspendTime")), iso_ns(desc.get("settleTime")), "CATALOGUE", False, 0,
        bool(desc.get("turnInPlayEnabled")), str(desc.get("bettingType", "")), 0, 0,
        str(event.get("timezone", "")), runners,
        bsp_market=_opt_bool(desc.get("bspMarket")), discount_allowed=_opt_bool(desc.get("discountAllowed")),
        market_base_rate=_opt_float(desc.get("marketBaseRate")), open_date=iso_ns(event.get("openDate")),
        persistence_enabled=_opt_bool(desc.get("persistenceEnabled")),
        price_ladder_type=_ladder_type(desc.get("priceLadderDescription")), race_type=_opt_str(desc.get("raceType")),
        regulators=_regulators(desc.get("regulator")), key_line=_key_line(desc))


def runner_names(cat: dict[str, Any]) -> dict[int, str]:
    """Selection id -> runner name from a catalogue entry."""
    return {int(r["selectionId"]): str(r["runnerName"]) for r in cat.get("runners", ()) if "runnerName" in r}
