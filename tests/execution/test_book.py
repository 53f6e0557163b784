"""The order book of the paper trader: brackets, OCO, time in force, rejections."""

from __future__ import annotations

from datetime import datetime, timedelta

from falcon.domain.events import (
    CancelReason,
    OrderCanceled,
    OrderEvent,
    OrderFilled,
    OrderRejected,
    RejectReason,
)
from falcon.domain.market import Bar
from falcon.domain.orders import Order, OrderType, Side, TimeInForce
from falcon.execution.book import OrderBook, bracket
from falcon.execution.fills import CostModel
from falcon.execution.ledger import Ledger

T0 = datetime(2024, 1, 2)


def bar(day: int, o: float, h: float, low: float, c: float, ticker: str = "T") -> Bar:
    return Bar(ticker=ticker, ts=T0 + timedelta(days=day), open=o, high=h, low=low, close=c)


def fills(events: list[OrderEvent]) -> list[tuple[str, float]]:
    return [(e.order.id, e.fill.price) for e in events if isinstance(e, OrderFilled)]


def new_book(cash: float = 10_000, **costs: float) -> OrderBook:
    return OrderBook(ledger=Ledger(cash=cash), costs=CostModel(**costs))


def entry(qty: int = 10, **kw: object) -> Order:
    return Order(id="e1", ticker="T", side=Side.BUY, qty=qty, **kw)  # type: ignore[arg-type]


def test_bracket_stop_wins_a_bar_touching_both_and_cancels_the_target() -> None:
    book = new_book()
    book.submit(bracket(entry(), stop_loss=95.0, take_profit=110.0), T0)
    assert fills(book.on_bar(bar(1, 100, 101, 99, 100))) == [("e1", 100.0)]
    events = book.on_bar(bar(2, 100, 111, 94, 105))
    assert fills(events) == [("e1:sl", 95.0)]
    assert [(e.order.id, e.reason) for e in events if isinstance(e, OrderCanceled)] == [
        ("e1:tp", CancelReason.OCO)
    ]
    assert book.open_orders == () and book.ledger.qty("T") == 0


def test_bracket_legs_watch_the_entry_bar_after_a_market_fill() -> None:
    book = new_book()
    book.submit(bracket(entry(), stop_loss=95.0, take_profit=110.0), T0)
    assert fills(book.on_bar(bar(1, 100, 101, 94, 96))) == [("e1", 100.0), ("e1:sl", 95.0)]


def test_target_only_touched_rests_then_fills_through() -> None:
    book = new_book()
    book.submit(bracket(entry(), take_profit=110.0), T0)
    book.on_bar(bar(1, 100, 101, 99, 100))
    assert fills(book.on_bar(bar(2, 105, 110, 104, 109))) == []
    assert fills(book.on_bar(bar(3, 109, 110.5, 108, 110))) == [("e1:tp", 110.0)]


def test_trailing_bracket_trails_from_the_entry_open() -> None:
    book = new_book()
    book.submit(bracket(entry(), trail_percent=0.10), T0)
    book.on_bar(bar(1, 100, 100, 100, 100))
    book.on_bar(bar(2, 101, 120, 100, 119))
    assert fills(book.on_bar(bar(3, 118, 118, 107, 110))) == [("e1:sl", 108.0)]


def test_unheld_sell_is_rejected_in_long_only() -> None:
    book = new_book()
    book.submit(Order(id="s1", ticker="T", side=Side.SELL, qty=5), T0)
    events = book.on_bar(bar(1, 100, 101, 99, 100))
    assert [(e.order.id, e.reason) for e in events if isinstance(e, OrderRejected)] == [
        ("s1", RejectReason.NO_SHARES)
    ]


def test_unaffordable_entry_is_rejected_and_its_legs_canceled() -> None:
    book = new_book(cash=500)
    book.submit(bracket(entry(), stop_loss=95.0), T0)
    events = book.on_bar(bar(1, 100, 101, 99, 100))
    assert (
        isinstance(events[0], OrderRejected) and events[0].reason is RejectReason.INSUFFICIENT_CASH
    )
    assert [(e.order.id, e.reason) for e in events[1:]] == [("e1:sl", CancelReason.PARENT)]  # type: ignore[union-attr]
    assert book.open_orders == ()


def test_day_limit_expires_at_session_end_gtc_rests() -> None:
    book = new_book()
    day = Order(
        id="d",
        ticker="T",
        side=Side.BUY,
        qty=1,
        type=OrderType.LIMIT,
        limit_price=90.0,
        tif=TimeInForce.DAY,
    )
    gtc = Order(id="g", ticker="T", side=Side.BUY, qty=1, type=OrderType.LIMIT, limit_price=90.0)
    book.submit([day, gtc], T0)
    assert fills(book.on_bar(bar(1, 100, 101, 95, 100))) == []
    expired = book.end_session(T0 + timedelta(days=1))
    assert [(e.order.id, e.reason) for e in expired] == [("d", CancelReason.EXPIRED)]  # type: ignore[union-attr]
    assert fills(book.on_bar(bar(2, 92, 93, 89, 90))) == [("g", 90.0)]


def test_exit_leg_with_nothing_left_to_close_is_canceled() -> None:
    book = new_book()
    book.submit(bracket(entry(), stop_loss=95.0), T0)
    book.on_bar(bar(1, 100, 101, 99, 100))
    book.submit(Order(id="x", ticker="T", side=Side.SELL, qty=10), T0)
    events = book.on_bar(bar(2, 96, 97, 96, 96))
    assert fills(events) == [("x", 96.0)]
    assert [(e.order.id, e.reason) for e in events if isinstance(e, OrderCanceled)] == [
        ("e1:sl", CancelReason.POSITION_CLOSED)
    ]


def test_replaying_fills_rebuilds_the_ledger() -> None:
    book = new_book(commission=0.001)
    book.submit(bracket(entry(), stop_loss=95.0, take_profit=110.0), T0)
    events = book.on_bar(bar(1, 100, 101, 99, 100)) + book.on_bar(bar(2, 101, 112, 100, 111))
    rebuilt = Ledger(cash=10_000)
    for event in events:
        if isinstance(event, OrderFilled):
            rebuilt.apply(event.fill)
    assert (rebuilt.cash, rebuilt.fees, rebuilt.realized_pnl) == (
        book.ledger.cash,
        book.ledger.fees,
        book.ledger.realized_pnl,
    )
