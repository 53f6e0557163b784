"""The screener's picks as the trader sees them: fresh, with an entry range, one per ticker.

Entry policy (:meth:`PickBook.wants`): a pick becomes an entry when a bar of its ticker closes
inside ``[entry_low, entry_high]`` while the pick is fresh (the bar starts before
``fresh_until``), the account holds nothing of the ticker and has no entry for it waiting. Its
stop loss and take profit are the pick's ``stop`` and ``target``. The client order id names the
pick, so one pick makes at most one order, however many bars sit inside its range.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from falcon.db.models import ScreenPick, ScreenRun
from falcon.domain.market import Bar

__all__ = ["Pick", "PickBook"]

# Screens also run intraday: look for new picks this often (in bar time).
_REFRESH = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class Pick:
    """What the trader needs of a screen pick."""

    id: int
    profile: str
    ticker: str
    entry_low: float
    entry_high: float
    stop: float | None
    target: float | None
    fresh_until: datetime


class PickBook:
    """The fresh picks by ticker (the best-ranked of the newest run wins)."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.by_ticker: dict[str, Pick] = {}
        self._loaded_at: datetime | None = None

    def tickers(self) -> set[str]:
        """Tickers with a pick."""
        return set(self.by_ticker)

    def refresh(self, session: Session, ts: datetime) -> None:
        """Reload the picks fresh at ``ts`` when due (first call, then every 15 minutes)."""
        if not self.enabled:
            return
        loaded = self._loaded_at
        if loaded is not None and loaded <= ts < loaded + _REFRESH:
            self.by_ticker = {t: p for t, p in self.by_ticker.items() if ts < p.fresh_until}
            return
        self._loaded_at = ts
        rows = session.execute(
            select(ScreenPick, ScreenRun.profile)
            .join(ScreenRun, ScreenRun.id == ScreenPick.run_id)
            .where(
                ScreenRun.status == "done",
                ScreenPick.fresh_until.is_not(None),
                ScreenPick.fresh_until > ts,
                ScreenPick.entry_low.is_not(None),
                ScreenPick.entry_high.is_not(None),
            )
            .order_by(ScreenRun.as_of.desc(), ScreenRun.id.desc(), ScreenPick.rank)
        ).all()
        picks: dict[str, Pick] = {}
        for pick, profile in rows:
            if pick.ticker in picks or pick.fresh_until is None:
                continue
            picks[pick.ticker] = Pick(
                id=pick.id,
                profile=profile,
                ticker=pick.ticker,
                entry_low=float(pick.entry_low or 0.0),
                entry_high=float(pick.entry_high or 0.0),
                stop=pick.stop,
                target=pick.target,
                fresh_until=pick.fresh_until,
            )
        self.by_ticker = picks

    def wants(self, bar: Bar) -> Pick | None:
        """The pick that ``bar`` triggers, if any (the caller checks position and orders)."""
        pick = self.by_ticker.get(bar.ticker)
        if pick is None or bar.ts >= pick.fresh_until:
            return None
        if pick.entry_low <= bar.close <= pick.entry_high:
            return pick
        return None
