"""Turning decisions into orders: pending entries, their sizing at the next open, and exits.

An entry a strategy decides again while the same entry keeps being refused for the same cause
(its signal is a level that holds, the cash is gone) is a *quiet retry*: it is held in memory and
retried at every open like any other, but only the first refusal of the streak, a refusal for
another cause, the fill, and one ``order.refused_repeatedly`` summary are written
(:mod:`falcon.paper.streaks`).

Also the trader's structured log: one JSON object per line on stdout per decision (journald keeps
stdout of a unit), with the bar time, the account and what was decided.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

from sqlalchemy.orm import Session

from falcon.domain.events import (
    CancelReason,
    OrderCanceled,
    OrderEvent,
    OrderFilled,
    OrderRejected,
    RejectReason,
)
from falcon.domain.market import Bar
from falcon.domain.orders import Order, OrderType, Side, TimeInForce
from falcon.domain.rules import Level, Sizing, SizingKind, StopKind
from falcon.execution.book import bracket
from falcon.execution.sizing import entry_quantity
from falcon.paper import persist
from falcon.paper.limits import RiskView, cap_entry
from falcon.paper.persist import ACTOR
from falcon.paper.signals import Signal, StrategySlot
from falcon.paper.streaks import Key, Streak, streak_key

if TYPE_CHECKING:
    from falcon.paper.trader import BatchResult, Trader

__all__ = ["DecisionLog", "Entries", "client_order_id"]


def client_order_id(account: str, strategy: str, ticker: str, ts: datetime, purpose: str) -> str:
    """The idempotency key of a decision: account, strategy, ticker, signal bar and purpose."""
    if len(strategy) > 40:
        strategy = hashlib.sha256(strategy.encode()).hexdigest()[:16]
    return f"{account[:40]}:{strategy}:{ticker}:{ts:%Y%m%dT%H%M}:{purpose}"


class DecisionLog:
    """One JSON line per decision; ``stream=None`` keeps them quiet (benchmarks, tests)."""

    def __init__(self, stream: TextIO | None = sys.stdout) -> None:
        self.stream = stream
        self.count = 0

    def decision(self, account: str, what: str, *, ts: datetime, **fields: Any) -> None:
        """Log one decision about ``account`` at bar time ``ts``."""
        self.count += 1
        if self.stream is None:
            return
        line = {"event": what, "account": account, "bar_ts": ts.isoformat(), **fields}
        # No flush per line (a system call each): the trader flushes once per batch.
        self.stream.write(json.dumps(line, default=str, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        """Push the lines written so far out (once per batch, after its commit)."""
        if self.stream is not None:
            self.stream.flush()

    def order_event(self, account: str, event: OrderEvent) -> None:
        """Log an order event (submitted, filled, canceled, rejected)."""
        order = event.order
        base = {"order": order.id, "ticker": order.ticker, "side": order.side.value,
                "type": order.type.value, "qty": order.qty}
        if isinstance(event, OrderFilled):
            self.decision(account, "order_filled", ts=event.ts, price=event.fill.price,
                          fee=event.fill.fee, **{**base, "qty": event.fill.qty})
        elif isinstance(event, OrderRejected):
            self.decision(account, "order_rejected", ts=event.ts, reason=event.reason.value,
                          detail=event.detail, **base)
        elif isinstance(event, OrderCanceled):
            self.decision(account, "order_canceled", ts=event.ts, reason=event.reason.value,
                          **base)
        else:
            self.decision(account, "order_submitted", ts=event.ts, **base)


def _distance(level: Level, price: float, atr: float | None) -> float | None:
    if level.kind is StopKind.PERCENT:
        return price * level.value
    return level.value * atr if atr is not None and atr > 0 else None


@dataclass
class _Plan:
    """How an entry is sized and protected."""

    sizing: Sizing
    stop: float | None = None
    target: float | None = None
    trail_percent: float | None = None
    trail_amount: float | None = None


class Entries:
    """The entry and exit side of :class:`~falcon.paper.trader.Trader` (it owns the state)."""

    def __init__(self, trader: Trader) -> None:
        self.t = trader
        self._opened: dict[str, int] = {}  # entries of this batch still resting, by strategy
        self._exposure: Exposure | None = None
        # (fills counted, the owners' dict, positions per owner): see _owned
        self._owners: tuple[int, object, dict[str | None, int]] | None = None
        self._released: set[Key] = set()  # streak keys with an entry released in this batch

    # --- decisions after a bar ----------------------------------------------------------------

    def pending(
        self, s: Session, slot: StrategySlot, ticker: str, side: Side, sig: Signal, ts: datetime,
        result: BatchResult,
    ) -> None:
        """Record a strategy's entry, to be sized and submitted at the next open."""
        state = self.t.state
        purpose = "entry" if side is Side.BUY else "short"
        cid = client_order_id(state.name, slot.name, ticker, ts, purpose)
        if persist.known(state, s, cid) or cid in state.pending:
            return
        meta = {"strategy": slot.name, "purpose": "entry", "atr": sig.atr}
        key = (slot.name, ticker, side.value)
        if state.streaks.quiet(key):
            # Refused at this open, likely refused at the next: held, not written (a quiet retry).
            persist.hold_pending(state, cid, ticker=ticker, side=side, meta=meta)
            state.streaks.hold(key, cid, meta)
        else:
            persist.insert_pending(s, state, cid, ticker=ticker, side=side, strategy=slot.name,
                                   meta=meta)
            self.t.log.decision(state.name, "entry_signal", ts=ts, ticker=ticker,
                                side=side.value, strategy=slot.name, order=cid)
        if self.t._waiting is not None:
            self.t._waiting.add(ticker)
        result.decisions += 1

    def if_flat(
        self, s: Session, slot: StrategySlot, ticker: str, side: Side, sig: Signal, ts: datetime,
    ) -> None:
        """Hold an entry decided while ``slot``'s own position in ``ticker`` is open: taken at
        the next open only if that open closes the position (see :mod:`falcon.paper.streaks`).
        Nothing is written unless it is taken."""
        state = self.t.state
        purpose = "entry" if side is Side.BUY else "short"
        cid = client_order_id(state.name, slot.name, ticker, ts, purpose)
        if persist.known(state, s, cid) or cid in state.pending:
            return
        meta = {"strategy": slot.name, "purpose": "entry", "atr": sig.atr, "if_flat": True}
        persist.hold_pending(state, cid, ticker=ticker, side=side, meta=meta)
        state.streaks.hold_if_flat(cid, ticker, side.value, meta)

    def exit(
        self, s: Session, strategy: str, ticker: str, held: int, ts: datetime, why: str,
        result: BatchResult,
    ) -> None:
        """Submit a market order closing ``held`` shares at the next open."""
        state = self.t.state
        cid = client_order_id(state.name, strategy, ticker, ts, "exit")
        if persist.known(state, s, cid):
            return
        order = Order(id=cid, ticker=ticker, side=Side.SELL if held > 0 else Side.BUY,
                      qty=abs(held), tif=TimeInForce.GTC)
        state.meta[cid] = {"strategy": strategy, "purpose": "exit", "why": why}
        result.decisions += 1
        self.t.log.decision(state.name, "exit_signal", ts=ts, ticker=ticker, strategy=strategy,
                            why=why, order=cid)
        self.t._record(s, state.book.submit(order, ts), result)

    def picks(self, s: Session, bars: list[Bar], result: BatchResult) -> None:
        """Screener picks whose bar closed inside their entry range become pending entries."""
        t = self.t
        state = t.state
        if not t.picks.by_ticker or state.halted or t.daily_stopped:
            return
        for bar in bars:
            pick = t.picks.wants(bar)
            if pick is None or state.ledger.qty(bar.ticker) != 0 or t._busy(bar.ticker):
                continue
            strategy = f"screener:{pick.profile}"
            cid = f"{state.name[:40]}:pick{pick.id}:{pick.ticker}:entry"
            if persist.known(state, s, cid):
                continue
            meta = {"strategy": strategy, "purpose": "entry", "pick": pick.id,
                    "stop": pick.stop, "target": pick.target}
            persist.insert_pending(s, state, cid, ticker=bar.ticker, side=Side.BUY,
                                   strategy=strategy, meta=meta)
            result.decisions += 1
            t.log.decision(state.name, "pick_entry", ts=bar.ts, ticker=bar.ticker,
                           strategy=strategy, order=cid, close=bar.close,
                           range=[pick.entry_low, pick.entry_high])

    # --- release at the next open ------------------------------------------------------------

    def release(
        self, s: Session, bars: dict[str, Bar], marks: dict[str, float], result: BatchResult
    ) -> None:
        """Size, check and submit the pending orders whose ticker has a bar in this batch."""
        state = self.t.state
        self._opened = {}
        self._exposure = None  # built by the batch's first risk check
        due = sorted(
            (cid for cid, row in state.pending.items() if row.ticker in bars),
            key=lambda c: (state.pending[c].ticker, c),
        )
        self._released = set()
        if due and not state.long_only:
            self._mark_at(marks)
        for cid in due:
            row = state.pending[cid]
            bar = bars[row.ticker]
            meta = state.meta.get(cid, {})
            purpose = meta.get("purpose")
            if purpose == "flatten":
                self._flatten(s, cid, bar, result)
            else:
                self._entry(s, cid, bar, marks, result)
        if state.streaks.open and bars:
            ts = next(iter(bars.values())).ts
            for streak in state.streaks.sweep(bars, self._released):
                self._refused_repeatedly(s, streak, ts)

    def _mark_at(self, marks: dict[str, float]) -> None:
        """Mark the positions held at ``marks`` (the previous closes) before entries are sized,
        as the backtester does: a margin account's room (equity less exposure, both at the
        marks), which sizes an entry and which its fill is checked against, is the room at the
        previous closes, not at the opens the bars worked so far were marked at. The rest of
        each bar marks its ticker again (at its open, then its close)."""
        t = self.t
        ledger = t.state.ledger
        for ticker in t.positions():
            ledger.mark(ticker, t.mark_of(ticker, marks))

    def _submit(self, s: Session, orders: tuple[Order, ...], bar: Bar, result: BatchResult) -> None:
        book = self.t.state.book
        self.t._record(s, book.submit(orders, bar.ts), result)
        # Filled at the open; the rest of the bar (its stop, its target) after every entry.
        self.t._record(s, book.on_open(bar), result)
        if self._exposure is not None:
            self._exposure.refresh(bar.ticker)

    def _flatten(self, s: Session, cid: str, bar: Bar, result: BatchResult) -> None:
        state = self.t.state
        row = state.pending[cid]
        held = state.ledger.qty(bar.ticker)
        side = Side(row.side)
        if held == 0 or (held > 0) != (side is Side.SELL):
            order = persist.domain_from_row(row, state.meta[cid], qty=max(int(row.qty), 1))
            self.t._record(s, [OrderCanceled(order=order, ts=bar.ts,
                                             reason=CancelReason.POSITION_CLOSED)], result)
            return
        qty = min(abs(held), int(row.qty) or abs(held))
        self._submit(s, (persist.domain_from_row(row, state.meta[cid], qty=qty),), bar, result)

    def _entry(
        self, s: Session, cid: str, bar: Bar, marks: dict[str, float], result: BatchResult
    ) -> None:
        t = self.t
        state, limits, costs = t.state, t.limits, t.state.book.costs
        row = state.pending[cid]
        meta = state.meta.get(cid, {})
        side = Side(row.side)
        long = side is Side.BUY
        ticker = bar.ticker
        manual = meta.get("source") == "manual"
        if meta.get("if_flat"):
            state.streaks.drop_if_flat(cid)
            if state.ledger.qty(ticker) != 0:
                # The position was not closed at this open: the entry was only for that case.
                state.pending.pop(cid, None)
                state.meta.pop(cid, None)
                return
        stub = persist.domain_from_row(row, meta, qty=max(int(row.qty), 1))
        key = streak_key(meta, ticker, row.side)
        if key is not None:
            self._released.add(key)

        def refuse(reason: RejectReason, cause: str, detail: str) -> bool:
            return self._refuse(s, key, stub, bar.ts, reason, cause, detail, result)

        held = state.ledger.qty(ticker)
        opening = held == 0 or (held > 0) == long
        if opening and state.halted:
            refuse(RejectReason.HALTED, "halted", state.halt_reason or "halted")
            return
        if opening and t.daily_stopped:
            refuse(RejectReason.RISK_LIMIT, "daily_loss", "daily loss limit reached")
            return
        if not manual and held != 0:
            refuse(RejectReason.RISK_LIMIT, "one_position_per_ticker", "one position per ticker")
            return
        strategy = meta.get("strategy") if isinstance(meta.get("strategy"), str) else None
        slot = next((sl for sl in t.slots if sl.name == strategy), None)
        if slot is not None:
            owned = self._owned(strategy) + self._opened.get(slot.name, 0)
            if owned >= slot.spec.risk.max_positions:
                refuse(RejectReason.RISK_LIMIT, "strategy_max_positions",
                       f"strategy max_positions {slot.spec.risk.max_positions}")
                return
        price = float(costs.slipped(bar.open, buy=long))
        if manual:
            plan: _Plan | None = _Plan(Sizing(kind=SizingKind.SHARES, value=float(row.qty)))
        elif slot is not None:
            plan = self._strategy_plan(slot, price, long, meta)
        elif meta.get("pick") is not None:
            plan = self._pick_plan(price, meta)
        else:
            self._resolve(s, key, cid, bar.ts)  # no strategy to size it: dropped, as before
            self.t._record(s, [OrderCanceled(order=stub, ts=bar.ts, reason=CancelReason.USER)],
                           result)
            return
        if plan is None:
            refuse(RejectReason.RISK_LIMIT, "no_stop_distance",
                   "no stop distance to size on (no ATR yet, or open beyond the stop)")
            return
        equity = t.equity_at(marks)
        stop_d = None if plan.stop is None else abs(price - plan.stop)
        try:
            qty = entry_quantity(plan.sizing, price=price,
                                 buying_power=state.ledger.buying_power(), equity=equity,
                                 costs=costs, stop_distance=stop_d)
        except ValueError as exc:
            refuse(RejectReason.RISK_LIMIT, "sizing", str(exc))
            return
        if qty < 1 or (manual and qty < int(row.qty)):
            refuse(RejectReason.INSUFFICIENT_CASH, "insufficient_cash",
                   f"cash {state.ledger.cash:.2f} at {price:.4f}")
            return
        if opening:
            view = self._view(ticker, strategy, equity, marks)
            check = cap_entry(qty, price, view, limits)
            if check.refused or (manual and check.qty < qty):
                if refuse(RejectReason.RISK_LIMIT, f"risk_limit:{check.limit}",
                          f"{check.limit}: {check.detail}"):
                    persist.audit_entry(s, ACTOR, "risk.rejected", cid[:200],
                                        {"limit": check.limit, "detail": check.detail,
                                         "wanted": qty})
                return
            if check.qty < qty:
                persist.audit_entry(s, ACTOR, "risk.capped", cid[:200],
                             {"limit": check.limit, "detail": check.detail, "wanted": qty,
                              "allowed": check.qty})
                t.log.decision(state.name, "risk_capped", ts=bar.ts, ticker=ticker,
                               limit=check.limit, wanted=qty, allowed=check.qty)
                qty = check.qty
        entry = persist.domain_from_row(row, meta, qty=qty)
        orders = (entry,) if manual else _legs(entry, price, long, plan)
        self._resolve(s, key, cid, bar.ts)
        self._submit(s, orders, bar, result)
        if slot is not None and any(o.id == entry.id for o in state.book.orders_for(ticker)):
            # Still resting (not filled at this open): a position to come, which _owned does
            # not count yet. A filled entry is in _owned already and must not count twice.
            self._opened[slot.name] = self._opened.get(slot.name, 0) + 1

    # --- quiet retries (falcon.paper.streaks) -------------------------------------------------

    def _refuse(
        self, s: Session, key: Key | None, stub: Order, ts: datetime, reason: RejectReason,
        cause: str, detail: str, result: BatchResult,
    ) -> bool:
        """Refuse the entry ``stub``; False when it was a quiet retry refused for its streak's
        cause (counted, nothing written), True when it was recorded."""
        t = self.t
        state = t.state
        if key is None:
            t.reject(s, stub, ts, reason, detail, result)
            return True
        record, ended = state.streaks.refused(key, stub.id, cause, ts)
        if not record:
            state.pending.pop(stub.id, None)
            state.meta.pop(stub.id, None)
            return False
        if not persist.known(state, s, stub.id):
            persist.store_pending(s, state, stub.id, strategy=key[0])
        t.reject(s, stub, ts, reason, detail, result)
        if ended is not None:
            self._refused_repeatedly(s, ended, ts)
        return True

    def _resolve(self, s: Session, key: Key | None, cid: str, ts: datetime) -> None:
        """The entry ``cid`` leaves the pending entries other than by a refusal (submitted, or
        canceled): its row is written if it was quiet, and its key's streak ends."""
        state = self.t.state
        if not persist.known(state, s, cid):
            persist.store_pending(s, state, cid, strategy=key[0] if key else None)
        if key is not None:
            ended = state.streaks.end(key)
            if ended is not None:
                self._refused_repeatedly(s, ended, ts)

    def _refused_repeatedly(self, s: Session, streak: Streak, ts: datetime) -> None:
        """The one record of a streak's repeats: an audit entry and a log line."""
        state = self.t.state
        detail = streak.detail(state.name)
        persist.audit_entry(s, ACTOR, "order.refused_repeatedly", streak.first_id[:200], detail)
        self.t.log.decision(state.name, "entry_refused_repeatedly", ts=ts,
                            **{k: v for k, v in detail.items() if k != "account"})

    def _owned(self, strategy: str | None) -> int:
        """Positions opened by ``strategy``: counted again only after a fill (the only thing
        that changes the owners), not once per entry (most entries of a busy batch are
        refused); nor is a snapshot of every position built for it."""
        owners = self.t.state.strategy_of
        seen = self._owners
        if seen is None or seen[0] != self.t.fills or seen[1] is not owners:
            counts: dict[str | None, int] = {}
            for owner in owners.values():
                counts[owner] = counts.get(owner, 0) + 1
            seen = self._owners = (self.t.fills, owners, counts)
        return seen[2].get(strategy, 0)

    def _strategy_plan(
        self, slot: StrategySlot, price: float, long: bool, meta: dict[str, Any]
    ) -> _Plan | None:
        risk = slot.spec.risk
        atr = meta.get("atr")
        atr_v = float(atr) if isinstance(atr, int | float) else None
        sign = 1.0 if long else -1.0
        plan = _Plan(risk.sizing)
        if risk.stop_loss is not None:
            d = _distance(risk.stop_loss, price, atr_v)
            if d is None:
                return None
            plan.stop = price - sign * d
        if risk.take_profit is not None:
            d = _distance(risk.take_profit, price, atr_v)
            if d is None:
                return None
            plan.target = price + sign * d
        trail = risk.trailing_stop
        if trail is not None:
            if trail.kind is StopKind.PERCENT:
                plan.trail_percent = trail.value
            else:
                d = _distance(trail, price, atr_v)
                if d is None:
                    return None
                plan.trail_amount = d
        return plan

    def _pick_plan(self, price: float, meta: dict[str, Any]) -> _Plan | None:
        limits = self.t.limits
        stop = meta.get("stop")
        target = meta.get("target")
        plan = _Plan(Sizing(kind=SizingKind.FRACTION, value=limits.max_position_pct))
        if isinstance(stop, int | float):
            if stop >= price:
                return None
            plan = _Plan(Sizing(kind=SizingKind.RISK, value=limits.pick_risk_pct), stop=stop)
        if isinstance(target, int | float) and target > price:
            plan.target = float(target)
        return plan

    def _view(
        self, ticker: str, strategy: str | None, equity: float, marks: dict[str, float]
    ) -> RiskView:
        exposure = self._exposure
        if exposure is None or exposure.marks is not marks:
            exposure = self._exposure = Exposure(self.t, marks)
        return RiskView(equity=equity, open_positions=exposure.count(),
                        sector_exposure=exposure.sector(ticker),
                        strategy_exposure=exposure.strategy(strategy))


class Exposure:
    """The account's positions valued at one set of marks, summed by sector and by strategy.

    Kept per ticker, so that the entries of a batch (each one fills at the open and changes
    one position) update one ticker's part instead of walking every position again: with
    hundreds of positions and dozens of entries a batch, the walk was most of an entry's cost.
    A position is valued as :meth:`~falcon.paper.trader.Trader.mark_of` says (the previous
    close; its fill price when entered at this open); open entry orders count as positions.
    """

    def __init__(self, trader: Trader, marks: dict[str, float]) -> None:
        self.t = trader
        self.marks = marks
        # ticker -> (sector, owning strategy, value at the marks)
        self._parts: dict[str, tuple[str, str | None, float]] = {}
        self._sectors: dict[str, float] = {}
        self._strategies: dict[str, float] = {}
        self._entries: dict[str, int] = {}  # ticker -> open entry orders
        state = trader.state
        for tk in trader.positions():
            self._add(tk)
        for order in state.book.open_orders:
            if self._is_entry(order):
                self._entries[order.ticker] = self._entries.get(order.ticker, 0) + 1

    def _is_entry(self, order: Order) -> bool:
        return not order.is_exit_leg and (
            (self.t.state.meta.get(order.id) or {}).get("purpose") == "entry")

    def _add(self, ticker: str) -> None:
        state = self.t.state
        pos = state.ledger.position(ticker)
        if pos is None:
            return
        value = abs(pos.qty) * self.t.mark_of(ticker, self.marks)
        sector = self.t.sectors.get(ticker) or "unknown"
        owner = state.strategy_of.get(ticker)
        self._parts[ticker] = (sector, owner, value)
        self._sectors[sector] = self._sectors.get(sector, 0.0) + value
        if owner is not None:
            self._strategies[owner] = self._strategies.get(owner, 0.0) + value

    def refresh(self, ticker: str) -> None:
        """Re-value ``ticker`` after its position or orders changed."""
        part = self._parts.pop(ticker, None)
        if part is not None:
            sector, owner, value = part
            self._sectors[sector] -= value
            if owner is not None:
                self._strategies[owner] -= value
        self._add(ticker)
        count = sum(1 for o in self.t.state.book.orders_for(ticker) if self._is_entry(o))
        if count:
            self._entries[ticker] = count
        else:
            self._entries.pop(ticker, None)

    def count(self) -> int:
        """Positions held plus open entry orders."""
        return len(self._parts) + sum(self._entries.values())

    def sector(self, ticker: str) -> float:
        """Value held in ``ticker``'s sector."""
        return self._sectors.get(self.t.sectors.get(ticker) or "unknown", 0.0)

    def strategy(self, strategy: str | None) -> float:
        """Value held in positions opened by ``strategy``."""
        return 0.0 if strategy is None else self._strategies.get(strategy, 0.0)


def _legs(entry: Order, price: float, long: bool, plan: _Plan) -> tuple[Order, ...]:
    """The entry with its stop loss / trailing stop and take profit (one OCO group)."""
    if plan.trail_amount is None:
        return bracket(entry, stop_loss=plan.stop, take_profit=plan.target,
                       trail_percent=plan.trail_percent)
    legs = list(bracket(entry, take_profit=plan.target))
    legs.insert(1, Order(
        id=f"{entry.id}:sl", ticker=entry.ticker, side=entry.side.opposite, qty=entry.qty,
        type=OrderType.TRAILING_STOP, stop_price=plan.stop, trail_amount=plan.trail_amount,
        parent_id=entry.id, oco_group=f"{entry.id}:oco" if plan.target else None,
        tag="stop_loss",
    ))
    return tuple(legs)
