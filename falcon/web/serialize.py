"""Rows to JSON-ready dicts: one function per model, shared by the API and the pages' JSON.

Times are ISO 8601 in UTC, dates ISO, money as numbers (floats: JSON has no decimals).
The shapes here are the ones the OpenAPI document in ``api/v1/openapi.py`` describes.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from falcon.db.models import (
    AlertEvent,
    AlertRule,
    BacktestRun,
    BacktestTrade,
    Event,
    Fill,
    Job,
    Order,
    PaperAccount,
    Position,
    ScreenPick,
    ScreenRun,
    Strategy,
    User,
)


def json_default(value: Any) -> Any:
    """``json.dumps`` default: dates and times as ISO text, decimals as numbers."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _day(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _money(value: Decimal | None) -> float | None:
    return float(value) if value is not None else None


def user(u: User) -> dict[str, Any]:
    """The logged-in user (never the hash or the TOTP secret)."""
    return {"username": u.username, "is_admin": u.is_admin, "totp": bool(u.totp_secret)}


def account(a: PaperAccount, positions: list[Position]) -> dict[str, Any]:
    """An account with its book equity (cash plus positions at cost)."""
    at_cost = sum((p.qty * p.avg_cost for p in positions), Decimal(0))
    return {
        "id": a.id,
        "name": a.name,
        "starting_cash": _money(a.starting_cash),
        "cash": _money(a.cash),
        "equity": float(a.cash + at_cost),
        "open_positions": sum(1 for p in positions if p.qty != 0),
        "long_only": a.long_only,
        "halted": a.halted,
        "halt_reason": a.halt_reason,
        "last_bar_ts": _ts(a.last_bar_ts),
        "created_at": _ts(a.created_at),
    }


def position(p: Position) -> dict[str, Any]:
    """One holding."""
    return {
        "account_id": p.account_id,
        "ticker": p.ticker,
        "qty": p.qty,
        "avg_cost": _money(p.avg_cost),
        "realized_pnl": _money(p.realized_pnl),
        "strategy": p.strategy,
        "opened_at": _ts(p.opened_at),
        "updated_at": _ts(p.updated_at),
    }


def order(o: Order) -> dict[str, Any]:
    """One order."""
    return {
        "id": o.id,
        "account_id": o.account_id,
        "client_order_id": o.client_order_id,
        "ticker": o.ticker,
        "side": o.side,
        "type": o.type,
        "qty": o.qty,
        "limit_price": o.limit_price,
        "stop_price": o.stop_price,
        "trail_pct": o.trail_pct,
        "time_in_force": o.time_in_force,
        "status": o.status,
        "parent_id": o.parent_id,
        "oco_group": o.oco_group,
        "strategy": o.strategy,
        "reason": o.reason,
        "reject_reason": o.reject_reason,
        "filled_qty": o.filled_qty,
        "avg_fill_price": o.avg_fill_price,
        "created_at": _ts(o.created_at),
        "updated_at": _ts(o.updated_at),
    }


def fill(f: Fill) -> dict[str, Any]:
    """One simulated execution."""
    return {
        "id": f.id,
        "order_id": f.order_id,
        "account_id": f.account_id,
        "ticker": f.ticker,
        "side": f.side,
        "qty": f.qty,
        "price": f.price,
        "fee": _money(f.fee),
        "ts": _ts(f.ts),
    }


def screen_run(r: ScreenRun) -> dict[str, Any]:
    """One screen run (without its picks)."""
    return {
        "id": r.id,
        "profile": r.profile,
        "as_of": _day(r.as_of),
        "status": r.status,
        "universe_size": r.universe_size,
        "candidates": r.candidates,
        "ranking": r.ranking,
        "ranking_note": r.ranking_note,
        "error": r.error,
        "started_at": _ts(r.started_at),
        "finished_at": _ts(r.finished_at),
    }


def screen_pick(p: ScreenPick) -> dict[str, Any]:
    """One ranked candidate, with the LLM's notes when the run was LLM-ranked."""
    return {
        "id": p.id,
        "run_id": p.run_id,
        "ticker": p.ticker,
        "rank": p.rank,
        "score": p.score,
        "close": p.close,
        "factors": p.factors or {},
        "reasons": p.reasons or [],
        "entry_low": p.entry_low,
        "entry_high": p.entry_high,
        "stop": p.stop,
        "target": p.target,
        "fresh_until": _ts(p.fresh_until),
        "llm": p.llm,
    }


def strategy(s: Strategy, *, with_spec: bool = False) -> dict[str, Any]:
    """A strategy; its spec only when asked (specs can be large)."""
    out: dict[str, Any] = {
        "id": s.id,
        "name": s.name,
        "source": s.source,
        "status": s.status,
        "status_reason": s.status_reason,
        "provenance": s.provenance,
        "created_at": _ts(s.created_at),
        "updated_at": _ts(s.updated_at),
    }
    if with_spec:
        out["spec"] = s.spec
    return out


def backtest(b: BacktestRun, *, detail: bool = False) -> dict[str, Any]:
    """A backtest run; with ``detail`` its spec, params and trades too."""
    out: dict[str, Any] = {
        "id": b.id,
        "strategy_id": b.strategy_id,
        "strategy_name": b.strategy_name,
        "symbols": b.symbols or [],
        "start": _day(b.start),
        "end": _day(b.end),
        "status": b.status,
        "metrics": b.metrics,
        "error": b.error,
        "created_at": _ts(b.created_at),
    }
    if detail:
        out["spec"] = b.spec
        out["params"] = b.params or {}
        out["trades"] = [backtest_trade(t) for t in b.trades]
    return out


def backtest_trade(t: BacktestTrade) -> dict[str, Any]:
    """One trade of a backtest."""
    return {
        "ticker": t.ticker,
        "side": t.side,
        "qty": t.qty,
        "entry_ts": _ts(t.entry_ts),
        "entry_price": t.entry_price,
        "exit_ts": _ts(t.exit_ts),
        "exit_price": t.exit_price,
        "pnl": t.pnl,
        "return_pct": t.return_pct,
        "exit_reason": t.exit_reason,
    }


def job(j: Job) -> dict[str, Any]:
    """A queued or finished job."""
    return {
        "id": j.id,
        "kind": j.kind,
        "status": j.status,
        "payload": j.payload or {},
        "progress": j.progress,
        "progress_note": j.progress_note,
        "attempts": j.attempts,
        "result": j.result,
        "error": j.error,
        "created_at": _ts(j.created_at),
        "started_at": _ts(j.started_at),
        "finished_at": _ts(j.finished_at),
    }


def alert_rule(r: AlertRule) -> dict[str, Any]:
    """An alert rule."""
    return {
        "id": r.id,
        "name": r.name,
        "kind": r.kind,
        "params": r.params or {},
        "channels": r.channels or [],
        "cooldown_s": r.cooldown_s,
        "market_hours_only": r.market_hours_only,
        "enabled": r.enabled,
        "last_fired_at": _ts(r.last_fired_at),
        "created_at": _ts(r.created_at),
    }


def alert_event(e: AlertEvent) -> dict[str, Any]:
    """An alert that fired."""
    return {
        "id": e.id,
        "rule_id": e.rule_id,
        "ticker": e.ticker,
        "message": e.message,
        "latency_ms": e.latency_ms,
        "created_at": _ts(e.created_at),
    }


def event(e: Event) -> dict[str, Any]:
    """A live-update event as the stream sends it."""
    return {"id": e.id, "ts": _ts(e.ts), "kind": e.kind, "payload": e.payload or {}}
