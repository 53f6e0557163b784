"""Where an open position ends: the first stop, target, trailing stop, signal or time exit.

A position's exit depends only on its own ticker's bars and its levels, never on the rest of the
portfolio, so the engine finds it with numpy when the position opens and schedules it. The prices
come from :mod:`falcon.execution.fills`, the same functions the paper trader's order book uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from falcon.backtest._data import Arrays
from falcon.execution import fills
from falcon.execution.fills import CostModel


@dataclass(frozen=True, slots=True)
class Levels:
    """Exit levels of one position, fixed at entry (the trailing stop moves from ``ref``)."""

    stop: float | None
    target: float | None
    trail_percent: float | None
    trail_amount: float | None
    ref: float  # market price at entry: where the trailing watermark starts

    @property
    def any(self) -> bool:
        """True when there is something to watch inside bars."""
        return self.stop is not None or self.target is not None or self.trailing

    @property
    def trailing(self) -> bool:
        """True for a trailing stop."""
        return self.trail_percent is not None or self.trail_amount is not None


@dataclass(frozen=True, slots=True)
class Exit:
    """A scheduled exit: at ``row``'s open or inside it, at ``price`` (slippage included)."""

    row: int
    at_open: bool
    reason: str
    price: float


_FIRST_WINDOW = 16


def find_exit(
    a: Arrays,
    *,
    long: bool,
    entry_row: int,
    levels: Levels,
    signal_row: int,
    max_bars: int | None,
    costs: CostModel,
) -> Exit | None:
    """The exit of a position entered at the open of ``entry_row``; None if it outlives the data.

    ``signal_row`` is the first bar (>= entry) whose close says exit, or -1. Stops and targets are
    watched from the entry bar itself: the fill was at its open, so all of its range came after.
    """
    last = int(a.last_row[entry_row])
    decide = signal_row
    reason = "signal"
    if max_bars is not None:
        timed = entry_row + max_bars - 1
        if timed <= last and (decide < 0 or timed < decide):
            decide, reason = timed, "max_bars"
    scan_to = decide if decide >= 0 else last
    if levels.any:
        hit = _scan_levels(a, long=long, lo=entry_row, hi=scan_to, levels=levels, costs=costs)
        if hit is not None:
            return hit
    if decide < 0 or decide + 1 > last:
        return None
    row = decide + 1
    return Exit(row, True, reason, float(costs.slipped(a.open[row], buy=not long)))


def _scan_levels(
    a: Arrays, *, long: bool, lo: int, hi: int, levels: Levels, costs: CostModel
) -> Exit | None:
    buy = not long  # the exit order's side
    watermark = levels.ref
    fixed = levels.stop
    target = levels.target
    width = _FIRST_WINDOW
    while lo <= hi:
        end = min(hi, lo + width - 1) + 1
        o, h, lw = a.open[lo:end], a.high[lo:end], a.low[lo:end]
        stop: npt.NDArray[np.float64] | None = None if fixed is None else np.full(end - lo, fixed)
        trail = None
        if levels.trailing:
            seen = h if long else lw
            run = np.maximum.accumulate(seen) if long else np.minimum.accumulate(seen)
            before = np.empty_like(run)  # the watermark set by earlier bars only
            before[0] = watermark
            before[1:] = run[:-1]
            before = np.maximum(before, watermark) if long else np.minimum(before, watermark)
            last_seen = float(run[-1])
            watermark = max(watermark, last_seen) if long else min(watermark, last_seen)
            trail = fills.trail_level(
                before, buy=buy, percent=levels.trail_percent, amount=levels.trail_amount
            )
            if stop is None:
                stop = trail
            else:
                stop = np.maximum(stop, trail) if long else np.minimum(stop, trail)
        hit = np.zeros(end - lo, dtype=bool)
        if stop is not None:
            hit |= fills.stop_touched(stop, h, lw, buy=buy)
        if target is not None:
            hit |= fills.limit_through(target, h, lw, buy=buy)
        if hit.any():
            k = int(np.argmax(hit))
            level = None if stop is None else float(stop[k])
            return _exit_in_bar(
                lo + k,
                float(o[k]),
                float(h[k]),
                float(lw[k]),
                level,
                target,
                trailing=trail is not None and (fixed is None or level != fixed),
                buy=buy,
                costs=costs,
            )
        lo = end
        width *= 4
    return None


def _exit_in_bar(
    row: int,
    open_: float,
    high: float,
    low: float,
    stop: float | None,
    target: float | None,
    *,
    trailing: bool,
    buy: bool,
    costs: CostModel,
) -> Exit:
    """Which level fills in this bar: a gap at the open first, then the stop before the target."""
    stop_reason = "trailing_stop" if trailing else "stop_loss"
    if stop is not None and fills.stop_gapped(stop, open_, buy=buy):
        return Exit(row, True, stop_reason, float(costs.slipped(open_, buy=buy)))
    if target is not None and fills.limit_gapped(target, open_, buy=buy):
        return Exit(row, True, "take_profit", float(open_))
    if stop is not None and fills.stop_touched(stop, high, low, buy=buy):
        price = fills.stop_fill_price(stop, open_, buy=buy)
        return Exit(row, False, stop_reason, float(costs.slipped(price, buy=buy)))
    if target is None:  # pragma: no cover - the scan only stops on a hit
        raise RuntimeError("exit search stopped on a bar without a hit")
    return Exit(row, False, "take_profit", float(fills.limit_fill_price(target, open_, buy=buy)))
