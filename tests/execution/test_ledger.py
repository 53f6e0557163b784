"""The cash/position ledger: examples, and properties over random order streams."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from falcon.domain.events import RejectReason
from falcon.domain.orders import Fill, Side
from falcon.execution.ledger import Ledger, LedgerRejected

TS = datetime(2024, 1, 2)


def fill(side: Side, qty: int, price: float, fee: float = 0.0, ticker: str = "A") -> Fill:
    return Fill(order_id="o", ticker=ticker, side=side, qty=qty, price=price, fee=fee, ts=TS)


def test_round_trip_books_cash_avg_cost_realized_and_fees() -> None:
    ledger = Ledger(cash=10_000)
    ledger.apply(fill(Side.BUY, 10, 100.0, fee=1.0))
    ledger.apply(fill(Side.BUY, 10, 110.0, fee=1.0))
    assert ledger.positions["A"].avg_cost == pytest.approx(105.0)
    assert ledger.cash == pytest.approx(10_000 - 2100 - 2)
    realized = ledger.apply(fill(Side.SELL, 5, 120.0, fee=0.5))
    assert realized == pytest.approx(75.0)
    assert ledger.positions["A"].qty == 15
    assert ledger.positions["A"].avg_cost == pytest.approx(105.0)
    ledger.apply(fill(Side.SELL, 15, 100.0))
    assert "A" not in ledger.positions
    assert ledger.realized_pnl == pytest.approx(75.0 - 75.0)
    assert ledger.fees == pytest.approx(2.5)
    assert ledger.equity() == pytest.approx(10_000 - 2.5)


def test_positions_are_valued_at_the_marks_given_else_the_own_mark_else_their_cost() -> None:
    ledger = Ledger(cash=100_000)
    ledger.apply(fill(Side.BUY, 10, 100.0, ticker="A"))
    ledger.apply(fill(Side.BUY, 20, 50.0, ticker="B"))
    ledger.apply(fill(Side.BUY, 5, 10.0, ticker="C"))
    ledger.mark("A", 101.0)
    ledger.mark("B", 55.0)
    ledger._marks.pop("C")  # a position never marked since (restored from the database)
    marks = {"A": 120.0}
    assert [ledger.price_at(t, marks) for t in "ABC"] == [120.0, 55.0, 10.0]
    assert ledger.price_at("Z", marks) == 0.0  # flat, never marked
    assert ledger.value_at(marks) == pytest.approx(
        sum(p.qty * ledger.price_at(t, marks) for t, p in ledger.positions.items()))
    assert ledger.value_at(marks) == pytest.approx(10 * 120.0 + 20 * 55.0 + 5 * 10.0)


def test_an_unchecked_fill_is_booked_as_it_was_judged_before() -> None:
    # A margin account judged this short on the marks of its moment; replayed without them,
    # the same arithmetic books it (checked, it would be refused here: no room at these marks).
    ledger = Ledger(cash=1_000, allow_short=True)
    short = fill(Side.SELL, 100, 30.0)
    with pytest.raises(LedgerRejected):
        ledger.apply(short)
    assert ledger.cash == 1_000 and not ledger.positions
    ledger.apply(short, checked=False)
    assert ledger.positions["A"].qty == -100 and ledger.cash == pytest.approx(4_000)


def test_long_only_refuses_to_sell_what_it_does_not_hold() -> None:
    ledger = Ledger(cash=1_000)
    with pytest.raises(LedgerRejected) as err:
        ledger.apply(fill(Side.SELL, 1, 10.0))
    assert err.value.reason is RejectReason.NO_SHARES
    ledger.apply(fill(Side.BUY, 3, 10.0))
    assert ledger.check(fill(Side.SELL, 4, 10.0)) is RejectReason.NO_SHARES
    assert ledger.qty("A") == 3


def test_buys_beyond_cash_are_refused_and_change_nothing() -> None:
    ledger = Ledger(cash=1_000)
    assert ledger.check(fill(Side.BUY, 10, 100.0)) is None
    with pytest.raises(LedgerRejected) as err:
        ledger.apply(fill(Side.BUY, 10, 100.0, fee=0.01))
    assert err.value.reason is RejectReason.INSUFFICIENT_CASH
    assert (ledger.cash, ledger.fees, dict(ledger.positions)) == (1_000, 0.0, {})


def test_short_sale_credits_cash_and_needs_margin() -> None:
    ledger = Ledger(cash=1_000, allow_short=True)
    ledger.apply(fill(Side.SELL, 10, 100.0))
    assert (ledger.cash, ledger.qty("A")) == (2_000, -10)
    assert ledger.equity() == pytest.approx(1_000)
    assert ledger.buying_power() == pytest.approx(0.0)
    assert ledger.check(fill(Side.SELL, 1, 100.0, ticker="B")) is RejectReason.INSUFFICIENT_CASH
    # Covering reduces exposure: always allowed, even at a loss.
    ledger.mark("A", 150.0)
    assert ledger.apply(fill(Side.BUY, 10, 150.0)) == pytest.approx(-500.0)
    assert ledger.cash == pytest.approx(500.0)


def test_reversal_through_zero_opens_the_rest_at_the_fill_price() -> None:
    ledger = Ledger(cash=10_000, allow_short=True)
    ledger.apply(fill(Side.BUY, 10, 100.0))
    ledger.apply(fill(Side.SELL, 25, 110.0))
    pos = ledger.positions["A"]
    assert (pos.qty, pos.avg_cost, ledger.realized_pnl) == (-15, 110.0, pytest.approx(100.0))


_fills = st.lists(
    st.tuples(
        st.sampled_from(["A", "B", "C"]),
        st.sampled_from([Side.BUY, Side.SELL]),
        st.integers(1, 60),
        st.floats(1.0, 200.0),
        st.floats(0.0, 5.0),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(stream=_fills, allow_short=st.booleans())
def test_random_streams_keep_the_books_consistent(
    stream: list[tuple[str, Side, int, float, float]], allow_short: bool
) -> None:
    ledger = Ledger(cash=5_000, allow_short=allow_short)
    fees = 0.0
    for ticker, side, qty, price, fee in stream:
        f = fill(side, qty, price, fee, ticker)
        before = (ledger.cash, ledger.fees, dict(ledger.positions))
        reason = ledger.check(f)
        if reason is None:
            ledger.apply(f)
            fees += fee
        else:
            with pytest.raises(LedgerRejected):
                ledger.apply(f)
            assert (ledger.cash, ledger.fees, dict(ledger.positions)) == before
        marks = ledger.marks
        value = sum(p.qty * marks[t] for t, p in ledger.positions.items())
        unrealized = sum(p.qty * (marks[t] - p.avg_cost) for t, p in ledger.positions.items())
        assert ledger.equity() == pytest.approx(ledger.cash + value, abs=1e-6)
        assert ledger.equity() == pytest.approx(
            5_000 + ledger.realized_pnl + unrealized - fees, abs=1e-6
        )
        assert ledger.fees == pytest.approx(fees)
        if not allow_short:
            assert ledger.cash >= -1e-6
            assert all(p.qty > 0 for p in ledger.positions.values())
        assert all(isinstance(p.qty, int) and p.qty != 0 for p in ledger.positions.values())
