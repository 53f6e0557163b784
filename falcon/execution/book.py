"""Open orders of one account, and what one bar does to them.

The paper trader keeps an :class:`OrderBook` per account: it submits orders, feeds each new bar
to :meth:`OrderBook.on_bar`, and persists the events it gets back. Prices come from
:mod:`falcon.execution.fills`, money from :class:`~falcon.execution.ledger.Ledger`: the same
functions the backtester uses.

Within one bar of one ticker, orders are worked in this order: market orders (they fill at the
open), then stop-loss / take-profit pairs and other stops (gaps fill at the open; a bar touching
both legs of a pair fills the stop), then limit orders; ties in submission order. The exit legs
of a bracket become live when the entry fills; an entry filled at the open has its legs checked
in the rest of that same bar (the whole range of the bar comes after its open).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from falcon.domain.events import (
    CancelReason,
    OrderCanceled,
    OrderEvent,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
)
from falcon.domain.market import Bar
from falcon.domain.orders import Fill, Order, OrderType, Side, TimeInForce
from falcon.execution.fills import CostModel, after_bar, exit_leg_first, fill_price, trail_level
from falcon.execution.ledger import Ledger

_PRIORITY = {
    OrderType.MARKET: 0,
    OrderType.STOP: 1,
    OrderType.TRAILING_STOP: 1,
    OrderType.STOP_LIMIT: 2,
    OrderType.LIMIT: 3,
}


def bracket(
    entry: Order,
    *,
    stop_loss: float | None = None,
    take_profit: float | None = None,
    trail_percent: float | None = None,
) -> tuple[Order, ...]:
    """An entry and its exit legs: a stop (or trailing stop) and a take profit, in one OCO group."""
    legs: list[Order] = [entry]
    exit_side = entry.side.opposite
    group = f"{entry.id}:oco"
    if stop_loss is not None or trail_percent is not None:
        kind = OrderType.TRAILING_STOP if trail_percent is not None else OrderType.STOP
        legs.append(
            Order(
                id=f"{entry.id}:sl",
                ticker=entry.ticker,
                side=exit_side,
                qty=entry.qty,
                type=kind,
                stop_price=stop_loss,
                trail_percent=trail_percent,
                parent_id=entry.id,
                oco_group=group,
                tag="stop_loss",
            )
        )
    if take_profit is not None:
        legs.append(
            Order(
                id=f"{entry.id}:tp",
                ticker=entry.ticker,
                side=exit_side,
                qty=entry.qty,
                type=OrderType.LIMIT,
                limit_price=take_profit,
                parent_id=entry.id,
                oco_group=group,
                tag="take_profit",
            )
        )
    return tuple(legs)


class OrderBook:
    """Live orders of one account; pure Python, no I/O."""

    def __init__(self, *, ledger: Ledger, costs: CostModel) -> None:
        self.ledger = ledger
        self.costs = costs
        self._live: dict[str, Order] = {}
        # Indexes of ``_live`` (same insertion order): by ticker and by OCO group.
        self._by_ticker: dict[str, dict[str, Order]] = {}
        self._by_oco: dict[str, dict[str, Order]] = {}
        self._waiting: dict[str, Order] = {}  # exit legs whose entry has not filled yet
        # Orders done with in the current bar: those worked, and the legs of an entry filled
        # inside it (they start with the next bar; _later holds these alone).
        self._next_bar: set[str] = set()
        self._later: set[str] = set()
        # ticker -> (bar time, _later) left by on_open for the on_bar of the same bar
        self._opened_at: dict[str, tuple[datetime, set[str]]] = {}

    @property
    def open_orders(self) -> tuple[Order, ...]:
        """Orders that can still fill, in submission order (waiting exit legs excluded)."""
        return tuple(self._live.values())

    def orders_for(self, ticker: str) -> tuple[Order, ...]:
        """Open orders of ``ticker``, in submission order (waiting exit legs excluded)."""
        mine = self._by_ticker.get(ticker)
        return tuple(mine.values()) if mine else ()

    def _put(self, order: Order) -> None:
        """Add ``order`` to the live orders (or replace the live order with its id)."""
        self._live[order.id] = order
        self._by_ticker.setdefault(order.ticker, {})[order.id] = order
        if order.oco_group is not None:
            self._by_oco.setdefault(order.oco_group, {})[order.id] = order

    def _drop(self, order_id: str) -> Order | None:
        """Remove a live order; it, or None when it was not live."""
        order = self._live.pop(order_id, None)
        if order is None:
            return None
        mine = self._by_ticker[order.ticker]
        del mine[order_id]
        if not mine:
            del self._by_ticker[order.ticker]
        if order.oco_group is not None:
            group = self._by_oco[order.oco_group]
            del group[order_id]
            if not group:
                del self._by_oco[order.oco_group]
        return order

    def submit(self, orders: Order | Iterable[Order], ts: datetime) -> list[OrderEvent]:
        """Accept orders (an entry and its legs from :func:`bracket`, or single orders)."""
        batch = [orders] if isinstance(orders, Order) else list(orders)
        events: list[OrderEvent] = []
        for order in batch:
            if order.id in self._live or order.id in self._waiting:
                raise ValueError(f"order id {order.id} is already in the book")
            if order.parent_id is not None and order.parent_id in self._live:
                self._waiting[order.id] = order
            else:
                self._put(order)
            events.append(OrderSubmitted(order=order, ts=ts))
        return events

    def cancel(
        self, order_id: str, ts: datetime, reason: CancelReason = CancelReason.USER
    ) -> list[OrderEvent]:
        """Cancel an order (and the waiting legs of an entry)."""
        order = self._drop(order_id) or self._waiting.pop(order_id, None)
        if order is None:
            return []
        events: list[OrderEvent] = [OrderCanceled(order=order, ts=ts, reason=reason)]
        for leg in [o for o in self._waiting.values() if o.parent_id == order_id]:
            del self._waiting[leg.id]
            events.append(OrderCanceled(order=leg, ts=ts, reason=CancelReason.PARENT))
        return events

    def end_session(self, ts: datetime) -> list[OrderEvent]:
        """Expire day orders at the end of their session."""
        events: list[OrderEvent] = []
        for order in [o for o in self._live.values() if o.tif is TimeInForce.DAY]:
            events += self.cancel(order.id, ts, CancelReason.EXPIRED)
        return events

    def on_open(self, bar: Bar) -> list[OrderEvent]:
        """Work the live orders of ``bar.ticker`` through ``bar``'s open alone: what fills at
        the open (market orders; stops, targets and limits the open gapped through).

        For a ticker whose position may be exited at this open and entered again at the same
        open (exits at the open come before entries, DESIGN.md "Conventions"): the entry is
        decided after the exit, on the cash it freed. :meth:`on_bar` works the whole bar after.
        """
        if bar.ticker not in self._by_ticker:
            return []
        o = bar.open
        events = self.on_bar(Bar(ticker=bar.ticker, ts=bar.ts, open=o, high=o, low=o, close=o,
                                 volume=bar.volume), settle=False)
        # Legs of an entry filled inside this bar start with the next bar, not in the rest of
        # this one that on_bar works next.
        carried = self._opened_at.get(bar.ticker)
        legs = set(self._later)
        if carried is not None and carried[0] == bar.ts:
            legs |= carried[1]  # a second look at the same open (an entry submitted since)
        self._opened_at[bar.ticker] = (bar.ts, legs)
        return events

    def on_bar(self, bar: Bar, *, settle: bool = True) -> list[OrderEvent]:
        """Work the live orders of ``bar.ticker`` through ``bar``; returns what happened.

        ``settle=False`` (:meth:`on_open`): the orders left are not moved on by the bar
        (trailing stops, triggered stop-limits) and the ticker stays marked at the open: the
        rest of the bar comes later.
        """
        if bar.ticker not in self._by_ticker:
            # Nothing to work (most tickers, most bars): the open's mark would be overwritten.
            self._next_bar = set()
            if settle and self._opened_at:
                self._opened_at.pop(bar.ticker, None)
            self.ledger.mark(bar.ticker, bar.close)
            return []
        events: list[OrderEvent] = []
        self.ledger.mark(bar.ticker, bar.open)
        carried = self._opened_at.get(bar.ticker)
        if settle:
            self._opened_at.pop(bar.ticker, None)
        done = self._next_bar = (
            set(carried[1]) if carried is not None and carried[0] == bar.ts else set())
        self._later = set()
        while True:
            mine = sorted(
                (o for o in self.orders_for(bar.ticker) if o.id not in done),
                key=lambda o: _PRIORITY[o.type],
            )
            if not mine:
                break
            order = mine[0]
            done.add(order.id)
            if order.id not in self._live:
                continue
            sibling = self._oco_sibling(order)
            if sibling is not None:
                done.add(sibling.id)
                stop_leg, target_leg = (
                    (order, sibling) if order.type is not OrderType.LIMIT else (sibling, order)
                )
                hit = exit_leg_first(stop_leg, target_leg, bar, self.costs)
                if hit is not None:
                    events += self._fill(hit[0], hit[1], bar)
                continue
            price = fill_price(order, bar, self.costs)
            if price is not None:
                events += self._fill(order, price, bar)
        if settle:
            for order in self.orders_for(bar.ticker):
                self._put(after_bar(order, bar))
            self.ledger.mark(bar.ticker, bar.close)
        return events

    def _oco_sibling(self, order: Order) -> Order | None:
        if order.oco_group is None:
            return None
        for other in self._by_oco.get(order.oco_group, {}).values():
            if other.id != order.id:
                return other
        return None

    def _fill(self, order: Order, price: float, bar: Bar) -> list[OrderEvent]:
        events: list[OrderEvent] = []
        qty = order.qty
        if order.is_exit_leg:
            held = self.ledger.qty(order.ticker)
            qty = min(qty, abs(held)) if held * order.side.sign < 0 else 0
            if qty == 0:
                events += self.cancel(order.id, bar.ts, CancelReason.POSITION_CLOSED)
                return events
        fill = Fill(
            order_id=order.id,
            ticker=order.ticker,
            side=order.side,
            qty=qty,
            price=price,
            fee=self.costs.fee(qty, price),
            ts=bar.ts,
        )
        reason = self.ledger.check(fill)
        if reason is not None:
            self._drop(order.id)
            events.append(OrderRejected(order=order, ts=bar.ts, reason=reason))
            for leg in [o for o in self._waiting.values() if o.parent_id == order.id]:
                del self._waiting[leg.id]
                events.append(OrderCanceled(order=leg, ts=bar.ts, reason=CancelReason.PARENT))
            return events
        self.ledger.apply(fill)
        self._drop(order.id)
        events.append(OrderFilled(order=order, fill=fill))
        sibling = self._oco_sibling(order)
        if sibling is not None:
            events += self.cancel(sibling.id, bar.ts, CancelReason.OCO)
        if self.ledger.qty(order.ticker) == 0:
            # Flat: exit legs left over from the closed position must not fire on the next one.
            for leg in [o for o in self.orders_for(order.ticker) if o.is_exit_leg]:
                events += self.cancel(leg.id, bar.ts, CancelReason.POSITION_CLOSED)
        for leg in [o for o in self._waiting.values() if o.parent_id == order.id]:
            del self._waiting[leg.id]
            if leg.type is OrderType.TRAILING_STOP and leg.watermark is None:
                # Trail from the market price the entry filled against, not from its slippage.
                leg = _with_watermark(leg, bar.open if order.type is OrderType.MARKET else price)
            self._put(leg)
            if order.type is not OrderType.MARKET:
                # The entry filled somewhere inside this bar: what came before it is unknown,
                # so its legs start with the next bar.
                self._next_bar.add(leg.id)
                self._later.add(leg.id)
        return events


def _with_watermark(order: Order, price: float) -> Order:
    buy = order.side is Side.BUY
    level = trail_level(price, buy=buy, percent=order.trail_percent, amount=order.trail_amount)
    if order.stop_price is not None:
        # A stop loss given with the trailing stop: the tighter of the two holds (as after_bar
        # keeps it on every later bar), not the trail alone.
        level = min(level, order.stop_price) if buy else max(level, order.stop_price)
    return replace(order, watermark=price, stop_price=level)
