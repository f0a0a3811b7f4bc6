"""The run's ledger (`robots.ledger.Ledger`) against a brute-force twin: every event marked exactly.

The ledger keeps a single open instrument's price extremes as floats between fills and converts
them at the next fill; the twin books every fill and every mark in exact units with
`robots.positions.Ledger` and samples the equity after each one. Both must give the same PnL,
fees, realized PnL and max drawdown on any sequence, with one or several instruments open,
long or short, flat stretches and repeated prices (the shortcuts that skip conversions).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from robots.control_view import ControlView
from robots.ledger import Ledger, exact
from robots.positions import Ledger as Book
from ticktape.events import Event, OrderFilled, Trade

T0 = 1_700_000_000_000_000_000
DAY = 86_400 * 10**9


def brute_force(events: list[Event]) -> dict[str, str]:
    """Exact book, equity sampled after every fill and every mark while anything is held."""
    book = Book()
    peak = drawdown = 0
    held: dict[str, int] = {}
    for e in events:
        if type(e) is OrderFilled:
            book.apply_fill(e)
            held[e.instrument] = book.position(e.robot, e.instrument).quantity
        elif any(held.values()):
            assert isinstance(e, Trade)
            book.mark(e.instrument, round(e.price * 10**9))
        else:
            continue
        equity = book.equity()
        peak = max(peak, equity)
        drawdown = max(drawdown, peak - equity)
    return {"pnl_exact": exact(book.equity()), "fees_exact": exact(book.fees()),
            "max_drawdown_exact": exact(drawdown)}


def run_ledger(events: list[Event]) -> dict[str, str]:
    """What the runner does: fills booked, marks only while a position is open."""
    ledger = Ledger()
    for e in events:
        if type(e) is OrderFilled:
            ledger.on_fill(e)
        elif ledger.open:
            ledger.on_market(e)
    s = ledger.summary()
    return {k: s[k] for k in ("pnl_exact", "fees_exact", "max_drawdown_exact")}


prices = st.sampled_from([99.5, 100.0, 100.0, 100.25, 101.0, 97.75, 0.1, 1234.5678])
step = st.one_of(
    st.tuples(st.just("trade"), st.sampled_from(["A", "B"]), prices),
    st.tuples(st.just("fill"), st.sampled_from(["A", "B"]), prices, st.sampled_from(["BUY", "SELL"]),
              st.sampled_from([0.5, 1.0, 2.0, 0.001]), st.sampled_from([0.0, 0.01, 0.25])),
)


def events_of(steps: list[tuple]) -> list[Event]:
    out: list[Event] = []
    for i, s in enumerate(steps):
        ts = T0 + i * DAY // 3  # crosses day boundaries: the daily closes roll on fills and marks
        if s[0] == "trade":
            out.append(Trade("sim", s[1], ts, ts, s[2], 1.0, "BUY", str(i)))
        else:
            _, inst, price, side, size, fee = s
            out.append(OrderFilled("r", f"c{i}", None, "sim", inst, ts, ts, f"f{i}", side, price, size, fee,
                                   "TAKER", 0.0))
    return out


@settings(max_examples=400, deadline=None)
@given(st.lists(step, max_size=40))
def test_the_ledger_equals_exact_marking_of_every_event(steps: list[tuple]) -> None:
    events = events_of(steps)
    assert run_ledger(events) == brute_force(events)


def test_flat_segments_and_no_adverse_move() -> None:
    # long at 100 with the price never moving, then a rise only (no adverse move), then a short that only falls
    steps = [("fill", "A", 100.0, "BUY", 1.0, 0.0), ("trade", "A", 100.0), ("trade", "A", 100.0),
             ("fill", "A", 100.0, "SELL", 1.0, 0.0), ("fill", "A", 100.0, "BUY", 1.0, 0.0),
             ("trade", "A", 101.0), ("fill", "A", 101.0, "SELL", 2.0, 0.01), ("trade", "A", 99.5),
             ("fill", "A", 99.5, "BUY", 1.0, 0.0)]
    events = events_of(steps)
    assert run_ledger(events) == brute_force(events)


@given(st.lists(step, max_size=40))
def test_the_controls_positions_are_the_books_quantities(steps: list[tuple]) -> None:
    view = ControlView()
    book = Book()
    for e in events_of(steps):
        if type(e) is OrderFilled:
            view.on_fill(e)
            book.apply_fill(e)
    for inst in ("A", "B"):
        assert view.position_u("r", inst) == book.position("r", inst).quantity
    assert view.instruments_of("r") == {i for i in ("A", "B") if book.position("r", i).quantity}
