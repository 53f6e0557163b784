"""Builders for the paper trader's tests: accounts, synthetic bars, strategies, DB snapshots."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from falcon import calendar
from falcon.db.engine import make_engine, transaction
from falcon.db.migrate import upgrade
from falcon.db.models import Fill, LedgerEntry, PaperAccount, Position
from falcon.domain.market import Bar
from falcon.paper.decisions import DecisionLog
from falcon.paper.limits import RiskLimits
from falcon.paper.persist import create_account
from falcon.paper.signals import StrategySlot
from falcon.paper.trader import Trader
from falcon.strategy import load_spec

from ..conftest import new_pg_database

LOOSE = RiskLimits(max_open_positions=50, max_position_pct=1.0, max_sector_pct=1.0,
                   max_strategy_pct=1.0, daily_loss_pct=1.0, max_drawdown_pct=1.0)


def make_account(sessions: sessionmaker[Session], name: str = "t", cash: float = 10_000.0) -> int:
    with transaction(sessions) as s:
        return create_account(s, name, cash).id


def spec(entry: str = "close > 0", exit_: str = "close < 0", **extra: Any) -> Any:
    doc: dict[str, Any] = {"name": "always", "version": "1", "timeframe": "day", "entry": entry,
                           "exit": exit_, "sizing": {"kind": "fraction", "value": 0.5},
                           "max_positions": 10}
    doc.update(extra)
    return load_spec(doc)


def slot(name: str = "always", tickers: Iterable[str] | None = None, **kw: Any) -> StrategySlot:
    return StrategySlot(name=name, spec=spec(**kw), tickers=frozenset(tickers) if tickers else None,
                        margin=3)


def trader(sessions: sessionmaker[Session], slots: list[StrategySlot], *, account: str = "t",
           limits: RiskLimits = LOOSE, kind: str = "day", **kw: Any) -> Trader:
    return Trader(sessions, account=account, slots=slots, kind=kind, limits=limits,
                  log_sink=DecisionLog(None), **kw)


def days(start: date, n: int) -> list[datetime]:
    """Day-bar timestamps (00:00 New York, in UTC) of ``n`` sessions from ``start``."""
    out: list[datetime] = []
    d = start
    while len(out) < n:
        if calendar.is_trading_day(d):
            out.append(datetime.combine(d, datetime.min.time(), calendar.NEW_YORK).astimezone(UTC))
        d += timedelta(days=1)
    return out


def minutes(day: date, n: int, first: int = 0) -> list[datetime]:
    """Minute-bar starts of session ``day`` from its open (+``first`` minutes)."""
    open_, _ = calendar.session_open_close(day)
    return [open_ + timedelta(minutes=first + i) for i in range(n)]


def bar(ticker: str, ts: datetime, o: float, h: float | None = None, lo: float | None = None,
        c: float | None = None) -> Bar:
    c = o if c is None else c
    h = max(o, c) if h is None else h
    lo = min(o, c) if lo is None else lo
    return Bar(ticker=ticker, ts=ts, open=o, high=h, low=lo, close=c, volume=1000.0)


def snapshot(sessions: sessionmaker[Session], account_id: int) -> dict[str, Any]:
    """What must survive a crash: cash, positions, fills and ledger entries (by content)."""
    with sessions() as s:
        acct = s.get(PaperAccount, account_id)
        assert acct is not None
        return {
            "cash": acct.cash,
            "last_bar_ts": acct.last_bar_ts,
            "positions": sorted(
                (p.ticker, int(p.qty), p.avg_cost)
                for p in s.scalars(select(Position).where(Position.account_id == account_id))
            ),
            "fills": sorted(
                (f.idempotency_key, f.side, int(f.qty), f.price, f.fee, f.ts)
                for f in s.scalars(select(Fill).where(Fill.account_id == account_id))
            ),
            "ledger": sorted(
                (e.txn_id, e.book, e.amount, e.memo or "")
                for e in s.scalars(
                    select(LedgerEntry).where(LedgerEntry.account_id == account_id))
            ),
        }


def unbalanced_txns(session: Session, account_id: int) -> list[tuple[str, Decimal]]:
    rows = session.execute(
        select(LedgerEntry.txn_id, func.sum(LedgerEntry.amount))
        .where(LedgerEntry.account_id == account_id)
        .group_by(LedgerEntry.txn_id)
    ).all()
    return [(t, Decimal(a)) for t, a in rows if Decimal(a) != 0]


def book_sum(session: Session, account_id: int, book: str) -> Decimal:
    value = session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.account_id == account_id, LedgerEntry.book == book)
    )
    return Decimal(value or 0)


def database_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest, name: str) -> str:
    """A new migrated database of ``kind`` ("sqlite" or "postgres") for a test that needs more
    than one (e.g. a reference run and a crashed run)."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / f'{name}.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        return url
    return new_pg_database(request.getfixturevalue("pg_server"))


def bars_frame(batches: Iterable[Iterable[Bar]]) -> pl.DataFrame:
    """The backtester's input frame of the trader's batches, sorted by (ticker, ts)."""
    flat = [b for batch in batches for b in batch]
    return pl.DataFrame({"ticker": [b.ticker for b in flat], "ts": [b.ts for b in flat],
                         "open": [b.open for b in flat], "high": [b.high for b in flat],
                         "low": [b.low for b in flat], "close": [b.close for b in flat],
                         "volume": [b.volume for b in flat]}).sort("ticker", "ts")
