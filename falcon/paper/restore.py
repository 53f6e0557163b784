"""Rebuilding a paper account from the database after a start or a crash.

The ledger is the stored fills replayed in order through :class:`~falcon.execution.ledger.Ledger`
(exactly the in-memory ledger the trader had: fees were rounded before it booked them); the order
book is the ``open`` orders submitted again in id order (a bracket's legs wait for their entry as
before); ``pending`` orders wait for their next bar, and so do the quiet entries held in memory
only (``paper_accounts.quiet_state``, see :mod:`falcon.paper.streaks`). Positions must agree with
the fills, or the account refuses to load.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from falcon import audit
from falcon.db.models import Fill, Order, PaperAccount, Position
from falcon.domain.orders import Fill as DomainFill
from falcon.domain.orders import Side
from falcon.errors import DatabaseError, NotFound
from falcon.execution.book import OrderBook
from falcon.execution.fills import CostModel
from falcon.execution.ledger import Ledger
from falcon.paper.persist import (
    AccountState,
    MicroCosts,
    OrderRow,
    domain_order,
    hold_pending,
    parse_meta,
    position_basis,
)
from falcon.paper.streaks import Streaks

__all__ = ["load_state"]

log = logging.getLogger(__name__)


def load_state(
    session: Session, account_id: int, costs: CostModel, *, quiet_retries: bool = True
) -> AccountState:
    """Rebuild an account from the database: the ledger from its fills, the book from open orders,
    the pending entries from their rows and from the stored quiet retries.

    ``quiet_retries`` False: no new decision goes quiet (the stored quiet entries still wait).

    Raises :class:`DatabaseError` when the stored positions disagree with the replayed fills.
    """
    account = session.get(PaperAccount, account_id)
    if account is None:
        raise NotFound(f"no paper account {account_id}")
    ledger = Ledger(cash=float(account.starting_cash), allow_short=not account.long_only)
    shadow = Ledger(cash=float(account.starting_cash), allow_short=not account.long_only)
    entry_ts: dict[str, datetime] = {}
    for fill in session.scalars(
        select(Fill).where(Fill.account_id == account_id).order_by(Fill.id)
    ):
        was = ledger.qty(fill.ticker)
        domain = DomainFill(order_id=str(fill.order_id), ticker=fill.ticker, side=Side(fill.side),
                            qty=int(fill.qty), price=fill.price, fee=float(fill.fee), ts=fill.ts)
        # Accepted when it filled, on that moment's marks (a margin account's room depends on
        # them): booked again as it was, not judged again on marks a replay does not have.
        ledger.apply(domain, checked=False)
        shadow.apply(domain, checked=False)
        now = ledger.qty(fill.ticker)
        if now != 0 and (was == 0 or (was > 0) != (now > 0)):
            entry_ts[fill.ticker] = fill.ts
    stored = {
        p.ticker: p
        for p in session.scalars(select(Position).where(Position.account_id == account_id))
    }
    held = {t: p.qty for t, p in ledger.positions.items()}
    if {t: int(p.qty) for t, p in stored.items() if p.qty} != held:
        raise DatabaseError(
            f"paper account {account.name}: positions do not match the fills "
            f"(stored {sorted(stored)}, replayed {sorted(held)})"
        )
    book = OrderBook(ledger=ledger, costs=MicroCosts.of(costs))
    state = AccountState(
        account_id=account_id,
        name=account.name,
        long_only=account.long_only,
        ledger=ledger,
        book=book,
        shadow=shadow,
        cash=account.cash,
        basis={t: position_basis(ledger, t) for t in held},
        strategy_of={t: p.strategy for t, p in stored.items()},
        entry_ts={t: ts for t, ts in entry_ts.items() if t in held},
        halted=account.halted,
        halt_reason=account.halt_reason,
        peak_equity=account.peak_equity,
        last_bar_ts=account.last_bar_ts,
    )
    rows = list(
        session.scalars(
            select(Order)
            .where(Order.account_id == account_id, Order.status.in_(("open", "pending")))
            .order_by(Order.id)
        )
    )
    client_of = {r.id: r.client_order_id for r in rows}
    missing = {r.parent_id for r in rows if r.parent_id and r.parent_id not in client_of}
    if missing:
        for oid, cid in session.execute(
            select(Order.id, Order.client_order_id).where(Order.id.in_(missing))
        ):
            client_of[oid] = cid
    for row in rows:
        meta = parse_meta(row.reason)
        state.order_ids[row.client_order_id] = row.id
        state.meta[row.client_order_id] = meta
        if row.status == "pending":
            state.pending[row.client_order_id] = OrderRow.of(row)
            continue
        order = domain_order(row, client_of.get(row.parent_id) if row.parent_id else None, meta)
        book.submit(order, row.created_at)
        state.persisted[order.id] = (order.type.value, order.stop_price, order.limit_price)
    state.streaks = _streaks(session, account, quiet_retries)
    for streak in state.streaks.held():
        quiet = streak.quiet_id
        # A quiet entry has no row (it gets one when written, in the batch that stores the new
        # quiet_state); the check keeps a row's own pending entry if that ever broke.
        if quiet is not None and quiet not in state.order_ids:
            hold_pending(state, quiet, ticker=streak.key[1], side=Side(streak.key[2]),
                         meta=streak.quiet_meta or {})
    for cid, (ticker, side, meta) in state.streaks.if_flat.items():
        if cid not in state.order_ids:
            hold_pending(state, cid, ticker=ticker, side=Side(side), meta=meta)
    for ticker, price in _last_prices(session, account_id).items():
        ledger.mark(ticker, price)
        shadow.mark(ticker, price)
    return state


def _last_prices(session: Session, account_id: int) -> dict[str, float]:
    """Last fill price per ticker: marks until the first bar after a restart."""
    out: dict[str, float] = {}
    for ticker, price in session.execute(
        select(Fill.ticker, Fill.price).where(Fill.account_id == account_id).order_by(Fill.id)
    ):
        out[ticker] = price
    return out


def _streaks(session: Session, account: PaperAccount, quiet_retries: bool) -> Streaks:
    """The stored quiet retries; none when the stored state cannot be read.

    Only the trader writes ``quiet_state``, so an unreadable one was edited by hand or broken
    by a bug. Starting without it loses nothing that matters (a held entry is a retry, decided
    again by the next signal; its refusal count starts over), while refusing to start would
    stop the account's trading: the trader starts, says so in the log and the audit log, and
    stores a clean state with its next batch.
    """
    try:
        streaks = Streaks.load(account.quiet_state, enabled=quiet_retries)
        for streak in streaks.held():
            Side(streak.key[2])
        for _ticker, side, _meta in streaks.if_flat.values():
            Side(side)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        why = type(exc).__name__
        log.warning("paper account %s: quiet_state cannot be read (%s); starting with no "
                    "entries held in memory", account.name, why)
        audit.append(session, "trader", "paper.quiet_state_dropped", f"account:{account.name}",
                     {"error": why})
        streaks = Streaks(enabled=quiet_retries)
        streaks.dirty = True
    return streaks

