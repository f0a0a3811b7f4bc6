"""The local Binance's books: orders, fills, balances and positions, and a tiny deterministic matching model.

The test sets the market (`set_price(symbol, bid, ask)`); a MARKET order, or a LIMIT order that
crosses, fills at once in full at the opposite best price (TAKER); a resting LIMIT order fills in
full at its own price when a later `set_price` crosses it (MAKER). IOC/FOK orders that do not
cross expire. Spot and USD-M futures keep separate orders (ids, client ids) and accounts: spot
balances per asset, futures signed positions per symbol. Everything is `Decimal`.

`Ledger` does no I/O; each change returns the user-data messages Binance would push
(executionReport / ORDER_TRADE_UPDATE, outboundAccountPosition / ACCOUNT_UPDATE).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

FEE_RATE = Decimal("0.001")  # commission in the quote asset, taker and maker alike


def now_ms() -> int:
    """The venue's clock."""
    return int(time.time() * 1000)


def s(x: Decimal) -> str:
    """Binance's decimal text (8 places, as the REST API writes them)."""
    return f"{x:.8f}"


@dataclass
class VenueOrder:
    """One order as the venue keeps it."""

    market: str
    order_id: int
    client_order_id: str
    symbol: str
    side: str
    type: str
    time_in_force: str
    price: Decimal
    qty: Decimal
    executed: Decimal = Decimal(0)
    cum_quote: Decimal = Decimal(0)
    status: str = "NEW"
    time: int = field(default_factory=now_ms)
    update_time: int = field(default_factory=now_ms)

    @property
    def is_open(self) -> bool:
        """Open: it can still fill or be cancelled."""
        return self.status in ("NEW", "PARTIALLY_FILLED")

    def rest(self) -> dict[str, Any]:
        """The order as `GET order` answers it (spot and futures share these fields; futures adds some)."""
        body: dict[str, Any] = {
            "symbol": self.symbol, "orderId": self.order_id, "clientOrderId": self.client_order_id,
            "price": s(self.price), "origQty": s(self.qty), "executedQty": s(self.executed), "status": self.status,
            "timeInForce": self.time_in_force, "type": self.type, "side": self.side, "time": self.time,
            "updateTime": self.update_time,
        }
        if self.market == "spot":
            body.update(orderListId=-1, cummulativeQuoteQty=s(self.cum_quote), isWorking=self.is_open,
                        workingTime=self.time, selfTradePreventionMode="NONE")
        else:
            avg = self.cum_quote / self.executed if self.executed else Decimal(0)
            body.update(avgPrice=s(avg), cumQuote=s(self.cum_quote), origType=self.type, positionSide="BOTH",
                        reduceOnly=False, closePosition=False, stopPrice="0", workingType="CONTRACT_PRICE",
                        priceProtect=False)
        return body


@dataclass
class VenueFill:
    """One trade of one of our orders."""

    market: str
    trade_id: int
    order_id: int
    symbol: str
    side: str
    price: Decimal
    qty: Decimal
    commission: Decimal
    maker: bool
    time: int

    def rest(self) -> dict[str, Any]:
        """As `GET myTrades` (spot) / `GET userTrades` (futures) lists it."""
        body: dict[str, Any] = {"symbol": self.symbol, "id": self.trade_id, "orderId": self.order_id,
                                "price": s(self.price), "qty": s(self.qty), "quoteQty": s(self.price * self.qty),
                                "commission": s(self.commission), "commissionAsset": "USDT", "time": self.time}
        if self.market == "spot":
            body.update(isBuyer=self.side == "BUY", isMaker=self.maker, isBestMatch=True, orderListId=-1)
        else:
            body.update(buyer=self.side == "BUY", maker=self.maker, side=self.side, positionSide="BOTH",
                        realizedPnl="0")
        return body


@dataclass
class Symbol:
    """A listed symbol: assets and filters as exchangeInfo lists them."""

    base: str
    quote: str
    tick: str = "0.01"
    min_price: str = "0.01"
    max_price: str = "1000000"
    step: str = "0.001"
    min_qty: str = "0.001"
    max_qty: str = "1000"
    min_notional: str = "5"

    def filters(self, market: str) -> list[dict[str, Any]]:
        """exchangeInfo's `filters` of this symbol."""
        lot = {"minQty": self.min_qty, "maxQty": self.max_qty, "stepSize": self.step}
        out: list[dict[str, Any]] = [
            {"filterType": "PRICE_FILTER", "minPrice": self.min_price, "maxPrice": self.max_price,
             "tickSize": self.tick},
            {"filterType": "LOT_SIZE", **lot}, {"filterType": "MARKET_LOT_SIZE", **lot}]
        if market == "spot":
            out.append({"filterType": "NOTIONAL", "minNotional": self.min_notional, "applyMinToMarket": True,
                        "maxNotional": "9000000", "applyMaxToMarket": False, "avgPriceMins": 5})
        else:
            out.append({"filterType": "MIN_NOTIONAL", "notional": self.min_notional})
        return out


class Ledger:
    """Orders, fills and accounts of both markets, and the matching. Callers hold the venue's lock."""

    def __init__(self, symbols: dict[str, Symbol], balances: dict[str, Decimal]) -> None:
        self.symbols = symbols
        self.orders: list[VenueOrder] = []
        self.fills: list[VenueFill] = []
        self.balances = dict(balances)  # spot, per asset
        self.positions: dict[str, Decimal] = {}  # futures, per symbol, signed
        self.prices: dict[str, tuple[Decimal, Decimal]] = {}
        self._next_order = {"spot": 1000, "futures": 8_000_000}
        self._next_trade = {"spot": 500, "futures": 900_000}

    # --- lookups -------------------------------------------------------------------------------------

    def find(self, market: str, symbol: str, *, client_id: str | None = None,
             order_id: int | None = None) -> VenueOrder | None:
        """The latest order of `market`/`symbol` with this client id (or order id)."""
        for o in reversed(self.orders):
            if o.market == market and o.symbol == symbol and (
                    (client_id is not None and o.client_order_id == client_id) or o.order_id == order_id):
                return o
        return None

    def open_orders(self, market: str, symbol: str | None = None) -> list[VenueOrder]:
        """Open orders of `market` (of one symbol or all)."""
        return [o for o in self.orders if o.market == market and o.is_open and symbol in (None, o.symbol)]

    # --- changes ------------------------------------------------------------------------------------

    def new_order(self, market: str, symbol: str, client_id: str, side: str, type_: str, tif: str, price: Decimal,
                  qty: Decimal) -> tuple[VenueOrder, list[dict[str, Any]]]:
        """Accept an order (checks done by the caller) and match it; returns it and the stream messages."""
        self._next_order[market] += 1
        o = VenueOrder(market, self._next_order[market], client_id, symbol, side, type_, tif, price, qty)
        self.orders.append(o)
        msgs = [self.order_message(o, "NEW")]
        msgs += self._match(o, taker=True)
        if o.is_open and (type_ == "MARKET" or tif in ("IOC", "FOK")):
            o.status = "EXPIRED"
            msgs.append(self.order_message(o, "EXPIRED"))
        return o, msgs

    def cancel(self, o: VenueOrder, cancel_id: str = "") -> list[dict[str, Any]]:
        """Cancel an open order (`cancel_id`: the cancel request's own client id, spot's `c`)."""
        o.status = "CANCELED"
        o.update_time = now_ms()
        return [self.order_message(o, "CANCELED", cancel_id=cancel_id)]

    def amend(self, o: VenueOrder, price: Decimal, qty: Decimal) -> list[dict[str, Any]]:
        """Futures modify: new price and quantity, then match again (it loses its queue place)."""
        o.price, o.qty, o.update_time = price, qty, now_ms()
        return [self.order_message(o, "AMENDMENT"), *self._match(o, taker=True)]

    def set_price(self, symbol: str, bid: Decimal, ask: Decimal) -> list[dict[str, Any]]:
        """The market moves: resting orders it crosses fill at their own price (MAKER)."""
        self.prices[symbol] = (bid, ask)
        msgs: list[dict[str, Any]] = []
        for o in list(self.orders):
            if o.symbol == symbol and o.is_open:
                msgs += self._match(o, taker=False)
        return msgs

    def crosses(self, symbol: str, side: str, price: Decimal) -> bool:
        """Whether a limit order at `price` would match the current market at once."""
        if symbol not in self.prices:
            return False
        bid, ask = self.prices[symbol]
        return price >= ask if side == "BUY" else price <= bid

    def _match(self, o: VenueOrder, *, taker: bool) -> list[dict[str, Any]]:
        if o.symbol not in self.prices:
            return []
        bid, ask = self.prices[o.symbol]
        if o.type == "MARKET":
            price = ask if o.side == "BUY" else bid
        elif (o.side == "BUY" and o.price >= ask) or (o.side == "SELL" and o.price <= bid):
            price = (ask if o.side == "BUY" else bid) if taker else o.price
        else:
            return []
        qty = o.qty - o.executed
        self._next_trade[o.market] += 1
        t = now_ms()
        fill = VenueFill(o.market, self._next_trade[o.market], o.order_id, o.symbol, o.side, price, qty,
                         (price * qty * FEE_RATE).quantize(Decimal("0.00000001")), not taker, t)
        self.fills.append(fill)
        o.executed += qty
        o.cum_quote += price * qty
        o.status = "FILLED"
        o.update_time = t
        sym = self.symbols[o.symbol]
        sign = 1 if o.side == "BUY" else -1
        if o.market == "spot":
            self.balances[sym.base] = self.balances.get(sym.base, Decimal(0)) + sign * qty
            self.balances[sym.quote] = self.balances.get(sym.quote, Decimal(0)) - sign * price * qty - fill.commission
        else:
            self.positions[o.symbol] = self.positions.get(o.symbol, Decimal(0)) + sign * qty
            self.balances["USDT"] = self.balances.get("USDT", Decimal(0)) - fill.commission
        return [self.order_message(o, "TRADE", fill), self.account_message(o.market, o.symbol)]

    # --- stream messages ------------------------------------------------------------------------------

    def order_message(self, o: VenueOrder, x: str, fill: VenueFill | None = None,
                      cancel_id: str = "") -> dict[str, Any]:
        """executionReport (spot) / ORDER_TRADE_UPDATE (futures) of one execution."""
        t = o.update_time
        last_px, last_qty = (fill.price, fill.qty) if fill else (Decimal(0), Decimal(0))
        body: dict[str, Any] = {
            "s": o.symbol, "c": o.client_order_id, "S": o.side, "o": o.type, "f": o.time_in_force, "q": s(o.qty),
            "p": s(o.price), "x": x, "X": o.status, "i": o.order_id, "l": s(last_qty), "z": s(o.executed),
            "L": s(last_px), "n": s(fill.commission) if fill else "0", "N": "USDT" if fill else None,
            "T": t, "t": fill.trade_id if fill else -1, "m": bool(fill and fill.maker),
        }
        if o.market == "spot":
            if x == "CANCELED":
                body.update(c=cancel_id or f"cancel{o.order_id}", C=o.client_order_id)
            else:
                body["C"] = ""
            return {"e": "executionReport", "E": t, **body, "r": "NONE", "O": o.time, "Z": s(o.cum_quote)}
        return {"e": "ORDER_TRADE_UPDATE", "E": t, "T": t, "o": {**body, "ap": s(o.cum_quote / o.executed)
                                                                   if o.executed else "0", "ps": "BOTH"}}

    def account_message(self, market: str, symbol: str) -> dict[str, Any]:
        """outboundAccountPosition (spot: the symbol's two assets) / ACCOUNT_UPDATE (futures: its position)."""
        t = now_ms()
        if market == "spot":
            sym = self.symbols[symbol]
            return {"e": "outboundAccountPosition", "E": t, "u": t,
                    "B": [{"a": a, "f": s(self.balances.get(a, Decimal(0))), "l": s(Decimal(0))}
                          for a in (sym.base, sym.quote)]}
        return {"e": "ACCOUNT_UPDATE", "E": t, "T": t, "a": {
            "m": "ORDER", "B": [{"a": "USDT", "wb": s(self.balances.get("USDT", Decimal(0))),
                                 "cw": s(self.balances.get("USDT", Decimal(0))), "bc": "0"}],
            "P": [{"s": symbol, "pa": s(self.positions.get(symbol, Decimal(0))), "ep": "0", "cr": "0", "up": "0",
                   "mt": "cross", "iw": "0", "ps": "BOTH"}]}}
