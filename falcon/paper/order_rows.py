"""The rows each order event writes, and the pending orders decided before they are submitted.

What one event writes, with the batch (:mod:`falcon.paper.batch_writes`), in the caller's
transaction (so an event and its rows commit together):

* ``OrderSubmitted``: the ``orders`` row (status ``open``), or the pending row becomes ``open``;
* ``OrderFilled``: the order ``filled``; a ``fills`` row (``idempotency_key`` = the order's
  ``client_order_id`` + ``:fill``: an order fills once, whole); the ``positions`` row; and one
  double-entry transaction in ``ledger_entries`` (see :func:`falcon.paper.books.fill_legs`);
* ``OrderCanceled`` / ``OrderRejected``: the order ``canceled`` / ``rejected`` with the reason;
* each of them: an ``audit_log`` entry and an ``events`` row (kind ``order`` or ``fill``).
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from falcon.db.models import Order
from falcon.domain.events import (
    OrderCanceled,
    OrderEvent,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
)
from falcon.domain.orders import Order as DomainOrder
from falcon.domain.orders import OrderType, Side, TimeInForce
from falcon.paper.batch_writes import (
    PositionChange,
    active_batch,
    add_event,
    audit_entry,
    batch,
    current_batch,
    known,
)
from falcon.paper.books import ZERO, fill_legs, money
from falcon.paper.state import AccountState, OrderRow

__all__ = [
    "ACTOR",
    "hold_pending",
    "insert_order",
    "insert_pending",
    "record_events",
    "store_pending",
    "sync_live_orders",
]

ACTOR = "trader"


def _meta_text(meta: dict[str, Any]) -> str:
    return json.dumps(meta, sort_keys=True, separators=(",", ":"))


def _event_payload(state: AccountState, order: DomainOrder, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "account_id": state.account_id,
        "account": state.name,
        "client_order_id": order.id,
        "ticker": order.ticker,
        "side": order.side.value,
        "type": order.type.value,
        "qty": order.qty,
    }
    payload.update(extra)
    return payload


def insert_order(
    session: Session,
    state: AccountState,
    order: DomainOrder,
    *,
    status: str,
    strategy: str | None,
    meta: dict[str, Any],
    reject_reason: str | None = None,
) -> int | None:
    """Insert an ``orders`` row for ``order`` (with the batch: its id once flushed)."""
    b = active_batch(session)
    parent = state.order_ids.get(order.parent_id) if order.parent_id else None
    if order.trail_amount is not None:
        meta = {**meta, "trail_amount": order.trail_amount}
    if order.tag:
        meta = {**meta, "tag": order.tag}
    row = _order_values(
        state, order.id, ticker=order.ticker, side=order.side.value, type_=order.type.value,
        qty=order.qty, limit_price=order.limit_price, stop_price=order.stop_price,
        trail_pct=order.trail_percent, tif=order.tif.value, status=status, parent_id=parent,
        oco_group=order.oco_group, strategy=strategy, reason=_meta_text(meta),
        reject_reason=reject_reason,
    )
    state.meta[order.id] = meta
    if b is not None:
        b.state = state
        if order.parent_id and parent is None and order.parent_id in b.new_orders:
            # The parent's row is in this batch too (a quiet entry stored as it is submitted):
            # its id is filled in when the batch writes it, before this row.
            b.parent_of[order.id] = order.parent_id
        b.new_orders[order.id] = row
        return None
    orders = cast(Table, Order.__table__)
    oid: int = session.execute(insert(orders).returning(orders.c.id), row).scalar_one()
    state.order_ids[order.id] = oid
    return oid


def _order_values(
    state: AccountState, client_order_id: str, *, ticker: str, side: str, type_: str, qty: int,
    limit_price: float | None, stop_price: float | None, trail_pct: float | None, tif: str,
    status: str, parent_id: int | None, oco_group: str | None, strategy: str | None,
    reason: str, reject_reason: str | None,
) -> dict[str, Any]:
    """An ``orders`` row as column values; every row has the same keys (one executemany), and
    every column a later update of the same batch may set."""
    return {
        "account_id": state.account_id, "client_order_id": client_order_id, "ticker": ticker,
        "side": side, "type": type_, "qty": qty, "limit_price": limit_price,
        "stop_price": stop_price, "trail_pct": trail_pct, "time_in_force": tif,
        "status": status, "parent_id": parent_id, "oco_group": oco_group, "strategy": strategy,
        "reason": reason, "reject_reason": reject_reason, "filled_qty": 0,
        "avg_fill_price": None,
    }


def _update_order(session: Session, state: AccountState, cid: str, **values: Any) -> None:
    b = current_batch(session)
    row = b.new_orders.get(cid)
    if row is not None:
        row.update(values)
        return
    b.updates.setdefault(state.order_ids[cid], {}).update(values)


def record_events(
    session: Session,
    state: AccountState,
    events: list[OrderEvent],
    *,
    strategy: str | None = None,
) -> None:
    """Write what ``events`` did (rows, ledger legs, audit, live events) in ``session``.

    Inside :func:`batch` the rows are written when the batch is; otherwise before returning.
    """
    with batch(session):
        current_batch(session).state = state
        _record(session, state, events, strategy)


def _record(
    session: Session, state: AccountState, events: list[OrderEvent], strategy: str | None
) -> None:
    for event in events:
        if isinstance(event, OrderSubmitted):
            _submitted(session, state, event, strategy)
        elif isinstance(event, OrderFilled):
            _filled(session, state, event)
        elif isinstance(event, OrderCanceled):
            _closed(session, state, event.order, "canceled", str(event.reason), None, event.ts)
        elif isinstance(event, OrderRejected):
            _closed(session, state, event.order, "rejected", event.detail, str(event.reason),
                    event.ts)


def _owner(state: AccountState, order: DomainOrder) -> str | None:
    root = order.parent_id or order.id
    meta = state.meta.get(root) or {}
    owner = meta.get("strategy")
    return owner if isinstance(owner, str) else None


def _submitted(
    session: Session, state: AccountState, event: OrderSubmitted, strategy: str | None
) -> None:
    order = event.order
    owner = strategy or _owner(state, order)
    if not known(state, session, order.id):
        meta = state.meta.get(order.id) or {"strategy": owner, "purpose": (
            "exit_leg" if order.parent_id else "manual")}
        insert_order(session, state, order, status="open", strategy=owner, meta=meta)
    else:
        state.pending.pop(order.id, None)
        _update_order(session, state, order.id, status="open", qty=order.qty,
                      type=order.type.value, limit_price=order.limit_price,
                      stop_price=order.stop_price)
    state.persisted[order.id] = (order.type.value, order.stop_price, order.limit_price)
    detail = _event_payload(state, order, status="open", bar_ts=event.ts.isoformat())
    audit_entry(session, ACTOR, "order.submitted", order.id[:200], detail)
    add_event(session, "order", detail)


def _filled(session: Session, state: AccountState, event: OrderFilled) -> None:
    order, fill = event.order, event.fill
    ticker = fill.ticker
    _update_order(session, state, order.id, status="filled", filled_qty=fill.qty,
                  avg_fill_price=fill.price)
    key = f"{order.id}:fill"
    values = {"account_id": state.account_id, "ticker": ticker, "side": fill.side.value,
              "qty": fill.qty, "price": fill.price, "fee": money(fill.fee), "ts": fill.ts,
              "idempotency_key": key}
    # The book's ledger has applied every fill of the bar already; the shadow ledger applies them
    # one at a time, so each fill's rows see the position as that fill left it.
    before = state.basis.get(ticker, ZERO)
    was = state.shadow.qty(ticker)
    realized = state.shadow.apply(fill, checked=False)  # the book's ledger judged it
    pos = state.shadow.position(ticker)
    if pos is not None and (was == 0 or (was > 0) != (pos.qty > 0)):
        # A position opened (or flipped): its age, for max_bars, counts from this fill -- as
        # restore.load_state finds it from the stored fills after a restart.
        state.entry_ts[ticker] = fill.ts
    after = ZERO if pos is None else money(pos.qty * pos.avg_cost)  # position_basis, one snapshot
    legs = fill_legs(ticker, before, after, fill.fee, realized)
    current_batch(session).fills.append((order.id, values, legs))
    for book, amount in legs:
        if book == "cash":
            state.cash += amount
    _store_position(session, state, ticker, after, pos, order)
    detail = _event_payload(state, order, status="filled", price=fill.price, qty=fill.qty,
                            fee=str(money(fill.fee)), realized=round(realized, 6),
                            bar_ts=fill.ts.isoformat())
    audit_entry(session, ACTOR, "order.filled", order.id[:200], detail)
    add_event(session, "fill", detail)


def _store_position(
    session: Session,
    state: AccountState,
    ticker: str,
    basis: Decimal,
    pos: Any,
    order: DomainOrder,
) -> None:
    change = current_batch(session).positions.setdefault(ticker, PositionChange())
    if pos is None:
        change.deleted, change.created, change.final = True, False, None
        state.basis.pop(ticker, None)
        state.strategy_of.pop(ticker, None)
        state.entry_ts.pop(ticker, None)
        return
    # The row exists exactly while the account holds the ticker (``basis`` has it).
    if ticker not in state.basis:
        owner = _owner(state, order)
        change.created, change.owner = True, owner
        state.strategy_of[ticker] = owner
    state.basis[ticker] = basis
    change.final = (pos.qty, money(pos.avg_cost), money(pos.realized_pnl))


def _closed(
    session: Session,
    state: AccountState,
    order: DomainOrder,
    status: str,
    reason: str,
    reject_reason: str | None,
    ts: datetime,
) -> None:
    state.pending.pop(order.id, None)
    state.persisted.pop(order.id, None)
    if not known(state, session, order.id):
        owner = _owner(state, order)
        insert_order(session, state, order, status=status, strategy=owner,
                     meta={"strategy": owner, "note": reason} if owner else {"note": reason},
                     reject_reason=reject_reason)
    else:
        meta = {**state.meta.get(order.id, {}), "note": reason}
        _update_order(session, state, order.id, status=status, reject_reason=reject_reason,
                      reason=_meta_text(meta))
    action = "order.rejected" if status == "rejected" else "order.canceled"
    detail = _event_payload(state, order, status=status, reason=reject_reason or reason,
                            detail=reason, bar_ts=ts.isoformat())
    audit_entry(session, ACTOR, action, order.id[:200], detail)
    add_event(session, "order", detail)


def sync_live_orders(session: Session, state: AccountState) -> None:
    """Store what :func:`falcon.execution.fills.after_bar` changed (trailing stops, triggers)."""
    with batch(session):
        current_batch(session).state = state
        for order in state.book.open_orders:
            now = (order.type.value, order.stop_price, order.limit_price)
            if state.persisted.get(order.id) != now and known(state, session, order.id):
                _update_order(session, state, order.id, type=now[0], stop_price=now[1],
                              limit_price=now[2])
                state.persisted[order.id] = now


def insert_pending(
    session: Session,
    state: AccountState,
    client_order_id: str,
    *,
    ticker: str,
    side: Side,
    strategy: str | None,
    meta: dict[str, Any],
    qty: int = 0,
    kind: OrderType = OrderType.MARKET,
    limit_price: float | None = None,
    stop_price: float | None = None,
    tif: TimeInForce = TimeInForce.DAY,
) -> OrderRow:
    """A ``pending`` order: decided, not yet in the book (entries are sized at the next open).

    ``qty`` 0 means "sized when released". The row is the idempotency anchor: a second decision
    with the same ``client_order_id`` finds it and does nothing.
    """
    row = hold_pending(state, client_order_id, ticker=ticker, side=side, meta=meta, qty=qty,
                       kind=kind, limit_price=limit_price, stop_price=stop_price, tif=tif)
    with batch(session):
        store_pending(session, state, client_order_id, strategy=strategy)
        detail = {"account": state.name, "client_order_id": client_order_id, "ticker": ticker,
                  "side": side.value, "strategy": strategy, **meta}
        audit_entry(session, ACTOR, "order.decided", client_order_id[:200], detail)
    return row


def hold_pending(
    state: AccountState,
    client_order_id: str,
    *,
    ticker: str,
    side: Side,
    meta: dict[str, Any],
    qty: int = 0,
    kind: OrderType = OrderType.MARKET,
    limit_price: float | None = None,
    stop_price: float | None = None,
    tif: TimeInForce = TimeInForce.DAY,
) -> OrderRow:
    """A pending order in memory only (a quiet retry, see :mod:`falcon.paper.streaks`): what
    :func:`insert_pending` keeps, without the row and its audit entry."""
    row = OrderRow(client_order_id=client_order_id, ticker=ticker, side=side.value,
                   type=kind.value, qty=qty, limit_price=limit_price, stop_price=stop_price,
                   time_in_force=tif.value)
    state.meta[client_order_id] = meta
    state.pending[client_order_id] = row
    return row


def store_pending(
    session: Session, state: AccountState, client_order_id: str, *, strategy: str | None
) -> None:
    """Add the ``orders`` row (status ``pending``) of a pending order held in memory to the batch.

    For a quiet entry that is about to be recorded: what follows in the batch (its rejection, or
    its submission and fill) updates the unflushed row, so it is written once, exactly as the
    row of an entry that was never quiet ends up.
    """
    row = state.pending[client_order_id]
    with batch(session):
        b = current_batch(session)
        b.state = state
        b.new_orders[client_order_id] = _order_values(
            state, client_order_id, ticker=row.ticker, side=row.side, type_=row.type,
            qty=row.qty, limit_price=row.limit_price, stop_price=row.stop_price, trail_pct=None,
            tif=row.time_in_force, status="pending", parent_id=None, oco_group=None,
            strategy=strategy, reason=_meta_text(state.meta[client_order_id]),
            reject_reason=None,
        )
