"""``gen_*`` factories: rows for web tests, with defaults that can be overridden by keyword."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from falcon.db.models import (
    AlertEvent,
    AlertRule,
    BacktestEquity,
    BacktestRun,
    BacktestTrade,
    DataImport,
    Event,
    Fill,
    Job,
    Order,
    PaperAccount,
    Position,
    ScreenPick,
    ScreenRun,
    ServiceRun,
    Strategy,
)

T0 = datetime(2024, 3, 1, 15, 30, tzinfo=UTC)


def _add(session: Session, row: Any) -> Any:
    session.add(row)
    session.flush()
    return row


def gen_account(session: Session, **kw: Any) -> PaperAccount:
    values = {"name": "main", "starting_cash": Decimal(100_000), "cash": Decimal(90_000)} | kw
    return _add(session, PaperAccount(**values))


def gen_order(session: Session, account: PaperAccount, **kw: Any) -> Order:
    n = kw.pop("n", 1)
    values = {
        "account_id": account.id,
        "client_order_id": f"coid-{account.id}-{n}",
        "ticker": "AAPL",
        "side": "buy",
        "type": "limit",
        "qty": 10,
        "limit_price": 180.5,
        "status": "open",
    } | kw
    return _add(session, Order(**values))


def gen_fill(session: Session, order: Order, **kw: Any) -> Fill:
    values = {
        "order_id": order.id,
        "account_id": order.account_id,
        "ticker": order.ticker,
        "side": order.side,
        "qty": order.qty,
        "price": 180.25,
        "fee": Decimal("1.25"),
        "ts": T0,
        "idempotency_key": f"fill-{order.id}",
    } | kw
    return _add(session, Fill(**values))


def gen_position(session: Session, account: PaperAccount, **kw: Any) -> Position:
    values = {
        "account_id": account.id,
        "ticker": "AAPL",
        "qty": 10,
        "avg_cost": Decimal("180.25"),
    } | kw
    return _add(session, Position(**values))


def gen_strategy(session: Session, **kw: Any) -> Strategy:
    values = {
        "name": "sma-cross",
        "source": "builtin",
        "spec": {"entry": {"all": []}},
        "status": "active",
    } | kw
    return _add(session, Strategy(**values))


def gen_screen_run(session: Session, **kw: Any) -> ScreenRun:
    picks = kw.pop("picks", 2)
    llm = kw.pop("llm", {"summary": "Strong momentum."})
    values = {
        "profile": "momentum",
        "as_of": date(2024, 3, 1),
        "status": "done",
        "universe_size": 500,
        "candidates": 20,
        "ranking": "llm",
    } | kw
    run = _add(session, ScreenRun(**values))
    for rank in range(1, picks + 1):
        session.add(
            ScreenPick(
                run_id=run.id,
                ticker=f"T{rank}",
                rank=rank,
                score=1.0 / rank,
                close=10.0 * rank,
                factors={"rsi": 55.0},
                reasons=["breakout"],
                stop=9.0,
                target=12.0,
                llm=llm,
            )
        )
    session.flush()
    return run


def gen_backtest(session: Session, strategy: Strategy, **kw: Any) -> BacktestRun:
    values = {
        "strategy_id": strategy.id,
        "strategy_name": strategy.name,
        "spec": strategy.spec,
        "params": {"fast": 10},
        "symbols": ["AAPL"],
        "start": date(2023, 1, 3),
        "end": date(2023, 12, 29),
        "status": "done",
        "metrics": {"return_pct": 12.0, "sharpe": 1.1, "max_drawdown_pct": 8.0},
    } | kw
    run = _add(session, BacktestRun(**values))
    session.add(
        BacktestTrade(
            run_id=run.id,
            ticker="AAPL",
            side="long",
            qty=5,
            entry_ts=T0,
            entry_price=100.0,
            exit_ts=T0,
            exit_price=110.0,
            pnl=50.0,
            return_pct=0.1,
            exit_reason="target",
        )
    )
    session.add(BacktestEquity(run_id=run.id, ts=T0, equity=100_050.0, cash=100_050.0))
    session.flush()
    return run


def gen_alert(session: Session, **kw: Any) -> AlertRule:
    rule = _add(
        session,
        AlertRule(
            **(
                {
                    "name": "price above",
                    "kind": "price_cross",
                    "params": {"ticker": "AAPL", "above": 200},
                    "channels": ["slack"],
                }
                | kw
            )
        ),
    )
    _add(
        session,
        AlertEvent(rule_id=rule.id, ticker="AAPL", message="AAPL crossed 200", latency_ms=12.5),
    )
    return rule


def gen_everything(session: Session) -> dict[str, Any]:
    """One of each row a page or API route shows; ids are all 1 in a fresh database."""
    account = gen_account(session)
    order = gen_order(session, account)
    gen_fill(session, order)
    gen_position(session, account)
    strategy = gen_strategy(session)
    gen_strategy(
        session,
        name="from-video",
        source="research",
        status="extracted",
        provenance={"url": "https://www.youtube.com/watch?v=abc", "title": "My edge"},
    )
    backtest = gen_backtest(session, strategy)
    run = gen_screen_run(session)
    rule = gen_alert(session)
    job = _add(session, Job(kind="backtest", payload={"strategy_id": strategy.id}))
    _add(session, ServiceRun(name="screen", outcome="ok", finished_at=T0))
    _add(
        session,
        DataImport(
            kind="day",
            trade_date=date(2024, 3, 1),
            source="s3://x",
            sha256="0" * 64,
            status="imported",
            rows_total=10,
            rows_kept=10,
        ),
    )
    _add(session, Event(kind="fill", payload={"ticker": "AAPL"}))
    return {
        "account": account,
        "order": order,
        "strategy": strategy,
        "backtest": backtest,
        "run": run,
        "rule": rule,
        "job": job,
    }
