"""Reads shared by pages, the API and the live stream (kept here so they agree)."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Select, func, select, type_coerce
from sqlalchemy.orm import Session

from falcon.db.models import Event, PaperAccount, Position
from falcon.db.types import MICROS
from falcon.web import serialize

# Event kinds that are bookkeeping, not news: never streamed or listed (they name usernames and
# addresses of failed logins).
PRIVATE_EVENT_KINDS = ("login_failed",)


def accounts_with_positions(session: Session) -> list[tuple[PaperAccount, list[Position]]]:
    """Every paper account with its open positions, by id."""
    held: dict[int, list[Position]] = defaultdict(list)
    for pos in session.scalars(
        select(Position).where(Position.qty != 0).order_by(Position.account_id, Position.ticker)
    ):
        held[pos.account_id].append(pos)
    accounts = session.scalars(select(PaperAccount).order_by(PaperAccount.id))
    return [(a, held[a.id]) for a in accounts]


def account_summaries(session: Session) -> list[dict[str, Any]]:
    """Every account as :func:`serialize.account` shows it, without loading its positions.

    The front page needs only each account's position count and cost: one aggregate query does
    that in SQL, where loading a hundred Position rows per account costs more than the rest of
    the page. ``avg_cost`` is stored in integer micro-dollars, so the sum is exact.
    """
    at_cost = func.sum(Position.qty * type_coerce(Position.avg_cost, BigInteger))
    totals = {
        account_id: (count, Decimal(int(micros or 0)) / MICROS)
        for account_id, count, micros in session.execute(
            select(Position.account_id, func.count(), at_cost)
            .where(Position.qty != 0)
            .group_by(Position.account_id)
        )
    }
    out = []
    for account in session.scalars(select(PaperAccount).order_by(PaperAccount.id)):
        count, cost = totals.get(account.id, (0, Decimal(0)))
        row = serialize.account(account, [])
        row["equity"], row["open_positions"] = float(account.cash + cost), count
        out.append(row)
    return out


def public_events() -> Select[Any]:
    """A select of the events pages may show."""
    return select(Event).where(Event.kind.not_in(PRIVATE_EVENT_KINDS))


def recent_events(session: Session, limit: int = 20) -> list[Event]:
    """The newest public events, newest first."""
    return list(session.scalars(public_events().order_by(Event.id.desc()).limit(limit)))


def page_of(stmt: Select[Any], id_column: Any, *, limit: int, before_id: int | None) -> Select[Any]:
    """Newest first, ``limit`` rows, older than ``before_id`` when given (keyset paging)."""
    if before_id is not None:
        stmt = stmt.where(id_column < before_id)
    return stmt.order_by(id_column.desc()).limit(limit)
