"""What a person does to a paper account from the CLI: halt, resume, flatten, manual orders, status.

The status also shows the entries the trader holds in memory only (:func:`held_entries`): they
have no ``orders`` row, so without them an account retrying an entry at every open would look
idle.

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
from falcon.paper.streaks import Streaks

__all__ = ["HELD_ENTRIES_HELP", "account_status", "halt_account", "held_entries",
           "resume_account", "submit_manual_order"]


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
    """Account, positions (with unrealized P&L at ``marks``), open orders, limits, halt state,
    and the entries held in memory (``held_entries``, see :func:`held_entries`; when the stored
    state cannot be read, an empty list and ``held_entries_warning`` says why)."""
    account = find_account(session, name)
    marks = dict(marks or {})
    positions = list(session.scalars(
        select(Position).where(Position.account_id == account.id).order_by(Position.ticker)
    ))
    # The latest fill price of each held ticker (not every fill of the account: a year of
    # minute trading is millions), for positions without a mark given.
    latest = (select(func.max(Fill.id)).where(Fill.account_id == account.id,
                                              Fill.ticker.in_([p.ticker for p in positions]))
              .group_by(Fill.ticker))
    last_fill: dict[str, float] = dict(session.execute(
        select(Fill.ticker, Fill.price).where(Fill.id.in_(latest.scalar_subquery()))
    ).tuples().all()) if positions else {}
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
    held, warning = held_entries(account.quiet_state)
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
        "held_entries": held,
        "held_entries_warning": warning,
        "limits": limits.as_dict(),
    }


HELD_ENTRIES_HELP = (
    "Entries the trader holds in memory, with no order row: an entry refused again and again "
    "for the same cause is retried quietly at each open (only its first refusal is recorded), "
    "and an entry signalled while the strategy's own position is open is taken at the next open "
    "only if that open closes the position."
)


def held_entries(doc: Any) -> tuple[list[dict[str, Any]], str | None]:
    """The entries held in a ``quiet_state`` document, and a warning when it cannot be read.

    One row per open refusal streak (``kind`` ``"quiet_retry"``): its key, cause, refusals so
    far, first and last refused bar (ISO), the client order id of the recorded refusal and the
    quiet entry waiting for the next open, if any (``waiting``, ``client_order_id``). One row
    per entry if flat (``kind`` ``"if_flat"``, always waiting for the next open). Rows carry the
    same keys (None where a field does not apply), by kind, strategy, ticker and side.

    Nothing stored gives ``([], None)``. A document this code cannot read (corrupt, or from
    another version: the trader drops it too) gives ``([], warning)``, never an exception.
    """
    if not doc:
        return [], None
    try:
        streaks = Streaks.load(doc)
        rows: list[dict[str, Any]] = []
        for streak in streaks.open.values():
            strategy, ticker, side = streak.key
            rows.append({
                "kind": "quiet_retry", "strategy": strategy, "ticker": ticker, "side": side,
                "cause": streak.cause, "count": streak.count,
                "first_ts": streak.first_ts.isoformat(), "last_ts": streak.last_ts.isoformat(),
                "first_client_order_id": streak.first_id,
                "waiting": streak.quiet_id is not None, "client_order_id": streak.quiet_id,
            })
        for cid, (ticker, side, meta) in streaks.if_flat.items():
            rows.append({
                "kind": "if_flat", "strategy": meta.get("strategy"), "ticker": ticker,
                "side": side, "cause": None, "count": None, "first_ts": None, "last_ts": None,
                "first_client_order_id": None, "waiting": True, "client_order_id": cid,
            })
        rows.sort(key=lambda r: (r["kind"] != "quiet_retry", str(r["strategy"]),
                                 str(r["ticker"]), str(r["side"])))
        stored = len(doc.get("streaks") or ()) + len(doc.get("if_flat") or ())
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        why = f"{type(exc).__name__}: {exc}"[:200]
        return [], (f"paper_accounts.quiet_state cannot be read ({why}): the entries the trader "
                    "holds in memory are not shown")
    if stored and not rows:  # Streaks.load drops a document of another version
        return [], (f"quiet_state has version {doc.get('v')!r}, which this version does not "
                    "read: the trader drops its held entries")
    return rows, None
