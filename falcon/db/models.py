"""SQLAlchemy 2 models: every row Falcon keeps.

Times are aware UTC (:class:`UTCDateTime`); money in the ledger is exact (:class:`Money`); prices
of simulated trades are floats, like the market data they come from. JSON columns hold documents
(strategy specs, metrics, factor values) that are read whole and never queried inside.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    Unicode,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from falcon.db.types import Money, UTCDateTime, utcnow

# Stable constraint names, so that migrations can alter them on SQLite (batch mode) and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BigInteger primary keys autoincrement on PostgreSQL; SQLite only does that for INTEGER.
BigId = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    """Declarative base with the naming convention."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


def _id() -> Mapped[int]:
    return mapped_column(BigId, primary_key=True, autoincrement=True)


def _created() -> Mapped[datetime]:
    return mapped_column(UTCDateTime, default=utcnow, nullable=False)


# --- market data -----------------------------------------------------------------------------


class DataImport(Base):
    """One flat file imported (or rejected) into the Parquet store."""

    __tablename__ = "data_imports"
    __table_args__ = (Index("ix_data_imports_kind_date", "kind", "trade_date"),)

    id: Mapped[int] = _id()
    kind: Mapped[str] = mapped_column(String(16))  # day | minute
    trade_date: Mapped[date | None] = mapped_column(Date)
    source: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))  # imported | partial | rejected | unchanged
    rows_total: Mapped[int] = mapped_column(Integer, default=0)
    rows_kept: Mapped[int] = mapped_column(Integer, default=0)
    rows_rejected: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(Text)
    imported_at: Mapped[datetime] = _created()


class Ticker(Base):
    """Reference data for one ticker (Massive reference API or a user CSV)."""

    __tablename__ = "tickers"

    ticker: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    type: Mapped[str | None] = mapped_column(String(16))  # CS, ETF, ...
    exchange: Mapped[str | None] = mapped_column(String(16))
    sector: Mapped[str | None] = mapped_column(String(64))
    market_cap: Mapped[float | None] = mapped_column(Float)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = _created()


class Split(Base):
    """A stock split: ``split_to`` new shares for every ``split_from`` old ones."""

    __tablename__ = "splits"
    __table_args__ = (UniqueConstraint("ticker", "execution_date", name="uq_splits_ticker_date"),)

    id: Mapped[int] = _id()
    ticker: Mapped[str] = mapped_column(String(16), index=True)
    execution_date: Mapped[date] = mapped_column(Date)
    split_from: Mapped[float] = mapped_column(Float)
    split_to: Mapped[float] = mapped_column(Float)


# --- screener --------------------------------------------------------------------------------


class ScreenRun(Base):
    """One screen of one profile for one session."""

    __tablename__ = "screen_runs"
    __table_args__ = (Index("ix_screen_runs_profile_date", "profile", "as_of"),)

    id: Mapped[int] = _id()
    profile: Mapped[str] = mapped_column(String(64))
    as_of: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default="running")
    universe_size: Mapped[int] = mapped_column(Integer, default=0)
    candidates: Mapped[int] = mapped_column(Integer, default=0)
    ranking: Mapped[str] = mapped_column(String(16), default="rules")  # rules | llm
    ranking_note: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = _created()
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    picks: Mapped[list[ScreenPick]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="ScreenPick.rank"
    )


class ScreenPick(Base):
    """A ranked candidate of a screen run, with what the trader needs to act on it."""

    __tablename__ = "screen_picks"

    id: Mapped[int] = _id()
    run_id: Mapped[int] = mapped_column(
        ForeignKey("screen_runs.id", ondelete="CASCADE"), index=True
    )
    ticker: Mapped[str] = mapped_column(String(16), index=True)
    rank: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    close: Mapped[float] = mapped_column(Float)
    factors: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    entry_low: Mapped[float | None] = mapped_column(Float)
    entry_high: Mapped[float | None] = mapped_column(Float)
    stop: Mapped[float | None] = mapped_column(Float)
    target: Mapped[float | None] = mapped_column(Float)
    fresh_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    llm: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    run: Mapped[ScreenRun] = relationship(back_populates="picks")


# --- strategies and backtests ----------------------------------------------------------------


class Strategy(Base):
    """A strategy spec (JSON data, never code) and where it is in its life."""

    __tablename__ = "strategies"

    id: Mapped[int] = _id()
    name: Mapped[str] = mapped_column(String(120), unique=True)
    source: Mapped[str] = mapped_column(String(16))  # builtin | user | research
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="extracted")
    status_reason: Mapped[str | None] = mapped_column(Text)
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class BacktestRun(Base):
    """One backtest: its inputs, its metrics, and (as children) its trades and equity."""

    __tablename__ = "backtest_runs"

    id: Mapped[int] = _id()
    strategy_id: Mapped[int | None] = mapped_column(
        ForeignKey("strategies.id", ondelete="SET NULL")
    )
    strategy_name: Mapped[str] = mapped_column(String(120))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    symbols: Mapped[list[Any]] = mapped_column(JSON, default=list)
    start: Mapped[date | None] = mapped_column(Date)
    end: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default="done")
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()

    trades: Mapped[list[BacktestTrade]] = relationship(
        cascade="all, delete-orphan", order_by="BacktestTrade.entry_ts"
    )


class BacktestTrade(Base):
    """A closed (or, at the end, still open) trade of a backtest."""

    __tablename__ = "backtest_trades"

    id: Mapped[int] = _id()
    run_id: Mapped[int] = mapped_column(
        ForeignKey("backtest_runs.id", ondelete="CASCADE"), index=True
    )
    ticker: Mapped[str] = mapped_column(String(16))
    side: Mapped[str] = mapped_column(String(8))  # long | short
    qty: Mapped[int] = mapped_column(BigInteger)
    entry_ts: Mapped[datetime] = mapped_column(UTCDateTime)
    entry_price: Mapped[float] = mapped_column(Float)
    exit_ts: Mapped[datetime | None] = mapped_column(UTCDateTime)
    exit_price: Mapped[float | None] = mapped_column(Float)
    pnl: Mapped[float | None] = mapped_column(Float)
    return_pct: Mapped[float | None] = mapped_column(Float)
    exit_reason: Mapped[str | None] = mapped_column(String(32))


class BacktestEquity(Base):
    """One point of a backtest's equity curve."""

    __tablename__ = "backtest_equity"

    run_id: Mapped[int] = mapped_column(
        ForeignKey("backtest_runs.id", ondelete="CASCADE"), primary_key=True
    )
    ts: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    equity: Mapped[float] = mapped_column(Float)
    cash: Mapped[float] = mapped_column(Float)


# --- paper trading ---------------------------------------------------------------------------


class PaperAccount(Base):
    """A simulated account; cash and positions change only through ledger entries."""

    __tablename__ = "paper_accounts"

    id: Mapped[int] = _id()
    name: Mapped[str] = mapped_column(String(64), unique=True)
    starting_cash: Mapped[Decimal] = mapped_column(Money)
    cash: Mapped[Decimal] = mapped_column(Money)
    long_only: Mapped[bool] = mapped_column(Boolean, default=True)
    halted: Mapped[bool] = mapped_column(Boolean, default=False)
    halt_reason: Mapped[str | None] = mapped_column(Text)
    peak_equity: Mapped[Decimal | None] = mapped_column(Money)
    last_bar_ts: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The paper trader's quiet retries (falcon.paper.streaks): open refusal streaks and the
    # entries held in memory only, stored with each batch that changes them. Deferred: read
    # once when the trader starts, not with the row every batch locks.
    quiet_state: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True), deferred=True)
    created_at: Mapped[datetime] = _created()


class Order(Base):
    """An order of a paper account; ``client_order_id`` is its idempotency key."""

    __tablename__ = "orders"
    __table_args__ = (Index("ix_orders_account_status", "account_id", "status"),)

    id: Mapped[int] = _id()
    account_id: Mapped[int] = mapped_column(ForeignKey("paper_accounts.id", ondelete="CASCADE"))
    client_order_id: Mapped[str] = mapped_column(String(128), unique=True)
    ticker: Mapped[str] = mapped_column(String(16))
    side: Mapped[str] = mapped_column(String(8))  # buy | sell
    type: Mapped[str] = mapped_column(
        String(16)
    )  # market | limit | stop | stop_limit | trailing_stop
    qty: Mapped[int] = mapped_column(BigInteger)
    limit_price: Mapped[float | None] = mapped_column(Float)
    stop_price: Mapped[float | None] = mapped_column(Float)
    trail_pct: Mapped[float | None] = mapped_column(Float)
    time_in_force: Mapped[str] = mapped_column(String(8), default="day")  # day | gtc
    status: Mapped[str] = mapped_column(String(16), default="open")
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    oco_group: Mapped[str | None] = mapped_column(String(64))
    strategy: Mapped[str | None] = mapped_column(String(120))
    reason: Mapped[str | None] = mapped_column(Text)
    reject_reason: Mapped[str | None] = mapped_column(String(32))
    filled_qty: Mapped[int] = mapped_column(BigInteger, default=0)
    avg_fill_price: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Fill(Base):
    """A simulated execution of (part of) an order."""

    __tablename__ = "fills"

    id: Mapped[int] = _id()
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("paper_accounts.id", ondelete="CASCADE"))
    ticker: Mapped[str] = mapped_column(String(16), index=True)
    side: Mapped[str] = mapped_column(String(8))
    qty: Mapped[int] = mapped_column(BigInteger)
    price: Mapped[float] = mapped_column(Float)
    fee: Mapped[Decimal] = mapped_column(Money)
    ts: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    idempotency_key: Mapped[str] = mapped_column(String(160), unique=True)


class Position(Base):
    """Holdings of one ticker in one account (signed: negative is short)."""

    __tablename__ = "positions"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("paper_accounts.id", ondelete="CASCADE"), primary_key=True
    )
    ticker: Mapped[str] = mapped_column(String(16), primary_key=True)
    qty: Mapped[int] = mapped_column(BigInteger)
    avg_cost: Mapped[Decimal] = mapped_column(Money)
    realized_pnl: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    strategy: Mapped[str | None] = mapped_column(String(120))
    opened_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class LedgerEntry(Base):
    """One leg of a double-entry transaction; the legs of a ``txn_id`` sum to zero."""

    __tablename__ = "ledger_entries"
    __table_args__ = (Index("ix_ledger_entries_account_txn", "account_id", "txn_id"),)

    id: Mapped[int] = _id()
    account_id: Mapped[int] = mapped_column(ForeignKey("paper_accounts.id", ondelete="CASCADE"))
    txn_id: Mapped[str] = mapped_column(String(64))
    book: Mapped[str] = mapped_column(String(64))  # cash, position:AAPL, fees, equity, pnl
    amount: Mapped[Decimal] = mapped_column(Money)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    fill_id: Mapped[int | None] = mapped_column(ForeignKey("fills.id"))
    memo: Mapped[str | None] = mapped_column(Text)
    ts: Mapped[datetime] = _created()


# --- alerts ----------------------------------------------------------------------------------


class AlertRule(Base):
    """A rule the alert engine evaluates on every bar or event."""

    __tablename__ = "alert_rules"

    id: Mapped[int] = _id()
    name: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    channels: Mapped[list[Any]] = mapped_column(JSON, default=list)
    cooldown_s: Mapped[int] = mapped_column(Integer, default=3600)
    market_hours_only: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = _created()


class AlertEvent(Base):
    """An alert that fired, with the time from its bar's arrival to the alert."""

    __tablename__ = "alert_events"

    id: Mapped[int] = _id()
    rule_id: Mapped[int | None] = mapped_column(
        ForeignKey("alert_rules.id", ondelete="SET NULL"), index=True
    )
    ticker: Mapped[str | None] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = _created()


class AlertDelivery(Base):
    """The outbox: one row per (alert, channel) until delivered or dead-lettered."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (Index("ix_alert_deliveries_status_due", "status", "next_attempt_at"),)

    id: Mapped[int] = _id()
    event_id: Mapped[int] = mapped_column(ForeignKey("alert_events.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|sent|dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = _created()
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# --- people, audit, usage, jobs --------------------------------------------------------------


class User(Base):
    """A dashboard user; the password is an argon2 hash, never the password."""

    __tablename__ = "users"

    id: Mapped[int] = _id()
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    # The last TOTP time step accepted: a code is good once, never replayed within its window.
    totp_last_counter: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = _created()
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEntry(Base):
    """Append-only, hash-chained log of orders, fills, risk decisions, halts and config changes."""

    __tablename__ = "audit_log"

    id: Mapped[int] = _id()
    ts: Mapped[datetime] = _created()
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class LLMUsage(Base):
    """One call to the LLM: tokens, cost and outcome, for budgets and the dashboard."""

    __tablename__ = "llm_usage"

    id: Mapped[int] = _id()
    ts: Mapped[datetime] = _created()
    purpose: Mapped[str] = mapped_column(String(32))  # screen_rank | research_extract ...
    model: Mapped[str] = mapped_column(String(120))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    ok: Mapped[bool] = mapped_column(Boolean, default=True)
    error: Mapped[str | None] = mapped_column(Text)


class Job(Base):
    """Long work (backtests, optimisations, research) queued for workers (SKIP LOCKED)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_priority", "status", "priority", "id"),)

    id: Mapped[int] = _id()
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # queued | running | done | failed | cancelled
    status: Mapped[str] = mapped_column(String(16), default="queued")
    priority: Mapped[int] = mapped_column(Integer, default=100)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    worker: Mapped[str | None] = mapped_column(String(120))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    progress_note: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ServiceRun(Base):
    """A scheduled or service run (screen, sync, housekeeping) for the system page."""

    __tablename__ = "service_runs"
    __table_args__ = (
        Index("ix_service_runs_name_started", "name", "started_at"),
        # One row per scheduled firing: two schedulers (two compute nodes) racing for the same
        # job and time cannot both record, and so cannot both run, it.
        UniqueConstraint("name", "scheduled_for", name="uq_service_runs_name_scheduled_for"),
    )

    id: Mapped[int] = _id()
    name: Mapped[str] = mapped_column(String(64))
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime] = _created()
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(16), default="running")
    error: Mapped[str | None] = mapped_column(Text)


class ApiToken(Base):
    """A bearer token for /api/v1; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = _id()
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = _created()
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Event(Base):
    """A change other processes should hear about (fills, screens, alerts) for live pages.

    Rows are the transport across processes and nodes: readers poll by id (SQLite) or wake on
    PostgreSQL NOTIFY, never on one process's memory.
    """

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_kind_ts", "kind", "ts"),)

    id: Mapped[int] = _id()
    ts: Mapped[datetime] = _created()
    kind: Mapped[str] = mapped_column(String(32), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


#: APScheduler's job store (falcon.services.scheduler): its own columns, declared here so that the
#: migrations create it with everything else (APScheduler then finds it and creates nothing).
apscheduler_jobs = Table(
    "apscheduler_jobs",
    Base.metadata,
    Column("id", Unicode(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)
