"""Running the trader: strategies from the database, a bar source, and the service frame.

``falcon trader run`` (live, Massive polling) and ``falcon paper replay`` (the Parquet store) are
both :func:`run_batches` over a :class:`~falcon.paper.trader.Trader`: between two batches it pings
the watchdog and looks for a stop request, so SIGTERM lets the batch in hand commit, then exits 0.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from falcon import audit
from falcon.db.engine import transaction
from falcon.db.models import AuditEntry, PaperAccount, Strategy
from falcon.domain.market import Bar
from falcon.errors import NotFound, ValidationError
from falcon.paper.limits import RiskLimits
from falcon.paper.persist import create_account
from falcon.paper.signals import StrategySlot
from falcon.paper.sources import group_by_ts
from falcon.paper.trader import Trader

log = logging.getLogger(__name__)

__all__ = [
    "RunStats",
    "account_limits",
    "ensure_account",
    "paper_slots",
    "run_batches",
    "slots_by_name",
]


class _Control(Protocol):
    @property
    def stopping(self) -> bool: ...

    def ping(self, *, force: bool = False) -> None: ...


@dataclass
class RunStats:
    """What a run did."""

    batches: int = 0
    bars: int = 0
    events: int = 0
    stopped_early: bool = False


def _slot(
    name: str, doc: dict[str, Any], tickers: Sequence[str] | None, margin: int
) -> StrategySlot:
    from falcon.strategy import load_spec

    spec = load_spec(doc)
    universe = spec.universe.tickers
    chosen = frozenset(tickers) if tickers else (frozenset(universe) if universe else None)
    return StrategySlot(name=name, spec=spec, tickers=chosen, margin=margin)


def paper_slots(
    session: Session, tickers: Sequence[str] | None = None, margin: int = 50
) -> list[StrategySlot]:
    """The strategies promoted to paper trading (``strategies.status == 'paper'``)."""
    rows = session.scalars(select(Strategy).where(Strategy.status == "paper").order_by(Strategy.id))
    out = []
    for row in rows:
        try:
            out.append(_slot(row.name, row.spec, tickers, margin))
        except ValidationError as exc:
            log.error("strategy %s: invalid spec, not traded (%s)", row.name, exc)
    return out


def slots_by_name(
    session: Session, names: Iterable[str], tickers: Sequence[str] | None = None,
    params: dict[str, float] | None = None, margin: int = 50,
) -> list[StrategySlot]:
    """Strategies by name: a stored strategy, else a built-in one."""
    from falcon.strategy import builtin_document, builtin_names, load_spec

    out = []
    for name in names:
        row = session.scalar(select(Strategy).where(Strategy.name == name))
        if row is not None:
            doc = row.spec
        elif name in builtin_names():
            doc = builtin_document(name)
        else:
            raise NotFound(f"no strategy {name!r} (stored or built-in)")
        if params:
            spec = load_spec(doc, params)
            chosen = frozenset(tickers) if tickers else (
                frozenset(spec.universe.tickers) if spec.universe.tickers else None)
            out.append(StrategySlot(name=name, spec=spec, tickers=chosen, margin=margin))
        else:
            out.append(_slot(name, doc, tickers, margin))
    return out


def ensure_account(
    sessions: sessionmaker[Session], name: str, cash: float, *, long_only: bool = True
) -> int:
    """The id of account ``name``, created with ``cash`` if it does not exist yet."""
    with transaction(sessions) as s:
        row = s.scalar(select(PaperAccount).where(PaperAccount.name == name))
        if row is not None:
            return row.id
        return create_account(s, name, cash, long_only=long_only, actor="trader").id


def account_limits(session: Session, name: str, overrides: dict[str, Any] | None) -> RiskLimits:
    """Defaults < the account's last ``paper.limits`` audit entry < ``overrides``."""
    stored = session.scalar(
        select(AuditEntry.detail)
        .where(AuditEntry.action == "paper.limits", AuditEntry.subject == f"account:{name}")
        .order_by(AuditEntry.id.desc())
        .limit(1)
    )
    limits = RiskLimits().merged((stored or {}).get("limits"))
    return limits.merged(overrides)


def set_limits(session: Session, name: str, values: dict[str, Any], actor: str) -> RiskLimits:
    """Store new limits for account ``name`` (a config change in the audit log)."""
    limits = account_limits(session, name, values)
    audit.append(session, actor, "paper.limits", f"account:{name}", {"limits": limits.as_dict()})
    return limits


def _batches(source: Any) -> Iterator[list[Bar]]:
    if hasattr(source, "batches"):
        yield from source.batches()
    else:
        yield from group_by_ts(source.bars())


def _fills_and_halts(trader: Trader, result: Any, alerts: Any, was_halted: bool) -> bool:
    """Tell the alert engine about this batch's fills, and about a halt it caused."""
    from types import SimpleNamespace

    from falcon.domain.events import OrderFilled

    account_id = trader.state.account_id
    for event in result.events:
        if isinstance(event, OrderFilled):
            f = event.fill
            alerts.on_fill(SimpleNamespace(account_id=account_id, ticker=f.ticker,
                                           side=str(f.side), qty=f.qty, price=f.price))
    halted = bool(getattr(trader.state, "halted", False))
    if halted and not was_halted:
        alerts.on_halt(SimpleNamespace(id=account_id, name=trader.state.name,
                                       halt_reason=getattr(trader.state, "halt_reason", None)))
    return halted


def run_batches(trader: Trader, source: Any, control: _Control | None = None,
                alerts: Any = None) -> RunStats:
    """Feed ``source``'s batches to ``trader`` until it ends or a stop is requested.

    ``alerts`` (an :class:`~falcon.alerts.engine.AlertEngine`) sees every bar of the same stream
    before the trader does (its alerts need not wait for the trader's commit), with the batch's
    arrival time, and afterwards every fill and halt.
    """
    stats = RunStats()
    halted = bool(getattr(trader.state, "halted", False))
    for batch in _batches(source):
        arrived = now_utc()
        if control is not None:
            control.ping()
            if control.stopping:
                stats.stopped_early = True
                break
        if not batch:
            continue
        if alerts is not None:
            # Price and indicator rules first: a bar's alert should not wait for the trader's
            # commit. Fills and halts can only be told after the trader has made them.
            alerts.on_bars(batch, arrived)
        result = trader.process(batch)
        if alerts is not None:
            halted = _fills_and_halts(trader, result, alerts, halted)
        stats.batches += 1
        stats.bars += result.bars
        stats.events += len(result.events)
    return stats


def replay_window(start: date, end: date) -> tuple[date, date]:
    """Checked replay dates."""
    if end < start:
        raise ValidationError(f"--end {end} is before --start {start}")
    return start, end


def day_history_start(day: date, bars: int) -> date:
    """A date early enough that ``bars`` sessions of day bars lie between it and ``day``."""
    return day - timedelta(days=int(bars * 1.6) + 10)


def now_utc() -> datetime:
    """Now (a seam for tests)."""
    return datetime.now(UTC)
