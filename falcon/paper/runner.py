"""Entry points wiring a :class:`~falcon.paper.trader.Trader` to its source and the service frame.

* :func:`replay`: bars from the Parquet store (``falcon paper replay``), resumable: it skips what
  the account has already seen (``last_bar_ts``) after feeding it to the rolling windows.
* :func:`live`: minute bars polled from Massive (``falcon trader run``) in NYSE sessions, with
  READY / WATCHDOG / STOPPING for systemd and a clean exit on SIGTERM.
"""

from __future__ import annotations

import logging
import sys
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from falcon import calendar
from falcon.config import Settings
from falcon.db.engine import transaction
from falcon.errors import ConfigError, DataError
from falcon.execution.fills import CostModel
from falcon.paper.decisions import DecisionLog
from falcon.paper.service import (
    RunStats,
    account_limits,
    ensure_account,
    paper_slots,
    run_batches,
    slots_by_name,
)
from falcon.paper.sources import MassivePollingSource, ReplaySource
from falcon.paper.trader import Trader

log = logging.getLogger(__name__)

__all__ = ["costs_of", "live", "replay"]


def costs_of(settings: Settings) -> CostModel:
    """The fill model's costs from ``[trading]`` settings."""
    t = settings.trading
    return CostModel(commission=t.commission, commission_per_share=t.commission_per_share,
                     slippage_bps=t.slippage_bps)


def alert_engine(settings: Settings, sessions: sessionmaker[Session]) -> Any:
    """The alert engine for the trader's bar stream, or None when no rule is enabled."""
    from sqlalchemy import func, select

    from falcon.alerts.engine import AlertEngine
    from falcon.alerts.settings import AlertSettings
    from falcon.db.models import AlertRule

    with sessions() as s:
        if not s.scalar(select(func.count()).select_from(AlertRule)
                        .where(AlertRule.enabled.is_(True))):
            return None
    return AlertEngine(sessions.kw["bind"], AlertSettings.from_settings(settings))


def _trader(
    sessions: sessionmaker[Session], *, account: str, strategies: list[str],
    tickers: list[str] | None, kind: str, params: dict[str, float], cash: float, picks: bool,
    margin: int, limits: dict[str, Any], costs: CostModel, quiet: bool,
) -> Trader:
    ensure_account(sessions, account, cash)
    with transaction(sessions) as s:
        if strategies:
            slots = slots_by_name(s, strategies, tickers, params or None, margin)
        else:
            slots = paper_slots(s, tickers, margin)
        risk = account_limits(s, account, limits)
    trader = Trader(sessions, account=account, slots=slots, kind=kind, limits=risk, costs=costs,
                    picks=picks, log_sink=DecisionLog(None if quiet else sys.stdout))
    for name in trader.skipped_slots:
        log.warning("strategy %s is not a %s strategy: not traded", name, kind)
    return trader


def replay(
    settings: Settings, sessions: sessionmaker[Session], *, account: str, start: date, end: date,
    strategies: list[str], tickers: list[str] | None, kind: str = "day",
    params: dict[str, float] | None = None, cash: float = 100_000.0, picks: bool = True,
    margin: int = 50, limits: dict[str, Any] | None = None, quiet: bool = False,
    control: Any = None,
) -> RunStats:
    """Replay the store's bars from ``start`` to ``end`` through account ``account``."""
    from falcon.services.heap import settle_heap
    from falcon.services.loop import ServiceControl, run_service

    if end < start:
        raise DataError(f"--end {end} is before --start {start}")
    trader = _trader(sessions, account=account, strategies=strategies, tickers=tickers, kind=kind,
                     params=params or {}, cash=cash, picks=picks, margin=margin,
                     limits=limits or {}, costs=costs_of(settings), quiet=quiet)
    wanted = sorted(trader.watched(tickers or ()))
    source = ReplaySource.from_store(settings, wanted or None, start, end, kind)
    last = trader.state.last_bar_ts
    if last is not None:
        trader.warm(b for b in source.bars() if b.ts <= last)
        source.skip_through = last
    stats = RunStats()
    alerts = alert_engine(settings, sessions)

    def body(ctl: ServiceControl) -> int:
        settle_heap()  # start-up is over: no full collection should stall a bar
        ctl.ready(f"replaying {start}..{end} into {account}")
        nonlocal stats
        stats = run_batches(trader, source, ctl, alerts)
        return 0

    if control is not None:
        return run_batches(trader, source, control, alerts)
    run_service(body, name="falcon-paper-replay")
    return stats


def live(
    settings: Settings, sessions: sessionmaker[Session], *, account: str, strategies: list[str],
    tickers: list[str] | None, cash: float, picks: bool = True, margin: int = 50,
    limits: dict[str, Any] | None = None, poll_s: float = 5.0, quiet: bool = False,
) -> int:
    """Trade minute bars polled from Massive until SIGTERM; the exit code."""
    from falcon.services.heap import settle_heap
    from falcon.services.loop import ServiceControl, run_service

    key = settings.secrets.massive_api_key
    if not key:
        raise ConfigError("FALCON_MASSIVE_API_KEY is not set: the live trader needs it")
    trader = _trader(sessions, account=account, strategies=strategies, tickers=tickers,
                     kind="minute", params={}, cash=cash, picks=picks, margin=margin,
                     limits=limits or {}, costs=costs_of(settings), quiet=quiet)
    _warm_from_store(settings, trader, tickers or [])

    alerts = alert_engine(settings, sessions)

    def body(control: ServiceControl) -> int:
        source = MassivePollingSource(
            base_url=settings.data.rest_base_url, api_key=key,
            tickers=lambda: sorted(trader.watched(tickers or ())), is_open=calendar.is_open,
            poll_interval_s=poll_s, stop_event=control.stop_event,
            on_stale=alerts.on_stale if alerts is not None else (lambda _s: None),
        )
        settle_heap()
        control.ready(f"trading account {account}")
        try:
            while not control.stopping:
                now = _now()
                if not calendar.is_open(now):
                    # Outside the session: sleep until the next open, pinging the watchdog.
                    wait = (calendar.next_open(now) - now).total_seconds()
                    control.status(f"market closed, next open in {wait / 3600:.1f} h")
                    if control.wait(min(wait, 60.0)):
                        break
                    continue
                stats = run_batches(trader, _until_close(source, now), control, alerts)
                control.status(f"{stats.batches} batches, {stats.events} order events")
        finally:
            source.close()
        return 0

    return run_service(body, name=f"falcon-trader {account}")


def _now() -> datetime:
    from datetime import UTC

    return datetime.now(UTC)


class _until_close:
    """The source's batches until the session that is open at ``now`` closes."""

    def __init__(self, source: MassivePollingSource, now: datetime) -> None:
        self.source = source
        self.close = calendar.session_open_close(calendar.session_date(now))[1]

    def batches(self) -> Any:
        for batch in self.source.batches():
            yield batch
            if _now() >= self.close + timedelta(minutes=2):
                return


def _warm_from_store(settings: Settings, trader: Trader, tickers: list[str]) -> None:
    """Today's minute bars already in the store, so the windows are full after a restart."""
    try:
        today = calendar.session_date(_now())
        wanted = sorted(trader.watched(tickers))
        if not wanted:
            return
        source = ReplaySource.from_store(settings, wanted, today - timedelta(days=3), today,
                                         "minute")
        last = trader.state.last_bar_ts
        trader.warm(b for b in source.bars() if last is None or b.ts <= last)
    except (DataError, OSError) as exc:
        log.info("no minute history to warm up from (%s)", exc)
