"""Where a researched strategy is in its life, and every step with a reason.

::

    extracted --(backtest + look-ahead check, automatic)--> backtested --promote--> paper
        |                                                      |                     |
        +-------------------------retire-----------------------+---------------------+--> retired
    failed (the LLM never produced a valid spec; kept with its raw answers) ---retire---^

Every transition writes the new status and its reason on the ``strategies`` row, appends to the
row's ``provenance.history``, adds an entry to the hash-chained audit log and an ``Event`` of kind
``research`` (so live pages and the paper trader hear of it), all in one transaction.

Promotion to ``paper`` requires a strategy that was backtested and whose look-ahead check came
back clean; the paper trader runs strategies in status ``paper``.

Example::

    with sessions.begin() as s:
        promote(s, 12, reason="clean look-ahead, Sharpe 1.1 on 20 tickers", actor="alice")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from falcon.db.models import Event, Strategy
from falcon.db.types import utcnow
from falcon.errors import FalconError, NotFound, ValidationError

__all__ = [
    "STATUSES",
    "LifecycleError",
    "get_research",
    "list_research",
    "promote",
    "record",
    "retire",
    "transition",
]

SOURCE = "research"
STATUSES = ("failed", "extracted", "backtested", "paper", "retired")
_ALLOWED: dict[str, set[str]] = {
    "extracted": {"backtested", "retired", "extracted"},
    "backtested": {"backtested", "paper", "retired"},
    "paper": {"retired"},
    "failed": {"retired"},
    "retired": set(),
}
_MAX_REASON = 2000


class LifecycleError(FalconError):
    """A transition the lifecycle does not allow (the message says why and what would)."""

    exit_code = 65


def _reason(reason: str | None) -> str:
    text = (reason or "").strip()
    if not text:
        raise ValidationError("a reason is required for every lifecycle step (--reason TEXT)")
    if "\x00" in text:
        raise ValidationError("the reason must not contain NUL characters")
    return text[:_MAX_REASON]


def record(session: Session, strategy: Strategy, action: str, reason: str, actor: str,
           detail: dict[str, Any] | None = None) -> None:
    """The audit entry and the ``research`` event of one step (in the caller's transaction)."""
    payload = {"strategy_id": strategy.id, "name": strategy.name, "action": action,
               "status": strategy.status, "reason": reason, **(detail or {})}
    session.add(Event(kind="research", payload=payload))
    try:
        from falcon.audit import append
    except ImportError:  # pragma: no cover - the audit log ships with Falcon
        return
    append(session, actor[:64] or "unknown", f"research.{action}"[:64],
           f"strategy:{strategy.id}", {"reason": reason, **(detail or {})})


def transition(session: Session, strategy: Strategy, to: str, *, reason: str, actor: str,
               action: str | None = None, detail: dict[str, Any] | None = None) -> Strategy:
    """Move ``strategy`` to status ``to`` with ``reason``; raises :class:`LifecycleError`."""
    reason = _reason(reason)
    before = strategy.status
    if to not in _ALLOWED.get(before, set()):
        raise LifecycleError(f"strategy {strategy.id} is {before}; it cannot become {to}")
    strategy.status = to
    strategy.status_reason = reason
    provenance = dict(strategy.provenance or {})
    history = list(provenance.get("history", []))
    history.append({"ts": utcnow().isoformat(), "from": before, "to": to, "reason": reason,
                    "actor": actor})
    provenance["history"] = history
    strategy.provenance = provenance  # a new dict, so the JSON column is seen as changed
    session.flush()
    record(session, strategy, action or to, reason, actor, {"from": before, "to": to,
                                                           **(detail or {})})
    return strategy


def get_research(session: Session, strategy_id: int) -> Strategy:
    """The researched strategy with this id; :class:`NotFound` otherwise."""
    strategy = session.get(Strategy, strategy_id)
    if strategy is None or strategy.source != SOURCE:
        raise NotFound(f"no researched strategy with id {strategy_id} (see `falcon research list`)")
    return strategy


def list_research(session: Session, status: str | None = None) -> Sequence[Strategy]:
    """Researched strategies, newest first, optionally of one status."""
    stmt = select(Strategy).where(Strategy.source == SOURCE)
    if status is not None:
        if status not in STATUSES:
            raise ValidationError(f"unknown status {status!r} (one of {', '.join(STATUSES)})")
        stmt = stmt.where(Strategy.status == status)
    return session.scalars(stmt.order_by(Strategy.id.desc())).all()


def lookahead_clean(strategy: Strategy) -> bool | None:
    """The stored look-ahead verdict: True clean, False not, None never checked."""
    evaluation = (strategy.provenance or {}).get("evaluation") or {}
    verdict = (evaluation.get("lookahead") or {}).get("clean")
    return verdict if isinstance(verdict, bool) else None


def promote(session: Session, strategy_id: int, *, reason: str, actor: str) -> Strategy:
    """``backtested`` → ``paper``; only for a look-ahead-clean backtest."""
    strategy = get_research(session, strategy_id)
    if strategy.status != "backtested":
        hint = ("run `falcon research backtest ID` first" if strategy.status == "extracted"
                else "only a backtested strategy can be promoted")
        raise LifecycleError(f"strategy {strategy_id} is {strategy.status}: {hint}")
    clean = lookahead_clean(strategy)
    if clean is not True:
        why = "failed" if clean is False else "was never run"
        raise LifecycleError(f"strategy {strategy_id}: its look-ahead check {why}; "
                             "only a look-ahead-clean strategy can be paper-traded")
    return transition(session, strategy, "paper", reason=reason, actor=actor, action="promoted")


def retire(session: Session, strategy_id: int, *, reason: str, actor: str) -> Strategy:
    """Any status → ``retired`` (the row and its history stay)."""
    strategy = get_research(session, strategy_id)
    if strategy.status == "retired":
        raise LifecycleError(f"strategy {strategy_id} is already retired")
    return transition(session, strategy, "retired", reason=reason, actor=actor, action="retired")
