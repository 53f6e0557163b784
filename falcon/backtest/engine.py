"""The portfolio backtester: many tickers, one cash account, the shared fill model and ledger.

How a run goes (DESIGN.md "Conventions every engine follows", plus the choices below):

* A signal on bar t's close becomes a market order that fills at bar t+1's open (slippage against
  the trader, commission on notional plus per share). A signal on a ticker's last bar never fills.
* One position per ticker; no pyramiding. ``entry_long`` while flat opens a long; ``exit_long``
  closes it. A bar with both an entry and the exit of the same side does nothing when flat and
  exits when held. In ``long_short``, ``entry_short`` also closes a long (and then opens the short
  at the same open, after the close), ``entry_long`` closes a short; a bar with both entries is
  ignored. In ``long_only`` short signals are ignored.
* Stops, targets and trailing stops are set from the entry fill price and watched from the entry
  bar on (the fill was at that bar's open, so its whole range came after). See
  :mod:`falcon.execution.fills` for gaps, touch-vs-through and stop-before-target.
* ``max_bars``: after N bars held (the entry bar is the first), exit at the next open.
* Order of events at one timestamp: exits at the open (signal exits, max_bars, gaps through a
  stop or target), then entries in ticker order (alphabetical: the deterministic tie-break when
  entries compete for ``max_positions`` or cash), then stops and targets inside the bar.
* Sizing per ``RiskRules.sizing`` (:func:`falcon.execution.sizing.entry_quantity`), from the
  cash left after the exits at that open; an entry that cannot buy one share is rejected
  (``insufficient_cash``), one beyond ``max_positions`` too (``risk_limit``). Equity for
  fraction/risk sizing marks open positions at their last close.
* A position still open after the last bar is marked at its last close in the equity curve and
  listed in ``open_trades``, not in ``trades``.

Speed: a position's exit depends only on its own ticker's bars, so it is found with numpy
(:mod:`falcon.backtest._exits`) when the position opens. The Python loop visits only entry
signals and scheduled exits, never the bars in between. With one ticker and no stop, target or
trailing stop, :mod:`falcon.backtest._fast` chains the trades with numpy instead; the tests hold
it to this loop's results bit for bit.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from falcon.backtest import _fast
from falcon.backtest._data import Arrays, next_true, prepare
from falcon.backtest._exits import Exit, Levels, find_exit
from falcon.backtest.results import BacktestConfig, BacktestResult
from falcon.domain.events import RejectReason
from falcon.domain.orders import Side
from falcon.domain.rules import Direction, Level, RiskRules, SizingKind, StopKind
from falcon.errors import ValidationError
from falcon.execution.fills import CostModel
from falcon.execution.ledger import Ledger, LedgerRejected
from falcon.execution.sizing import entry_quantity

_AT_OPEN, _ENTRY, _IN_BAR = 0, 1, 2
_NO_LEVELS = Levels(stop=None, target=None, trail_percent=None, trail_amount=None, ref=0.0)


@dataclass(slots=True)
class _Open:
    tick: int
    long: bool
    qty: int
    row: int
    price: float
    fee: float
    exit: Exit | None


def run_backtest(
    signals: pl.DataFrame | pl.LazyFrame,
    *,
    risk: RiskRules,
    config: BacktestConfig | None = None,
) -> BacktestResult:
    """Backtest a compiled signal frame under ``risk`` rules.

    ``signals`` has the columns ticker, ts, open, high, low, close (volume is ignored) and the
    booleans entry_long, exit_long, entry_short, exit_short, each computed on the bar's close;
    plus ``atr`` when a level is ATR-based. Rows are sorted by (ticker, ts) if they are not.
    Raises :class:`~falcon.errors.ValidationError` on a frame that breaks this contract (missing
    columns, nulls, duplicate bars, bad prices) or rules it cannot serve (ATR levels without
    ``atr``, risk sizing without a stop loss).
    """
    return _run(signals, risk, config or BacktestConfig(), vectorised=True)


def _run(
    signals: pl.DataFrame | pl.LazyFrame,
    risk: RiskRules,
    config: BacktestConfig,
    *,
    vectorised: bool,
) -> BacktestResult:
    """``vectorised=False`` forces the event loop (the tests compare the two paths)."""
    a = prepare(signals)
    _check_levels(risk, a)
    sim = _Simulation(a, risk, config)
    sim.run(vectorised=vectorised)
    return sim.result()


def _check_levels(risk: RiskRules, a: Arrays) -> None:
    levels = (risk.stop_loss, risk.take_profit, risk.trailing_stop)
    if any(lv is not None and lv.kind is StopKind.ATR for lv in levels) and a.atr is None:
        raise ValidationError("an ATR-based stop or target needs an 'atr' column in the signals")
    if risk.sizing.kind is SizingKind.RISK and risk.stop_loss is None:
        raise ValidationError("risk sizing needs a stop_loss")
    trail = risk.trailing_stop
    if trail is not None and trail.kind is StopKind.PERCENT and trail.value >= 1:
        raise ValidationError("a percent trailing stop must be < 1 (100 %)")


class _Simulation:
    """One run: the event loop over entry signals and scheduled exits."""

    def __init__(self, a: Arrays, risk: RiskRules, config: BacktestConfig) -> None:
        self.a, self.risk, self.config = a, risk, config
        self.costs: CostModel = config.costs
        self.long_short = risk.direction is Direction.LONG_SHORT
        self.ledger = Ledger(cash=config.cash, allow_short=self.long_short)
        self.open: dict[int, _Open] = {}
        # Closed trades as plain tuples (cheaper than objects at 10**5 trades): tick, long, qty,
        # entry row, entry price, entry fee, exit row, exit price, exit fee, reason
        self.closed: list[tuple[Any, ...]] = []
        self.rejected: list[tuple[int, int, bool, str]] = []
        self.cash_t: list[int] = []
        self.cash_v: list[float] = []
        self.needs_marks = self.long_short or risk.sizing.kind is not SizingKind.ALL_IN
        self.level_specs = [
            (name, level)
            for name in ("stop_loss", "take_profit", "trailing_stop")
            if (level := getattr(risk, name)) is not None
        ]

    # --- the loop -----------------------------------------------------------------------------

    def run(self, *, vectorised: bool = True) -> None:
        """Simulate; the vectorised path is used when it applies (:func:`_fast.applies`)."""
        a = self.a
        n = a.n
        not_last = np.arange(n) < a.last_row
        el, xl, es, xs = a.entry_long, a.exit_long, a.entry_short, a.exit_short
        long_rows = el & ~xl & not_last
        if self.long_short:
            long_rows &= ~es
            short_rows = es & ~xs & ~el & not_last
            self.exit_long_at = next_true(xl | es, a.last_row)
            self.exit_short_at = next_true(xs | el, a.last_row)
        else:
            short_rows = np.zeros(n, dtype=bool)
            self.exit_long_at = next_true(xl, a.last_row)
            self.exit_short_at = self.exit_long_at  # never used: no shorts
        if vectorised and _fast.applies(self):
            _fast.run(self, long_rows, short_rows)
            return
        rows = np.concatenate((np.flatnonzero(long_rows), np.flatnonzero(short_rows)))
        is_long = np.concatenate((np.ones(long_rows.sum(), bool), np.zeros(short_rows.sum(), bool)))
        when = a.tix[rows + 1]
        order = np.lexsort((a.tick[rows], when))
        e_t = when[order].tolist()
        e_tick = a.tick[rows][order].tolist()
        e_row = rows[order].tolist()
        e_long = is_long[order].tolist()

        heap: list[tuple[int, int, int]] = []
        i, total = 0, len(e_t)
        while i < total or heap:
            if heap and (i >= total or heap[0] < (e_t[i], _ENTRY, e_tick[i])):
                t, _, tick = heapq.heappop(heap)
                self._close(self.open.pop(tick), t)
                continue
            tick = e_tick[i]
            if tick not in self.open:
                pos = self._enter(e_row[i], tick, e_long[i], e_t[i])
                if pos is not None and pos.exit is not None:
                    ex = pos.exit
                    heapq.heappush(
                        heap, (int(a.tix[ex.row]), _AT_OPEN if ex.at_open else _IN_BAR, tick)
                    )
            i += 1

    def _distance(self, level: Level, price: float, signal_row: int) -> float | None:
        if level.kind is StopKind.PERCENT:
            return price * level.value
        atr = float(self.a.atr[signal_row]) if self.a.atr is not None else float("nan")
        return level.value * atr if atr > 0 else None  # NaN (warm-up) compares False

    def _levels(self, price: float, market: float, long: bool, signal_row: int) -> Levels | None:
        """Exit levels from the entry price; None when an ATR level has no ATR yet."""
        risk = self.risk
        dist: dict[str, float] = {}
        for name, level in self.level_specs:
            d = self._distance(level, price, signal_row)
            if d is None:
                return None
            dist[name] = d
        sign = 1.0 if long else -1.0
        trail = risk.trailing_stop
        percent_trail = trail is not None and trail.kind is StopKind.PERCENT
        return Levels(
            stop=price - sign * dist["stop_loss"] if "stop_loss" in dist else None,
            target=price + sign * dist["take_profit"] if "take_profit" in dist else None,
            trail_percent=trail.value if trail is not None and percent_trail else None,
            trail_amount=dist["trailing_stop"] if trail is not None and not percent_trail else None,
            ref=market,
        )

    def _enter(self, signal_row: int, tick: int, long: bool, t: int) -> _Open | None:
        a, risk, costs = self.a, self.risk, self.costs
        row = signal_row + 1
        if len(self.open) >= risk.max_positions:
            self.rejected.append((tick, row, long, RejectReason.RISK_LIMIT.value))
            return None
        market = float(a.open[row])
        price = float(costs.slipped(market, buy=long))
        levels = _NO_LEVELS
        if self.level_specs:
            found = self._levels(price, market, long, signal_row)
            if found is None:  # ATR not available yet on the signal bar
                self.rejected.append((tick, row, long, RejectReason.RISK_LIMIT.value))
                return None
            levels = found
        if self.needs_marks:
            self._mark_open(t)
            buying_power, equity = self.ledger.buying_power(), self.ledger.equity()
        else:
            buying_power = equity = self.ledger.cash
        stop_d = None if levels.stop is None else abs(price - levels.stop)
        qty = entry_quantity(
            risk.sizing,
            price=price,
            buying_power=buying_power,
            equity=equity,
            costs=costs,
            stop_distance=stop_d,
        )
        if qty < 1:
            self.rejected.append((tick, row, long, RejectReason.INSUFFICIENT_CASH.value))
            return None
        fee = costs.fee(qty, price)
        try:
            self.ledger.book(a.tickers[tick], Side.BUY if long else Side.SELL, qty, price, fee)
        except LedgerRejected as exc:
            self.rejected.append((tick, row, long, exc.reason.value))
            return None
        self.cash_t.append(t)
        self.cash_v.append(self.ledger.cash)
        ex = find_exit(
            a,
            long=long,
            entry_row=row,
            levels=levels,
            signal_row=int((self.exit_long_at if long else self.exit_short_at)[row]),
            max_bars=risk.max_bars,
            costs=costs,
        )
        pos = _Open(tick, long, qty, row, price, fee, ex)
        self.open[tick] = pos
        return pos

    def _close(self, pos: _Open, t: int) -> None:
        ex = pos.exit
        if ex is None:  # pragma: no cover - only scheduled exits reach here
            raise RuntimeError("closing a position without an exit")
        fee = self.costs.fee(pos.qty, ex.price)
        side = Side.SELL if pos.long else Side.BUY
        self.ledger.book(self.a.tickers[pos.tick], side, pos.qty, ex.price, fee)
        self.closed.append(
            (
                pos.tick,
                pos.long,
                pos.qty,
                pos.row,
                pos.price,
                pos.fee,
                ex.row,
                ex.price,
                fee,
                ex.reason,
            )
        )
        self.cash_t.append(t)
        self.cash_v.append(self.ledger.cash)

    def open_fast(
        self, tick: int, long: bool, qty: int, row: int, price: float, fee: float
    ) -> None:
        """Record a position the vectorised path leaves open at the end."""
        self.open[tick] = _Open(tick, long, qty, row, price, fee, None)

    def _mark_open(self, t: int) -> None:
        """Mark every open position at its ticker's last close before time index ``t``."""
        a = self.a
        for pos in self.open.values():
            first, last = int(a.first_row[pos.row]), int(a.last_row[pos.row])
            row = first + int(np.searchsorted(a.tix[first : last + 1], t)) - 1
            if row >= pos.row:  # else it entered at this very open: its fill price is the mark
                self.ledger.mark(a.tickers[pos.tick], float(a.close[row]))

    # --- the result ---------------------------------------------------------------------------

    def result(self) -> BacktestResult:
        """The read-only result (built in :mod:`falcon.backtest._report`)."""
        from falcon.backtest._report import build_result  # it imports this module's types

        return build_result(self)
