"""The Robot API: typed params, the fold, client order ids, timers, state serialisation, registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from robots.api import Context, Params, Rng, Robot, RobotError, Subscription, parse_param_args
from robots.registry import get_robot, robot_class
from robots.runner import Runner, SubscriptionFilter
from ticktape.events import MarketBook, MarketDefinition, Trade

T0 = 1_700_000_000_000_000_000


@dataclass(frozen=True)
class P(Params):
    n: int = 1
    x: float = 0.5
    flag: bool = False
    name: str = "a"
    mode: Literal["fast", "slow"] = "fast"
    levels: tuple[float, ...] = ()
    cap: int | None = None


def test_params_parse_strings_into_declared_types() -> None:
    p = P.parse(parse_param_args(["n=3", "x=2", "flag=yes", "name=b", "mode=slow", "levels=1.5;2", "cap=none"]))
    assert p == P(n=3, x=2.0, flag=True, name="b", mode="slow", levels=(1.5, 2.0), cap=None)
    assert P.parse({"n": 4, "x": 1}).x == 1.0  # typed values from a config file
    assert p.to_json() == ('{"cap":null,"flag":true,"levels":[1.5,2.0],"mode":"slow","n":3,"name":"b","x":2.0}')
    assert P.parse({k: v for k, v in p.to_dict().items()}) == p  # the manifest's JSON parses back


@pytest.mark.parametrize(("args", "message"), [
    ({"m": "1"}, "unknown param 'm'"),
    ({"n": "1.5"}, "param 'n': expected int"),
    ({"flag": "maybe"}, "param 'flag': expected bool"),
    ({"mode": "medium"}, "param 'mode': 'medium' is not one of fast, slow"),
])
def test_bad_params_name_the_param(args: dict[str, str], message: str) -> None:
    with pytest.raises(RobotError, match=message):
        P.parse(args)


def test_param_args_need_k_equals_v() -> None:
    with pytest.raises(RobotError, match="k=v"):
        parse_param_args(["fast"])


def test_rng_is_seeded_and_serialisable() -> None:
    a, b = Rng.from_seed(42), Rng.from_seed(42)
    xs = [a.random() for _ in range(5)]
    assert xs == [b.random() for _ in range(5)]
    assert all(0 <= x < 1 for x in xs) and len(set(xs)) == 5
    assert Rng.from_seed(43).random() != Rng.from_seed(42).random()
    c = Rng(a.state)
    assert c.random() == a.random()


@dataclass
class S:
    prices: list[float] = field(default_factory=list)
    rng: Rng = field(default_factory=lambda: Rng.from_seed(1))


class Echo(Robot[P, S]):
    """Places one limit order per trade and a timer; uses the RNG from the state."""

    name = "echo"
    params_type = P

    def init_state(self) -> S:
        return S()

    def on_trade(self, state: S, event: Trade, ctx: Context) -> None:
        state.prices.append(event.price)
        ctx.buy(event.instrument, 1.0, price=event.price - state.rng.random())
        ctx.sell(event.instrument, 1.0)
        ctx.set_timer("t", event.ts_event + 10)


def trade(i: int, price: float = 10.0) -> Trade:
    return Trade("sim", "X", T0 + i, T0 + i, price, 1.0, "BUY", str(i))


def test_fold_ids_and_timers() -> None:
    bot = Echo(robot_id="r7")
    ctx = Context(bot.robot_id, bot.venue)
    _, out = bot.step(bot.init_state(), trade(0), seq=12, ctx=ctx)
    assert [o.client_order_id for o in out] == ["r7-12-0", "r7-12-1"]
    assert [(o.order_type, o.side) for o in out] == [("LIMIT", "BUY"), ("MARKET", "SELL")]  # type: ignore[union-attr]
    assert all(o.ts_event == o.ts_recv == T0 for o in out)
    assert ctx.timers[0].ts == T0 + 10 and ctx.timers[0].name == "t"
    with pytest.raises(RobotError, match="in the past"):
        ctx.set_timer("late", T0 - 1)


def test_handlers_only_for_overridden_hooks() -> None:
    assert set(Echo().handlers()) == {Trade}
    assert Echo().gate() is None


def test_state_json_round_trip_and_determinism() -> None:
    bot = Echo()
    state = bot.init_state()
    for i in range(3):
        state, _ = bot.step(state, trade(i, 10.0 + i), seq=i)
    text = bot.state_to_json(state)
    assert bot.state_from_json(text) == state
    assert text == bot.state_to_json(bot.state_from_json(text))


class BadState(Robot[Params, object]):
    def init_state(self) -> object:
        return {"when": object()}


def test_runner_refuses_a_state_that_does_not_serialise() -> None:
    with pytest.raises(RobotError, match="does not serialise"):
        Runner(BadState())


def test_betfair_subscription_filter_uses_market_definitions() -> None:
    f = SubscriptionFilter(Subscription(topics=("m",), event_type_ids=("7",), market_types=("WIN",),
                                        countries=("GB",), in_play=False))

    def md(market: str, etype: str, mtype: str, country: str) -> MarketDefinition:
        return MarketDefinition(market, T0, T0, "e", etype, None, None, mtype, country, None, T0, None, None, "OPEN",
                                False, 0, True, "ODDS", 1, 1, "UTC", ())

    def mb(market: str, in_play: bool = False) -> MarketBook:
        return MarketBook(market, T0, T0, "OPEN", in_play, 0, 0.0, 1, True, False, 0, ())

    assert not f(mb("1.1"))  # definition not seen yet
    f(md("1.1", "7", "WIN", "GB"))
    f(md("1.2", "7", "PLACE", "GB"))
    f(md("1.3", "4339", "WIN", "GB"))
    assert f(mb("1.1")) and not f(mb("1.1", in_play=True))
    assert not f(mb("1.2")) and not f(mb("1.3"))


def test_registry_loads_builtins_and_module_class() -> None:
    assert robot_class("ema_cross").name == "ema_cross"
    # this test module must stay importable as a robot module (pure): pytest may import it under another name
    loaded = robot_class("tests.unit.robots.test_api:Echo")
    assert loaded.__name__ == "Echo" and loaded.name == "echo" and issubclass(loaded, Robot)
    r = get_robot("ema_cross", {"fast": "3", "slow": "7"}, robot_id="mine")
    assert r.robot_id == "mine" and r.params.fast == 3  # type: ignore[attr-defined]
    with pytest.raises(RobotError, match="unknown robot"):
        robot_class("nope")
    with pytest.raises(RobotError, match=r"not a robots\.api\.Robot"):
        robot_class("ticktape.events:Trade")


def test_purity_check_refuses_io_clock_and_randomness(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from robots.purity import problems_in_source

    found = problems_in_source("import time\nfrom os.path import join\nimport datetime\n"
                               "x = datetime.datetime.now()\nopen('f')\nh = hash('a')\nimport ticktape.events\n"
                               "from ticktape.tape import open_tape\nimport random\n", "bot.py")
    assert found == ["bot.py:1: imports time", "bot.py:2: imports from os.path", "bot.py:8: imports from ticktape.tape",
                     "bot.py:9: imports random", "bot.py:4: calls .now() (wall clock)", "bot.py:5: calls open()",
                     "bot.py:6: calls hash()"]
    (tmp_path / "impure_bot.py").write_text(
        "import random\nfrom robots.api import Params, Robot\n\n\n"
        "class Coin(Robot[Params, dict]):\n    def init_state(self) -> dict:\n        return {'x': random.random()}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RobotError, match=r"not pure .*impure_bot.py:1: imports random"):
        robot_class("impure_bot:Coin")
    assert robot_class("impure_bot:Coin", allow_impure=True).__name__ == "Coin"
    for name in ("ema_cross", "market_maker", "betfair_back_favourite", "betfair_lay_lowest"):
        robot_class(name)  # the built-ins are pure
