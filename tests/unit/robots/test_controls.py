"""Named pre-trade controls: each one rejects what it should, names itself, and lets the rest pass."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robots.controls import (
    Controls,
    ControlsConfig,
    KillSwitch,
    MaxExposure,
    MaxOrderRate,
    MaxOrderSize,
    MaxPosition,
    MaxRobotExposure,
    PriceBand,
    controls_from_config,
)
from ticktape.errors import ValidationError
from ticktape.events import (
    BookSnapshot,
    CancelOrder,
    Control,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    PlaceOrder,
    PriceSize,
    Quote,
    ReplaceOrder,
    Trade,
)

SEC = 1_000_000_000


def place(cid: str, side: str = "BUY", size: float = 1.0, price: float = 100.0, order_type: str = "LIMIT",
          ts: int = 0, robot: str = "r1", inst: str = "BTCUSDT") -> PlaceOrder:
    return PlaceOrder(robot, cid, "sim", inst, ts, ts, side, order_type, price, size, "GTC")  # type: ignore[arg-type]


def trade(price: float, ts: int = 0, inst: str = "BTCUSDT") -> Trade:
    return Trade("sim", inst, ts, ts, price, 1.0, "BUY", f"t{ts}")


def filled(cid: str, side: str, price: float, size: float, leaves: float = 0.0, robot: str = "r1",
           inst: str = "BTCUSDT") -> OrderFilled:
    return OrderFilled(robot, cid, None, "sim", inst, 0, 0, f"{cid}-1", side, price, size, 0.0, "TAKER",  # type: ignore[arg-type]
                       leaves)


def control(command: str, target: str = "r1", reason: str = "") -> Control:
    return Control(target, 0, 0, command, None, None, reason, "ops")  # type: ignore[arg-type]


def test_max_order_size_names_itself_and_says_why() -> None:
    c = Controls([MaxOrderSize(limit=10.0, per_instrument={"ETHUSDT": 2.0})])
    assert c.check(place("a", size=10.0)) is None
    rej = c.check(place("b", size=10.5, ts=7))
    assert isinstance(rej, OrderRejected)
    assert rej.control == "max_order_size"
    assert rej.reason == "order size 10.5 exceeds max order size 10 for BTCUSDT"
    assert (rej.robot, rej.client_order_id, rej.venue, rej.instrument, rej.ts_event) == ("r1", "b", "sim", "BTCUSDT", 7)
    assert rej.venue_order_id is None
    assert c.check(place("c", size=3.0, inst="ETHUSDT")) is not None
    assert c.check(place("d", size=2.0, inst="ETHUSDT")) is None


def test_cancels_always_pass_even_when_killed() -> None:
    c = Controls([KillSwitch(), MaxOrderSize(limit=0.0)])
    c.on_event(control("KILL"))
    assert c.check(CancelOrder("r1", "a", "sim", "BTCUSDT", 0, 0)) is None


def test_max_position_counts_fills_and_open_orders_worst_case() -> None:
    c = Controls([MaxPosition(limit=5.0)])
    c.on_event(filled("x", "BUY", 100.0, 3.0))
    assert c.check(place("a", size=1.0)) is None  # 3 filled + 1 open = 4
    rej = c.check(place("b", size=1.5))  # 3 + 1 + 1.5 = 5.5
    assert rej is not None and rej.control == "max_position"
    assert "to 5.5, beyond max position 5" in rej.reason
    # selling reduces the long: worst case short is 3 - 8 = -5, allowed
    assert c.check(place("s", side="SELL", size=8.0)) is None
    assert c.check(place("s2", side="SELL", size=0.5)) is not None  # -5.5
    # the open buy is cancelled: room for 2 more
    c.on_event(OrderCancelled("r1", "a", None, "sim", "BTCUSDT", 0, 0, "robot"))
    assert c.check(place("c", size=2.0)) is None


def test_partial_fill_moves_size_from_open_to_position() -> None:
    c = Controls([MaxPosition(limit=4.0)])
    assert c.check(place("a", size=4.0)) is None
    c.on_event(OrderAccepted("r1", "a", "v1", "sim", "BTCUSDT", 0, 0))
    c.on_event(filled("a", "BUY", 100.0, 1.0, leaves=3.0))
    assert c.view.position_u("r1", "BTCUSDT") == 1_000_000_000
    assert c.view.open_u("r1", "BTCUSDT", "BUY") == 3_000_000_000
    assert c.check(place("b", size=0.1)) is not None
    c.on_event(filled("a", "BUY", 100.0, 3.0, leaves=0.0))
    assert c.view.open_orders == {}
    assert c.check(place("c", size=0.1)) is not None  # now 4 filled


def test_venue_rejection_frees_the_pending_order() -> None:
    c = Controls([MaxPosition(limit=1.0)])
    assert c.check(place("a", size=1.0)) is None
    assert c.check(place("b", size=1.0)) is not None
    c.on_event(OrderRejected("r1", "a", None, "sim", "BTCUSDT", 0, 0, "no liquidity"))
    assert c.check(place("b", size=1.0)) is None


def test_replace_is_checked_with_its_new_size() -> None:
    c = Controls([MaxPosition(limit=5.0)])
    assert c.check(place("a", size=2.0)) is None
    c.on_event(OrderAccepted("r1", "a", "v1", "sim", "BTCUSDT", 0, 0))
    bigger = ReplaceOrder("r1", "a", "sim", "BTCUSDT", 1, 1, "BUY", "LIMIT", 100.0, 6.0, "GTC")
    rej = c.check(bigger)
    assert rej is not None and rej.control == "max_position"
    assert c.check(bigger._replace(size=5.0)) is None
    assert c.view.open_u("r1", "BTCUSDT", "BUY") == 5_000_000_000
    # the venue rejects the replace: the original 2 is live again
    c.on_event(OrderRejected("r1", "a", "v1", "sim", "BTCUSDT", 2, 2, "too late"))
    assert c.view.open_u("r1", "BTCUSDT", "BUY") == 2_000_000_000


def test_max_exposure_uses_limit_price_or_reference() -> None:
    c = Controls([MaxExposure(limit=1000.0)])
    assert c.check(place("a", size=10.0, price=100.0)) is None  # 1000
    c.on_event(OrderCancelled("r1", "a", None, "sim", "BTCUSDT", 0, 0))
    rej = c.check(place("b", size=10.0, price=100.01))
    assert rej is not None and rej.control == "max_exposure"
    assert rej.reason == "exposure in BTCUSDT could reach 1000.1, beyond max exposure 1000"
    m = place("m", size=1.0, order_type="MARKET", price=0.0)
    rej = c.check(m)
    assert rej is not None and "no price known" in rej.reason
    c.on_event(trade(999.0))
    assert c.check(m) is None
    assert c.check(place("m2", size=0.01, order_type="MARKET", price=0.0)) is not None  # 1.01 * 999 > 1000


def test_max_robot_exposure_sums_instruments() -> None:
    c = Controls([MaxRobotExposure(limit=1500.0)])
    c.on_event(trade(100.0, inst="BTCUSDT"))
    c.on_event(trade(50.0, inst="ETHUSDT"))
    c.on_event(filled("x", "BUY", 100.0, 10.0))  # 1000 in BTC
    assert c.check(place("a", size=10.0, price=50.0, inst="ETHUSDT")) is None  # +500
    rej = c.check(place("b", size=0.1, price=50.0, inst="ETHUSDT"))  # 1000 + 505
    assert rej is not None and rej.control == "max_robot_exposure"
    assert "1505" in rej.reason
    # another robot is not counted
    assert c.check(place("c", size=10.0, price=50.0, inst="ETHUSDT", robot="r2")) is None


def test_order_rate_window_in_event_time() -> None:
    c = Controls([MaxOrderRate(max_orders=2, window_ns=SEC)])
    assert c.check(place("a", ts=0)) is None
    assert c.check(place("b", ts=SEC // 2)) is None
    rej = c.check(place("c", ts=SEC - 1))
    assert rej is not None and rej.control == "max_order_rate"
    assert rej.reason == "2 orders in the last 1s reach max order rate 2 per 1s"
    assert c.check(place("d", ts=SEC)) is None  # the order at 0 left the window
    assert c.check(place("e", ts=SEC, robot="r2")) is None  # per robot
    # a rejected intent does not count: at 1.5 s the window holds b? no: (0.5, 1.5] holds d only
    assert c.check(place("f", ts=SEC + SEC // 2)) is None


def test_price_band_against_last_trade_and_mid() -> None:
    band = Controls([PriceBand(pct=5.0)])
    assert band.check(place("a", price=1.0)) is None  # no reference yet: passes
    band.on_event(trade(100.0))
    assert band.check(place("b", price=105.0)) is None
    assert band.check(place("c", price=95.0)) is None
    rej = band.check(place("d", price=105.01))
    assert rej is not None and rej.control == "price_band"
    assert rej.reason == "price 105.01 is more than 5% away from the last trade 100 of BTCUSDT"
    assert band.check(place("e", order_type="MARKET", price=0.0)) is None
    mid = Controls([PriceBand(pct=1.0, reference="mid", require_reference=True)])
    rej = mid.check(place("a", price=100.0))
    assert rej is not None and "no reference price" in rej.reason
    mid.on_event(Quote("sim", "BTCUSDT", 0, 0, 99.0, 1.0, 101.0, 2.0))
    assert mid.check(place("b", price=101.0)) is None
    assert mid.check(place("c", price=101.5)) is not None
    mid.on_event(BookSnapshot("sim", "BTCUSDT", 1, 1, 1, (PriceSize(199.0, 1.0),), (PriceSize(201.0, 1.0),)))
    assert mid.check(place("d", price=201.0)) is None


def test_kill_pause_resume() -> None:
    c = Controls([KillSwitch()])
    c.on_event(control("PAUSE"))
    rej = c.check(place("a"))
    assert rej is not None and rej.control == "kill_switch" and rej.reason == "trading paused for r1"
    assert c.check(place("b", robot="r2")) is None
    c.on_event(control("RESUME"))
    assert c.check(place("c")) is None
    c.on_event(control("KILL", target="*", reason="risk limit"))
    rej = c.check(place("d", robot="r2"))
    assert rej is not None and rej.reason == "kill switch engaged for *: risk limit"
    c.on_event(control("RESUME", target="*"))
    assert c.check(place("e")) is not None  # kill is permanent


def test_first_objecting_control_wins() -> None:
    c = Controls([KillSwitch(), MaxOrderSize(limit=1.0), MaxPosition(limit=0.5)])
    rej = c.check(place("a", size=2.0))
    assert rej is not None and rej.control == "max_order_size"
    with pytest.raises(ValueError, match="unique"):
        Controls([MaxOrderSize(limit=1.0), MaxOrderSize(limit=2.0)])


def test_intent_fed_back_through_on_event_is_counted_once() -> None:
    c = Controls([MaxOrderRate(max_orders=2, window_ns=SEC)])
    p = place("a")
    assert c.check(p) is None
    c.on_event(p)
    assert c.check(place("b")) is None


def test_config_builds_named_controls() -> None:
    cfg = ControlsConfig.from_mapping({
        "max_order_size": 10, "max_position": {"default": 5, "ETHUSDT": 50}, "max_orders": 3,
        "orders_window_ns": 2 * SEC, "price_band_pct": 2.5,
    })
    c = cfg.build()
    assert [x.name for x in c.controls] == ["kill_switch", "max_order_size", "max_position", "max_order_rate",
                                            "price_band"]
    assert c.check(place("a", size=6.0)) is not None
    assert c.check(place("b", size=6.0, inst="ETHUSDT")) is None
    with pytest.raises(AttributeError):
        cfg.max_orders = 4  # type: ignore[misc]
    assert [x.name for x in controls_from_config(None).controls] == ["kill_switch"]


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="max_ordr_size"):
        ControlsConfig.from_mapping({"max_ordr_size": 1})
    with pytest.raises(ValidationError, match=r"max_position.*non-negative"):
        ControlsConfig.from_mapping({"max_position": -1})
    with pytest.raises(ValidationError, match="price_band_reference"):
        ControlsConfig.from_mapping({"price_band_reference": "vwap"})
    path = tmp_path / "robot.toml"
    path.write_text('[controls]\nmax_order_size = 2\nmax_orders = 0\n')
    with pytest.raises(ValidationError, match=r"robot.toml \[controls\].*max_orders"):
        ControlsConfig.from_toml(path)
    path.write_text('[controls]\nmax_order_size = 2\nprice_band_pct = 1\n')
    assert ControlsConfig.from_toml(path) == ControlsConfig(max_order_size=2.0, price_band_pct=1.0)


def test_market_data_is_followed_only_when_a_control_prices_with_it() -> None:
    plain = Controls([KillSwitch(), MaxOrderSize(limit=1.0), MaxPosition(limit=1.0), MaxOrderRate(max_orders=5)])
    plain.on_event(trade(100.0))
    assert plain.view.last_trade == {}
    assert Trade not in plain.event_types and OrderFilled in plain.event_types and Control in plain.event_types
    assert not plain.needs_market_data

    class LastTradeSeen:  # a user's own control: assumed to need prices
        name = "last_trade_seen"

        def check(self, intent: PlaceOrder | ReplaceOrder, view: object) -> str | None:
            return None

    custom = Controls([KillSwitch(), LastTradeSeen()])
    custom.on_event(trade(101.0))
    assert custom.view.last_trade == {"BTCUSDT": 101.0}
    banded = Controls([PriceBand(pct=1.0)])
    banded.on_event(trade(102.0))
    assert banded.view.reference_price("BTCUSDT") == 102.0
    assert {Trade, Quote, BookSnapshot} <= banded.event_types
    assert banded.needs_market_data and custom.needs_market_data


actions = st.lists(st.one_of(
    st.tuples(st.just("place"), st.sampled_from(["BUY", "SELL"]), st.integers(1, 16)),
    st.tuples(st.just("accept"), st.integers(0, 30), st.just(0)),
    st.tuples(st.just("fill"), st.integers(0, 30), st.integers(1, 4)),
    st.tuples(st.just("cancel"), st.integers(0, 30), st.just(0)),
    st.tuples(st.just("reject"), st.integers(0, 30), st.just(0)),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(actions)
def test_position_limit_holds_whatever_fills_and_rejects_only_when_needed(seq: list[tuple[str, object, int]]) -> None:
    limit_q = 20  # quarters: max position 5.0
    c = Controls([MaxOrderSize(limit=3.0), MaxPosition(limit=limit_q / 4)])
    open_q: dict[str, tuple[str, int, bool]] = {}  # cid -> (side, leaves in quarters, accepted)
    position_q = 0
    for n, (kind, a, b) in enumerate(seq):
        if kind == "place":
            side, size_q = str(a), b
            cid = f"o{n}"
            same = sum(q for s, q, _ in open_q.values() if s == side)
            worst = position_q + same + size_q if side == "BUY" else position_q - same - size_q
            rej = c.check(place(cid, side=side, size=size_q / 4, ts=n))
            if size_q > 12:
                assert rej is not None and rej.control == "max_order_size"
            elif abs(worst) > limit_q and (worst > 0) == (side == "BUY"):
                assert rej is not None and rej.control == "max_position"
            else:
                assert rej is None
                open_q[cid] = (side, size_q, False)
            if rej is not None:
                c.on_event(rej)  # the runner feeds control rejections back too
        elif open_q:
            cid = sorted(open_q)[int(str(a)) % len(open_q)]
            side, leaves, accepted = open_q[cid]
            if kind == "accept":
                c.on_event(OrderAccepted("r1", cid, None, "sim", "BTCUSDT", n, n))
                open_q[cid] = (side, leaves, True)
            elif kind == "fill":
                q = min(leaves, b)
                position_q += q if side == "BUY" else -q
                c.on_event(filled(cid, side, 100.0, q / 4, leaves=(leaves - q) / 4))
                open_q[cid] = (side, leaves - q, True)
                if leaves == q:
                    del open_q[cid]
            elif kind == "cancel":
                c.on_event(OrderCancelled("r1", cid, None, "sim", "BTCUSDT", n, n))
                del open_q[cid]
            else:  # the venue refuses the place (or, for an accepted order, a cancel: it stays live)
                c.on_event(OrderRejected("r1", cid, None, "sim", "BTCUSDT", n, n, "venue said no"))
                if not accepted:
                    del open_q[cid]
        assert abs(position_q) <= limit_q
        assert c.view.position_u("r1", "BTCUSDT") == position_q * 250_000_000
        for side in ("BUY", "SELL"):
            expected = sum(q for s, q, _ in open_q.values() if s == side) * 250_000_000
            assert c.view.open_u("r1", "BTCUSDT", side) == expected


def test_rejections_of_cancels_and_control_refused_replaces_keep_the_live_order() -> None:
    c = Controls([MaxOrderSize(limit=5.0), MaxPosition(limit=10.0)])
    assert c.check(place("a", size=4.0)) is None
    c.on_event(OrderAccepted("r1", "a", "v1", "sim", "BTCUSDT", 1, 1))
    # a replace the controls refuse: the rejection comes back through on_event, the order stays
    rej = c.check(ReplaceOrder("r1", "a", "sim", "BTCUSDT", 2, 2, "BUY", "LIMIT", 100.0, 6.0, "GTC"))
    assert rej is not None and rej.control == "max_order_size"
    c.on_event(rej)
    assert c.view.open_u("r1", "BTCUSDT", "BUY") == 4_000_000_000
    # the venue refuses a cancel (e.g. it raced a fill): the accepted order stays
    c.on_event(OrderRejected("r1", "a", "v1", "sim", "BTCUSDT", 3, 3, "cancel: too late"))
    assert c.view.open_u("r1", "BTCUSDT", "BUY") == 4_000_000_000
    # the venue refuses a place: forgotten
    assert c.check(place("b", size=1.0)) is None
    c.on_event(OrderRejected("r1", "b", None, "sim", "BTCUSDT", 4, 4, "no liquidity"))
    assert c.view.open_u("r1", "BTCUSDT", "BUY") == 4_000_000_000
