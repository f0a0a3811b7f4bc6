"""Binance's trading rules (`exchangeInfo`) as JSON-able data, and the pure exchange-filters control.

`rules_from_exchange_info` keeps what the pre-trade check and the rate limiter need: per symbol
its status and the PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE, MIN_NOTIONAL and NOTIONAL filters,
and the declared `rateLimits`. Numbers stay Binance's decimal strings, so the journaled rules are
exactly the venue's. `check` applies them with `Decimal` arithmetic: a price of 0.3 on a tick of
0.1 is a multiple in decimal and not in binary floating point (0.3 % 0.1 == 0.0999...).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from robots.live.exchange import Refusal
from ticktape.events import PlaceOrder, ReplaceOrder

CONTROL = "exchange_filters"
"""The control name every refusal carries (an `OrderRejected.control`)."""

FILTERS = ("PRICE_FILTER", "LOT_SIZE", "MARKET_LOT_SIZE", "MIN_NOTIONAL", "NOTIONAL")
"""The filters kept (others, e.g. PERCENT_PRICE or MAX_NUM_ORDERS, are left to the venue)."""


def rules_from_exchange_info(info: Mapping[str, Any], market: str) -> dict[str, Any]:
    """The rules of an `exchangeInfo` answer (spot or USD-M futures): JSON-able, decimal strings kept."""
    symbols: dict[str, Any] = {}
    for s in info.get("symbols") or ():
        filters = {f["filterType"]: {k: v for k, v in f.items() if k != "filterType"}
                   for f in s.get("filters") or () if f.get("filterType") in FILTERS}
        symbols[str(s["symbol"])] = {"status": str(s.get("status", "")), "base": str(s.get("baseAsset", "")),
                                     "quote": str(s.get("quoteAsset", "")), "filters": filters}
    limits = [{"rateLimitType": str(r["rateLimitType"]), "interval": str(r["interval"]),
               "intervalNum": int(r["intervalNum"]), "limit": int(r["limit"])} for r in info.get("rateLimits") or ()]
    return {"market": market, "symbols": symbols, "rate_limits": limits}


def dec(value: Any) -> Decimal:
    """A number as the decimal it was written as (`repr` of a float is its shortest exact spelling)."""
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value))


def _refuse(reason: str) -> Refusal:
    return Refusal(CONTROL, reason)


def _multiple(value: Decimal, start: Decimal, step: Decimal) -> bool:
    return step <= 0 or (value - start) % step == 0


def _range_and_step(name: str, what: str, value: Decimal, f: Mapping[str, Any], lo: str, hi: str,
                    step: str) -> Refusal | None:
    low, high, inc = dec(f.get(lo, 0)), dec(f.get(hi, 0)), dec(f.get(step, 0))
    if low > 0 and value < low:
        return _refuse(f"{name}: {what} {value} below {lo} {low}")
    if high > 0 and value > high:
        return _refuse(f"{name}: {what} {value} above {hi} {high}")
    if not _multiple(value, low, inc):
        return _refuse(f"{name}: {what} {value} is not {low} plus a multiple of {step} {inc}")
    return None


def check(rules: Mapping[str, Any], intent: PlaceOrder | ReplaceOrder) -> Refusal | None:
    """The first exchange filter `intent` breaks (a `Refusal` naming the filter and the numbers), or None.

    Pure: `rules` is `rules_from_exchange_info`'s answer. A MARKET order's notional is checked
    only when it carries a reference price (> 0) and the filter applies to market orders.
    """
    sym = (rules.get("symbols") or {}).get(intent.instrument)
    if sym is None:
        return _refuse(f"symbol: {intent.instrument} is not listed in exchangeInfo")
    if sym.get("status") not in ("TRADING", ""):
        return _refuse(f"symbol: {intent.instrument} is {sym.get('status')}, not TRADING")
    if intent.order_type not in ("MARKET", "LIMIT", "LIMIT_MAKER"):
        return _refuse(f"order type: {intent.order_type} is not supported on Binance by ticktape "
                       "(MARKET, LIMIT, LIMIT_MAKER)")
    if intent.order_type == "LIMIT_MAKER" and intent.time_in_force in ("IOC", "FOK"):
        return _refuse(f"order type: a LIMIT_MAKER order only rests, it cannot be {intent.time_in_force}")
    try:
        price, qty = dec(intent.price), dec(intent.size)
    except InvalidOperation:
        return _refuse(f"number: price {intent.price} or size {intent.size} is not a finite number")
    if qty <= 0:
        return _refuse(f"LOT_SIZE: quantity {qty} must be positive")
    filters: Mapping[str, Mapping[str, Any]] = sym.get("filters") or {}
    market = intent.order_type == "MARKET"
    if not market:
        if price <= 0:
            return _refuse(f"PRICE_FILTER: price {price} must be positive")
        if "PRICE_FILTER" in filters:
            bad = _range_and_step("PRICE_FILTER", "price", price, filters["PRICE_FILTER"], "minPrice", "maxPrice",
                                  "tickSize")
            if bad:
                return bad
    lots = ["LOT_SIZE"] + (["MARKET_LOT_SIZE"] if market else [])
    for name in lots:
        if name in filters:
            bad = _range_and_step(name, "quantity", qty, filters[name], "minQty", "maxQty", "stepSize")
            if bad:
                return bad
    if market and price <= 0:
        return None
    notional = price * qty
    if "MIN_NOTIONAL" in filters:
        f = filters["MIN_NOTIONAL"]
        low = dec(f.get("minNotional", f.get("notional", 0)))  # spot says minNotional, futures notional
        if (not market or f.get("applyToMarket", True)) and low > 0 and notional < low:
            return _refuse(f"MIN_NOTIONAL: notional {price} x {qty} = {notional} below {low}")
    if "NOTIONAL" in filters:
        f = filters["NOTIONAL"]
        low, high = dec(f.get("minNotional", 0)), dec(f.get("maxNotional", 0))
        if (not market or f.get("applyMinToMarket", True)) and low > 0 and notional < low:
            return _refuse(f"NOTIONAL: notional {price} x {qty} = {notional} below minNotional {low}")
        if (not market or f.get("applyMaxToMarket", False)) and high > 0 and notional > high:
            return _refuse(f"NOTIONAL: notional {price} x {qty} = {notional} above maxNotional {high}")
    return None
