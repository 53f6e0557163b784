"""What the store holds: tickers, first and last session, and sessions missing per the calendar."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import polars as pl

from falcon import calendar
from falcon.data.flatfile import KINDS
from falcon.data.store import Store


@dataclass
class KindStatus:
    """Coverage of one kind of bars.

    ``tickers`` counts distinct tickers over all day bars; for minute bars, in the last session
    (reading every minute file only to count tickers would be slow and say little).
    """

    kind: str
    files: int = 0
    tickers: int = 0
    sessions: int = 0
    first_date: date | None = None
    last_date: date | None = None
    missing: list[date] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready fields."""
        return {
            "kind": self.kind,
            "files": self.files,
            "tickers": self.tickers,
            "sessions": self.sessions,
            "first_date": self.first_date,
            "last_date": self.last_date,
            "missing_count": len(self.missing),
            "missing_days": self.missing,
        }


def missing_sessions(present: list[date] | set[date], first: date, last: date) -> list[date]:
    """Trading days from ``first`` to ``last`` that are not in ``present``."""
    lo, hi = calendar.bounds()
    first, last = max(first, lo), min(last, hi)
    if last < first:
        return []
    have = set(present)
    return [d for d in calendar.trading_days(first, last) if d not in have]


def kind_status(store: Store, kind: str) -> KindStatus:
    """Coverage of ``kind`` in ``store``."""
    status = KindStatus(kind=kind, files=len(store.partitions(kind)))
    if status.files == 0:
        return status
    dates = store.dates(kind)
    if not dates:
        return status
    status.first_date, status.last_date, status.sessions = dates[0], dates[-1], len(dates)
    lf = store.scan(kind) if kind == "day" else store.scan(kind, dates[-1], dates[-1])
    status.tickers = int(lf.select(pl.col("ticker").n_unique()).collect().item())
    status.missing = missing_sessions(dates, dates[0], dates[-1])
    return status


def store_status(store: Store) -> list[KindStatus]:
    """Coverage of every kind."""
    return [kind_status(store, kind) for kind in KINDS]
