"""A paper account's equity history, rebuilt from its fills and the store's day closes.

The paper trader keeps no equity snapshots (yet), so the overview rebuilds the curve: starting
cash, then each fill moves cash (a buy pays ``qty * price + fee``, a sell receives
``qty * price - fee``, as the ledger books them) and the position; at each session's close the
positions are marked at that day's close (the last known close, or the last fill price for a
ticker the store has no bars of). Sessions are the benchmark's days, plus the days with fills.

Rebuilding reads every fill of the account, so the result (and the chart made of it, see
:func:`memo`) is cached per process and keyed by what could change it: the account's fill count
and last fill id, and the last data import. A page view after the first one costs one small
aggregate query.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import TypeVar, cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from falcon.config import Settings
from falcon.data.flatfile import NEW_YORK
from falcon.data.reader import read_bars
from falcon.db.models import DataImport, Fill, PaperAccount
from falcon.errors import FalconError

_CACHE_SIZE = 32
_cache: OrderedDict[tuple[object, ...], object] = OrderedDict()
_building: dict[tuple[object, ...], threading.Lock] = {}
T = TypeVar("T")
_lock = threading.Lock()


@dataclass(frozen=True)
class EquityHistory:
    """Equity at each session close, and the benchmark's closes over the same span."""

    points: list[tuple[date, float]]
    benchmark: str | None
    benchmark_closes: list[tuple[date, float]]
    fills: int


def _closes(settings: Settings, tickers: list[str], start: date, end: date) -> dict[str, list]:
    """``{ticker: [(date, close), ...]}`` for the tickers the store has (others absent)."""
    if not tickers:
        return {}
    try:
        frame = (
            read_bars(settings, "day", tickers, start, end, with_date=True)
            .select("ticker", "date", "close")
            .collect()
        )
    except (FalconError, OSError):
        return {}
    out: dict[str, list] = defaultdict(list)
    for ticker, day, close in frame.iter_rows():
        out[ticker].append((day, close))
    return out


def _rebuild(
    session: Session, settings: Settings, account: PaperAccount, benchmark: str | None
) -> EquityHistory:
    # Columns, not ORM objects: 10,000 fills load in milliseconds this way.
    rows = session.execute(
        select(Fill.ts, Fill.ticker, Fill.side, Fill.qty, Fill.price, Fill.fee)
        .where(Fill.account_id == account.id)
        .order_by(Fill.ts, Fill.id)
    ).all()
    if not rows:
        return EquityHistory([], benchmark, [], 0)
    first = rows[0].ts.astimezone(NEW_YORK).date()
    last = max(rows[-1].ts.astimezone(NEW_YORK).date(), date.today())
    tickers = sorted({r.ticker for r in rows})
    wanted = [*tickers, benchmark] if benchmark and benchmark not in tickers else tickers
    closes = _closes(settings, wanted, first, last)
    bench = closes.get(benchmark, []) if benchmark else []
    by_day: dict[date, list] = defaultdict(list)
    for r in rows:
        by_day[r.ts.astimezone(NEW_YORK).date()].append(r)
    days = sorted(set(by_day) | {d for d, _ in bench})
    # Marks: per ticker, its close dates and closes for a binary search of the last one <= day.
    marks = {t: ([d for d, _ in cs], [c for _, c in cs]) for t, cs in closes.items()}
    cash = float(account.starting_cash)
    qty: dict[str, int] = defaultdict(int)
    last_price: dict[str, float] = {}
    points: list[tuple[date, float]] = []
    for day in days:
        for r in by_day.get(day, ()):
            signed = r.qty if r.side == "buy" else -r.qty
            cash -= signed * r.price + float(r.fee)
            qty[r.ticker] += signed
            last_price[r.ticker] = r.price
        value = 0.0
        for ticker, held in qty.items():
            if not held:
                continue
            price = last_price[ticker]
            known = marks.get(ticker)
            if known is not None:
                i = bisect_right(known[0], day)
                if i:
                    price = known[1][i - 1]
            value += held * price
        points.append((day, cash + value))
    return EquityHistory(points, benchmark, bench, len(rows))


def history_key(
    session: Session, settings: Settings, account: PaperAccount, benchmark: str | None
) -> tuple[object, ...]:
    """What the account's equity history depends on, from two index look-ups.

    Fills are only ever added (an account's go only with the account, whose ``created_at`` is in
    the key), so the newest fill id of all accounts moves whenever this account's fills change.
    A fill of another account invalidates too: cheaper than counting this account's fills.
    """
    last_fill = session.scalar(select(func.max(Fill.id)))
    return (
        str(settings.effective_database_url), str(settings.home), account.id,
        account.created_at, str(account.starting_cash), last_fill, data_version(session),
        benchmark, date.today(),
    )


def data_version(session: Session) -> int | None:
    """The last data import's id: changes whenever the store may have new bars."""
    return session.scalar(select(func.max(DataImport.id)))


def memo(key: tuple[object, ...], build: Callable[[], T]) -> T:
    """``build()``, remembered under ``key`` in a small per-process LRU (thread-safe).

    Threads missing the same key at once build it once: the others wait for that build instead
    of repeating it (after a new fill, every busy thread of a worker would otherwise rebuild the
    same page at the same time).
    """
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return cast(T, _cache[key])
        building = _building.setdefault(key, threading.Lock())
    with building:
        with _lock:
            if key in _cache:  # another thread built it while this one waited
                _cache.move_to_end(key)
                return cast(T, _cache[key])
        try:
            value = build()
        except BaseException:
            with _lock:
                _building.pop(key, None)
            raise
        with _lock:
            _cache[key] = value
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
            _building.pop(key, None)
    return value


def equity_history(
    session: Session, settings: Settings, account: PaperAccount, benchmark: str | None
) -> EquityHistory:
    """The account's equity at each session close since its first fill (cached, see module)."""
    key = ("history", *history_key(session, settings, account, benchmark))
    return memo(key, lambda: _rebuild(session, settings, account, benchmark))
