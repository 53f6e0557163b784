"""What a person does to a paper account from the CLI: halt, resume, flatten, manual orders, status.

Each function works in the caller's session (no commit), writes an audit entry and an ``events``
row, and changes only the database: the running trader reads ``halted`` and ``pending`` orders
from the database on every batch, so these take effect at its next bar wherever it runs.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from falcon import audit, calendar
from falcon.db.models import Event, Fill, LedgerEntry, Order, PaperAccount, Position
from falcon.domain.events import RejectReason
from falcon.domain.orders import OrderType, Side, TimeInForce
from falcon.errors import ValidationError
from falcon.paper.limits import RiskLimits
from falcon.paper.persist import find_account

__all__ = ["account_status", "halt_account", "resume_account", "submit_manual_order"]


def _event(session: Session, kind: str, account: PaperAccount, **payload: Any) -> None:
    session.add(Event(kind=kind, payload={"account_id": account.id, "account": account.name,
                                          **payload}))


def halt_account(
    session: Session, name: str, *, reason: str, actor: str, flatten: bool, now: datetime
) -> list[str]:
    """Halt account ``name``; with ``flatten`` queue a market order closing each position.

    Returns the client order ids of the flattening orders.
    """
    account = find_account(session, name)
    account.halted, account.halt_reason = True, reason
    audit.append(session, actor, "paper.halted", f"account:{name}",
                 {"reason": reason, "flatten": flatten})
    _event(session, "account_halted", account, reason=reason, by=actor)
    ids: list[str] = []
    if not flatten:
        return ids
    positions = session.scalars(
        select(Position).where(Position.account_id == account.id, Position.qty != 0)
        .order_by(Position.ticker)
    )
    for pos in positions:
        cid = f"{name[:40]}:flatten:{pos.ticker}:{now:%Y%m%dT%H%M%S}"
        meta = {"purpose": "flatten", "source": "manual", "by": actor}
        session.add(Order(account_id=account.id, client_order_id=cid, ticker=pos.ticker,
                          side=(Side.SELL if pos.qty > 0 else Side.BUY).value,
                          type=OrderType.MARKET.value, qty=abs(int(pos.qty)),
                          time_in_force=TimeInForce.GTC.value, status="pending",
                          strategy=pos.strategy, reason=json.dumps(meta), filled_qty=0))
        audit.append(session, actor, "order.decided", cid, {"ticker": pos.ticker, **meta})
        ids.append(cid)
    return ids


def resume_account(session: Session, name: str, *, reason: str, actor: str) -> None:
    """Let account ``name`` open positions again."""
    account = find_account(session, name)
    account.halted, account.halt_reason = False, None
    audit.append(session, actor, "paper.resumed", f"account:{name}", {"reason": reason})
    _event(session, "account_resumed", account, reason=reason, by=actor)


def submit_manual_order(
    session: Session,
    name: str,
    *,
    ticker: str,
    side: Side,
    qty: int,
    kind: OrderType = OrderType.MARKET,
    limit_price: float | None = None,
    stop_price: float | None = None,
    tif: TimeInForce = TimeInForce.DAY,
    actor: str,
    now: datetime,
) -> Order:
    """Queue a manual order for the trader, or record why it is refused right away.

    Refused at once (status ``rejected``): outside the NYSE session (``market_closed``), on a
    halted account for an order that opens exposure (``halted``), a sell of shares not held in a
    long-only account (``no_shares``). The rest is judged by the trader at its next bar.
    """
    if qty < 1:
        raise ValidationError("qty must be >= 1")
    account = find_account(session, name)
    held = session.scalar(
        select(Position.qty).where(Position.account_id == account.id, Position.ticker == ticker)
    ) or 0
    opening = held == 0 or (held > 0) == (side is Side.BUY)
    reject: RejectReason | None = None
    if not calendar.is_open(now):
        reject = RejectReason.MARKET_CLOSED
    elif opening and account.halted:
        reject = RejectReason.HALTED
    elif side is Side.SELL and account.long_only and qty > max(int(held), 0):
        reject = RejectReason.NO_SHARES
    # A person's order has no signal bar to be deterministic about: a random part keeps two
    # identical orders typed in the same microsecond apart.
    cid = f"{name[:40]}:manual:{ticker}:{now:%Y%m%dT%H%M%S}:{uuid.uuid4().hex[:12]}"
    meta = {"purpose": "entry" if opening else "exit", "source": "manual", "by": actor}
    row = Order(account_id=account.id, client_order_id=cid, ticker=ticker, side=side.value,
                type=kind.value, qty=qty, limit_price=limit_price, stop_price=stop_price,
                time_in_force=tif.value, status="rejected" if reject else "pending",
                reject_reason=reject.value if reject else None, reason=json.dumps(meta),
                filled_qty=0)
    session.add(row)
    session.flush()
    action = "order.rejected" if reject else "order.decided"
    detail = {"ticker": ticker, "side": side.value, "qty": qty, "type": kind.value,
              "reason": reject.value if reject else None}
    audit.append(session, actor, action, cid, detail)
    _event(session, "order", account, client_order_id=cid, status=row.status, **detail)
    return row


def account_status(
    session: Session, name: str, limits: RiskLimits, marks: dict[str, float] | None = None
) -> dict[str, Any]:
    """Account, positions (with unrealized P&L at ``marks``), open orders, limits, halt state."""
    account = find_account(session, name)
    marks = dict(marks or {})
    positions = list(session.scalars(
        select(Position).where(Position.account_id == account.id).order_by(Position.ticker)
    ))
    last_fill: dict[str, float] = dict(session.execute(
        select(Fill.ticker, Fill.price).where(Fill.account_id == account.id).order_by(Fill.id)
    ).all())
    fees = session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.account_id == account.id, LedgerEntry.book == "fees")
    )
    realized = session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.account_id == account.id, LedgerEntry.book == "realized_pnl")
    )
    rows = []
    value = Decimal(0)
    for p in positions:
        mark = marks.get(p.ticker, last_fill.get(p.ticker, float(p.avg_cost)))
        market = Decimal(str(mark)) * p.qty
        value += market
        rows.append({"ticker": p.ticker, "qty": int(p.qty), "avg_cost": p.avg_cost,
                     "mark": mark, "market_value": market,
                     "unrealized_pnl": market - p.avg_cost * p.qty, "strategy": p.strategy})
    orders = [
        {"id": o.id, "client_order_id": o.client_order_id, "ticker": o.ticker, "side": o.side,
         "type": o.type, "qty": int(o.qty), "limit": o.limit_price, "stop": o.stop_price,
         "tif": o.time_in_force, "status": o.status, "strategy": o.strategy}
        for o in session.scalars(
            select(Order).where(Order.account_id == account.id,
                                Order.status.in_(("open", "pending"))).order_by(Order.id)
        )
    ]
    return {
        "account": {"id": account.id, "name": account.name, "cash": account.cash,
                    "starting_cash": account.starting_cash, "equity": account.cash + value,
                    "long_only": account.long_only, "peak_equity": account.peak_equity,
                    "last_bar_ts": account.last_bar_ts,
                    "realized_pnl": -Decimal(realized or 0), "fees": Decimal(fees or 0)},
        "halted": account.halted,
        "halt_reason": account.halt_reason,
        "positions": rows,
        "open_orders": orders,
        "limits": limits.as_dict(),
    }
