"""The paper trader: bars in, orders and fills out, one database transaction per timestamp.

:meth:`Trader.process` takes every bar of one timestamp (a *batch*: one bar per ticker) and
commits its whole effect -- fills, new orders, ledger entries, audit entries, risk state and
``PaperAccount.last_bar_ts`` -- in one transaction. A crash loses at most the batch in flight,
which the restarted trader processes again from ``last_bar_ts`` (its orders have deterministic
``client_order_id``\\ s, so nothing can be decided twice).

Within a batch (the backtester's order of events, DESIGN.md "Conventions"):

1. external changes are read: the ``halted`` flag, orders canceled on the dashboard, pending
   orders submitted from the CLI;
2. the bars of tickers *without* an entry waiting are worked through the order book (exits at the
   open, stops and targets inside the bar);
3. entries decided on the previous bar are sized at this bar's open (slippage included, cash left
   after step 2, equity at the previous closes), checked against the risk limits, submitted as a
   market order with their stop loss / take profit (a bracket) and worked through this bar;
4. drawdown and daily-loss limits are judged on the new equity;
5. the strategies see the new bars (rolling windows): an exit signal submits a market order for
   the next open, an entry signal records a *pending* entry, sized at the next bar's open like the
   backtester's;
6. screener picks whose close is inside their entry range become pending entries too.

Quiet retries (:mod:`falcon.paper.streaks`): a strategy's entry that keeps being refused at the
open for the same cause is still decided and retried on every bar, but after the first refusal
its retries are held in memory only (``PaperAccount.quiet_state``, stored with the batch) and
written only when the outcome changes (another cause, or a fill), plus one
``order.refused_repeatedly`` audit entry when the streak ends. ``quiet_retries=False`` writes
every retry, as before.

Only bars inside an NYSE session are traded (day bars: a trading day; minute bars: the regular
session, early closes included).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import BigInteger, Select, any_, bindparam, or_, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, sessionmaker

from falcon import audit, calendar
from falcon.db.engine import transaction
from falcon.db.models import Order, PaperAccount, Ticker
from falcon.db.types import utcnow
from falcon.domain.events import (
    CancelReason,
    OrderEvent,
    OrderFilled,
    OrderRejected,
    RejectReason,
)
from falcon.domain.market import Bar
from falcon.domain.orders import Order as DomainOrder
from falcon.domain.orders import Position, Side
from falcon.execution.fills import CostModel
from falcon.paper import persist, restore
from falcon.paper.decisions import DecisionLog, Entries, client_order_id
from falcon.paper.limits import RiskLimits
from falcon.paper.persist import ACTOR, AccountState, money
from falcon.paper.picks import PickBook
from falcon.paper.signals import BarColumns, Signal, SlotStream, StrategySlot, Windows

log = logging.getLogger(__name__)

__all__ = ["BatchResult", "Trader", "client_order_id", "equity_decimal", "in_session"]


def in_session(ts: datetime, kind: str) -> bool:
    """True when a bar of ``kind`` starting at ``ts`` belongs to an NYSE session."""
    if kind == "day":
        try:
            return calendar.is_trading_day(calendar.session_date(ts))
        except calendar.CalendarError:
            return False
    try:
        return calendar.is_open(ts)
    except calendar.CalendarError:
        return False


@dataclass
class BatchResult:
    """What one batch did (for logs, tests and the benchmark)."""

    ts: datetime
    bars: int
    events: list[OrderEvent] = field(default_factory=list)
    decisions: int = 0
    skipped: bool = False


class Trader:
    """One paper account driven by bars; see the module docstring for a batch's steps."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        account: str,
        slots: Iterable[StrategySlot] = (),
        kind: str = "day",
        limits: RiskLimits | None = None,
        costs: CostModel | None = None,
        picks: bool = True,
        log_sink: DecisionLog | None = None,
        quiet_retries: bool = True,
    ) -> None:
        if kind not in ("day", "minute"):
            raise ValueError("kind must be 'day' or 'minute'")
        self.sessions = sessions
        self.kind = kind
        self.slots = [s for s in slots if s.spec.timeframe == kind]
        self.skipped_slots = [s.name for s in slots if s.spec.timeframe != kind]
        self.limits = limits or RiskLimits()
        self.costs = costs or CostModel()
        self.log = log_sink or DecisionLog()
        self.quiet_retries = quiet_retries
        bind = sessions.kw.get("bind")
        self._pg = bind is not None and bind.dialect.name == "postgresql"
        with transaction(sessions) as s:
            account_id = persist.find_account(s, account).id
            self.state: AccountState = restore.load_state(s, account_id, self.costs,
                                                          quiet_retries=quiet_retries)
            self.sectors = {t: sec for t, sec in s.execute(select(Ticker.ticker, Ticker.sector))}
        self.windows = Windows(max((sl.length for sl in self.slots), default=3))
        self.streams = [SlotStream(sl) for sl in self.slots]
        self._positions: Mapping[str, Position] | None = None  # see positions()
        self.fills = 0  # batches of fills recorded (a change token for what fills change)
        self._now: datetime | None = None  # the bar time of the batch being traded
        # equity_at(): positions valued at one marks dict, until the next fill or other marks.
        self._valued: tuple[dict[str, float], float] | None = None
        self._waiting: set[str] | None = None  # tickers with a pending entry, see _busy()
        self.picks = PickBook(enabled=picks)
        self.entries = Entries(self)
        self.day: date | None = None
        self.day_start_equity: float | None = None
        self.daily_stopped = False
        self._last_session: date | None = None
        self._external_since = utcnow() - timedelta(minutes=5)
        if self.state.last_bar_ts is not None:
            self._last_session = calendar.session_date(self.state.last_bar_ts)

    # --- watching ----------------------------------------------------------------------------

    def watched(self, extra: Iterable[str] = ()) -> set[str]:
        """Tickers whose bars matter: held, with orders, in a strategy universe, picked."""
        out = set(extra) | set(self.state.ledger.positions)
        out |= {o.ticker for o in self.state.book.open_orders}
        out |= {r.ticker for r in self.state.pending.values()}
        for slot in self.slots:
            if slot.tickers is not None:
                out |= slot.tickers
        out |= self.picks.tickers()
        return out

    def warm(self, bars: Iterable[Bar]) -> int:
        """Feed history to the windows and marks without trading (after a restart); bars fed."""
        n = 0
        batch: list[Bar] = []
        for bar in bars:
            if batch and bar.ts != batch[0].ts:
                self._warm_batch(batch)
                batch = []
            batch.append(bar)
            n += 1
        if batch:
            self._warm_batch(batch)
        return n

    def _warm_batch(self, batch: list[Bar]) -> None:
        # warm() groups bars by timestamp: one session test per batch.
        kept = _unique(batch) if in_session(batch[0].ts, self.kind) else []
        if not kept:
            return
        columns = BarColumns.of(kept)
        self.windows.push(columns)
        for stream in self.streams:
            stream.push(columns, ())  # the same state the live batches would have built
        for b in kept:
            self.state.ledger.mark(b.ticker, b.close)

    # --- one batch ---------------------------------------------------------------------------

    def process(self, batch: list[Bar]) -> BatchResult:
        """Trade one timestamp's bars and commit (a batch at or before ``last_bar_ts``: skipped)."""
        if not batch:
            raise ValueError("empty batch")
        ts = batch[0].ts
        if any(b.ts != ts for b in batch):
            raise ValueError("a batch holds the bars of one timestamp")
        result = BatchResult(ts=ts, bars=len(batch))
        self._positions = self._valued = None
        last = self.state.last_bar_ts
        if last is not None and ts <= last:
            result.skipped = True
            return result
        bars = _unique(batch) if in_session(ts, self.kind) else []  # one timestamp: one test
        try:
            with transaction(self.sessions) as s:
                account = s.get(PaperAccount, self.state.account_id, with_for_update=self._pg)
                if account is None:  # pragma: no cover - deleted under our feet
                    raise RuntimeError("paper account vanished")
                with persist.batch(s):  # the batch's rows, written together
                    self._external(s, account, ts)
                    if bars:
                        self._trade(s, bars, result)
                account.cash = self.state.cash
                account.last_bar_ts = ts
                account.halted = self.state.halted
                account.halt_reason = self.state.halt_reason
                account.peak_equity = self.state.peak_equity
                if self.state.streaks.dirty:  # the quiet retries held in memory, with the batch
                    account.quiet_state = self.state.streaks.dump()
        except BaseException:
            # The database rolled back; memory must not keep what it forgot.
            self._reload()
            raise
        finally:
            self.log.flush()
        self.state.last_bar_ts = ts
        self.state.streaks.dirty = False
        return result

    def positions(self) -> Mapping[str, Position]:
        """The ledger's positions, snapshotted once until the next fill (sizing reads them for
        every entry; building the snapshot each time cost more than the rest of sizing)."""
        if self._positions is None:
            self._positions = self.state.ledger.positions
        return self._positions

    def _reload(self) -> None:
        self._positions = self._valued = None
        with transaction(self.sessions) as s:
            marks = dict(self.state.ledger.marks)
            self.state = restore.load_state(s, self.state.account_id, self.costs,
                                            quiet_retries=self.quiet_retries)
            for ticker, price in marks.items():
                self.state.ledger.mark(ticker, price)

    def _record(self, s: Session, events: list[OrderEvent], result: BatchResult) -> None:
        if not events:
            return
        if any(isinstance(e, OrderFilled) for e in events):
            self._positions = self._valued = None  # every fill of the trader passes here
            self.fills += 1
        persist.record_events(s, self.state, events)
        result.events += events
        for e in events:
            self.log.order_event(self.state.name, e)

    def _trade(self, s: Session, bars: list[Bar], result: BatchResult) -> None:
        state, book = self.state, self.state.book
        ts = self._now = bars[0].ts
        today = calendar.session_date(ts)
        if self.kind == "minute" and self._last_session not in (None, today):
            # A new session: day orders of the last one have expired.
            self._record(s, book.end_session(ts), result)
        self._last_session = today
        prev_marks = dict(state.ledger.marks)
        if self.day != today:
            self._open_day(s, today, prev_marks)
        self.picks.refresh(s, ts)
        # The backtester's order of events at one timestamp: what fills at the open (exits,
        # stops and targets the open gapped through), then the entries in ticker order, sized
        # on the cash left and filled at the open, then the rest of every bar (stops, targets
        # and limits inside it).
        for bar in bars:
            if book.orders_for(bar.ticker):
                self._record(s, book.on_open(bar), result)
        self.entries.release(s, {b.ticker: b for b in bars}, prev_marks, result)
        for bar in bars:
            self._record(s, book.on_bar(bar), result)
        if self.kind == "day":
            # Day bars: a day order placed at the last close was meant for this session.
            self._record(s, book.end_session(ts), result)
        persist.sync_live_orders(s, state)
        self._judge_equity(s, ts)
        columns = BarColumns.of(bars)
        self.windows.push(columns)
        self._strategies(s, columns, ts, result)
        self.entries.picks(s, bars, result)

    # --- risk state ---------------------------------------------------------------------------

    def _open_day(self, s: Session, today: date, marks: dict[str, float]) -> None:
        """Start-of-session equity (persisted in the audit log, so a restart finds it)."""
        self.day = today
        if self.kind == "day":
            # One bar per session: the session opened at the previous close, which is in memory
            # after a restart too (no need to write it down).
            self.day_start_equity = self.equity_at(marks)
            self.daily_stopped = False
            return
        subject = f"account:{self.state.name}:{today.isoformat()}"
        persist.flush_batch(s)  # the audit entries of this batch so far, before reading them
        rows = s.execute(
            select(audit.AuditEntry.action, audit.AuditEntry.detail).where(
                audit.AuditEntry.subject == subject
            )
        ).all()
        opened = [d for a, d in rows if a == "paper.session_open"]
        self.daily_stopped = any(a == "risk.daily_loss_stop" for a, _ in rows)
        if opened:
            self.day_start_equity = float(opened[0]["equity"])
            return
        equity = self.equity_at(marks)
        self.day_start_equity = equity
        persist.audit_entry(s, ACTOR, "paper.session_open", subject,
                            {"equity": round(equity, 6)})

    def equity_at(self, marks: dict[str, float]) -> float:
        """Cash plus positions marked at ``marks`` (the ledger's mark where ``marks`` has none);
        a position entered at this batch's open at its fill price, as the backtester marks it
        (it was never held at the previous close)."""
        ledger = self.state.ledger
        valued = self._valued
        if valued is None or valued[0] is not marks:
            # Every entry of a batch sizes on the same marks: the positions are valued once per
            # fill, not once per entry (hundreds of entries a batch, hundreds of positions).
            value = ledger.value_at(marks)
            for ticker in self.entered_now():
                pos = ledger.position(ticker)
                if pos is not None:  # value_at took its price at the marks: mark_of's instead
                    value += pos.qty * (self.mark_of(ticker, marks)
                                        - ledger.price_at(ticker, marks))
            valued = self._valued = (marks, value)
        return ledger.cash + valued[1]

    def entered_now(self) -> list[str]:
        """Tickers whose position was entered at the open of the batch being traded: valued at
        their fill price, not at a previous close they were never held at."""
        now = self._now
        return [t for t, since in self.state.entry_ts.items() if since == now]

    def mark_of(self, ticker: str, marks: dict[str, float]) -> float:
        """The price a position in ``ticker`` is valued at when entries are sized and checked:
        ``marks`` (the previous closes), else the ledger's mark, else its average cost; its
        fill price (average cost) when it was entered at this open."""
        ledger = self.state.ledger
        if self.state.entry_ts.get(ticker) == self._now:
            pos = ledger.position(ticker)
            if pos is not None:
                return pos.avg_cost
        return ledger.price_at(ticker, marks)

    def _judge_equity(self, s: Session, ts: datetime) -> None:
        state, limits = self.state, self.limits
        equity = state.ledger.equity()
        peak = float(state.peak_equity) if state.peak_equity is not None else equity
        if equity > peak:
            peak = equity
            state.peak_equity = money(peak)
        if not state.halted and equity < peak * (1 - limits.max_drawdown_pct):
            reason = (f"max drawdown: equity {equity:.2f} is more than "
                      f"{limits.max_drawdown_pct:.0%} below the peak {peak:.2f}")
            self.halt(s, reason, ts)
        start = self.day_start_equity
        if (not self.daily_stopped and start is not None
                and equity < start * (1 - limits.daily_loss_pct)):
            self.daily_stopped = True
            subject = f"account:{state.name}:{calendar.session_date(ts).isoformat()}"
            detail = {"equity": round(equity, 6), "day_start": round(start, 6),
                      "limit": limits.daily_loss_pct}
            persist.audit_entry(s, ACTOR, "risk.daily_loss_stop", subject, detail)
            self.log.decision(self.state.name, "daily_loss_stop", ts=ts, **detail)

    def halt(self, s: Session, reason: str, ts: datetime) -> None:
        """Halt the account: no new entries; open entry orders are canceled."""
        state = self.state
        state.halted, state.halt_reason = True, reason
        persist.audit_entry(s, ACTOR, "paper.halted", f"account:{state.name}",
                            {"reason": reason})
        persist.add_event(s, "account_halted", {"account_id": state.account_id,
                                                "account": state.name, "reason": reason,
                                                "by": ACTOR})
        self.log.decision(state.name, "halted", ts=ts, reason=reason)
        events: list[OrderEvent] = []
        for order in state.book.open_orders:
            if not order.is_exit_leg and _purpose(state, order.id) == "entry":
                events += state.book.cancel(order.id, ts, CancelReason.USER)
        if events:
            persist.record_events(s, state, events)

    # --- outside changes ----------------------------------------------------------------------

    def _external(self, s: Session, account: PaperAccount, ts: datetime) -> None:
        """Apply what the dashboard or the CLI changed since the last batch."""
        state = self.state
        if account.halted != state.halted:
            state.halted, state.halt_reason = account.halted, account.halt_reason
            self.log.decision(state.name, "halted" if account.halted else "resumed", ts=ts,
                              reason=account.halt_reason, by="outside")
        since, self._external_since = self._external_since, utcnow() - timedelta(seconds=60)
        # Columns only: most rows are the trader's own recent orders, already known; whole rows
        # are loaded only for pending orders submitted from outside. A cancellation matters only
        # for an order still live or pending here: the trader's own cancellations (hundreds a
        # minute in a fast replay, all inside the window) are not read back.
        ids = state.order_ids
        watch = [ids[o.id] for o in state.book.open_orders if o.id in ids]
        watch += [ids[c] for c in state.pending if c in ids]
        params = {"account_id": state.account_id, "since": since}
        if watch:
            params["watch"] = watch
        changed = s.execute(_outside_changes(self._pg, bool(watch)), params).all()
        live: set[str] | None = None
        new_pending: list[int] = []
        for oid, cid, status in changed:
            if status == "pending" and cid not in state.pending:
                new_pending.append(oid)
            elif status == "canceled":
                if live is None:
                    live = {o.id for o in state.book.open_orders}
                if cid in live:
                    persist.record_events(s, state, state.book.cancel(cid, ts, CancelReason.USER))
                state.pending.pop(cid, None)
        if new_pending:
            for row in s.scalars(select(Order).where(Order.id.in_(new_pending))):
                cid = row.client_order_id
                state.order_ids[cid] = row.id
                state.meta[cid] = persist.parse_meta(row.reason)
                state.pending[cid] = persist.OrderRow.of(row)

    # --- strategies ---------------------------------------------------------------------------

    def _strategies(self, s: Session, bars: BarColumns, ts: datetime, result: BatchResult
                    ) -> None:
        # A position is exited only by the strategy that opened it (see _decide): each slot
        # looks at its own positions.
        owned: dict[str | None, set[str]] = {}
        owner_of = self.state.strategy_of
        for ticker in self.positions():
            owned.setdefault(owner_of.get(ticker), set()).add(ticker)
        self._waiting = {r.ticker for r in self.state.pending.values()}
        try:
            self._strategies_push(s, bars, ts, result, owned)
        finally:
            self._waiting = None

    def _strategies_push(
        self, s: Session, bars: BarColumns, ts: datetime, result: BatchResult,
        owned: dict[str | None, set[str]],
    ) -> None:
        for stream in self.streams:
            slot = stream.slot
            # A flat ticker without an entry signal, or a position without an exit signal,
            # leads to no decision: not even looked at.
            signals = stream.push(bars, owned.get(slot.name, set()))
            for ticker in sorted(signals):
                self._decide(s, slot, ticker, signals[ticker], ts, result)

    def _decide(
        self, s: Session, slot: StrategySlot, ticker: str, sig: Signal, ts: datetime,
        result: BatchResult,
    ) -> None:
        state = self.state
        held = state.ledger.qty(ticker)
        long_short = slot.spec.direction.value == "long_short" and not state.long_only
        # The backtester's entry candidates: a side's entry signal without its exit signal,
        # and (long/short) without the other side's entry signal.
        enter_long = sig.entry_long and not sig.exit_long and not (long_short and sig.entry_short)
        enter_short = (long_short and sig.entry_short and not sig.exit_short
                       and not sig.entry_long)
        if held != 0:
            if state.strategy_of.get(ticker) != slot.name:
                return  # one position per ticker, exited only by the strategy that opened it
            long = held > 0
            flip = sig.entry_short if long else sig.entry_long
            exit_now = (sig.exit_long if long else sig.exit_short) or (long_short and flip)
            why = "signal"
            if not exit_now and slot.spec.risk.max_bars is not None and ticker in state.entry_ts:
                since = int(state.entry_ts[ticker].timestamp() * 1_000_000) * 1000
                if self.windows.held(ticker, since) >= slot.spec.risk.max_bars:
                    exit_now, why = True, "max_bars"
            if exit_now and not self._exit_live(ticker):
                self.entries.exit(s, slot.name, ticker, held, ts, why, result)
                if enter_short if long else enter_long:
                    # A flip: out of one side and into the other at the next open.
                    side = Side.SELL if long else Side.BUY
                    self.entries.pending(s, slot, ticker, side, sig, ts, result)
                    return
            if enter_long if long else enter_short:
                # Held, and the entry signal holds: if the position is closed at the next open
                # (max_bars, a stop or target the open gaps through), it is entered again at
                # that open, as the backtester does; else nothing happens.
                self.entries.if_flat(s, slot, ticker, Side.BUY if long else Side.SELL, sig, ts)
            return
        if self._busy(ticker):
            return
        if enter_long:
            self.entries.pending(s, slot, ticker, Side.BUY, sig, ts, result)
        elif enter_short:
            self.entries.pending(s, slot, ticker, Side.SELL, sig, ts, result)

    def _exit_live(self, ticker: str) -> bool:
        state = self.state
        return any(
            not o.is_exit_leg and _purpose(state, o.id) == "exit"
            for o in state.book.orders_for(ticker)
        )

    def _busy(self, ticker: str) -> bool:
        """An entry for ``ticker`` is already waiting or resting."""
        state = self.state
        waiting = self._waiting
        if waiting is not None:
            if ticker in waiting:  # kept up to date by Entries.pending while strategies decide
                return True
        elif any(r.ticker == ticker for r in state.pending.values()):
            return True
        return any(not o.is_exit_leg for o in state.book.orders_for(ticker))

    def reject(
        self, s: Session, order: DomainOrder, ts: datetime, reason: RejectReason, detail: str,
        result: BatchResult,
    ) -> None:
        """Persist and log the refusal of ``order``."""
        self._record(s, [OrderRejected(order=order, ts=ts, reason=reason, detail=detail)], result)


@functools.cache
def _outside_changes(pg: bool, watching: bool) -> Select[int, str, str]:
    """The statement of :meth:`Trader._external`, built once: its text never changes (a
    statement built per batch cost more Python than the database's work)."""
    wanted = Order.status == "pending"
    if watching:
        if pg:
            # One array parameter: the statement's text is the same whatever the number of
            # ids, so psycopg prepares it once (an IN list has a parameter per id). Still
            # planned as index lookups: (account_id, status), or with the primary key.
            watched = Order.id == any_(bindparam("watch", type_=ARRAY(BigInteger)))
        else:
            watched = Order.id.in_(bindparam("watch", expanding=True))
        wanted = or_(wanted, watched)
    return select(Order.id, Order.client_order_id, Order.status).where(
        Order.account_id == bindparam("account_id"),
        Order.status.in_(("pending", "canceled")),  # the (account_id, status) index
        Order.updated_at >= bindparam("since"),
        wanted,
    )


def _purpose(state: AccountState, order_id: str) -> str | None:
    root = order_id
    meta = state.meta.get(root) or {}
    value = meta.get("purpose")
    return value if isinstance(value, str) else None


def _unique(batch: list[Bar]) -> list[Bar]:
    """One bar per ticker (the last one given), sorted by ticker: the batch's fixed order."""
    seen: dict[str, Bar] = {}
    for b in batch:
        seen[b.ticker] = b
    return [seen[t] for t in sorted(seen)]


def equity_decimal(state: AccountState) -> Decimal:
    """Equity of ``state`` at its marks, in money."""
    return money(state.ledger.equity())

