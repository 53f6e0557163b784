"""The vectorised path: one ticker and no stop, target or trailing stop.

Then nothing happens inside bars, only at opens after signals, and positions never compete, so
the sequence of trades follows from the signals alone: numpy finds every candidate's exit, a
short walk over candidates chains the trades, and a loop over trades (not bars) sizes them with
the shared sizing function and books them with the ledger's own cash arithmetic. It fills the
same fields of the simulation as the event loop, and the tests hold it to the event loop's
results bit for bit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from falcon.domain.events import RejectReason
from falcon.domain.rules import SizingKind
from falcon.execution.ledger import cash_after
from falcon.execution.sizing import shares_for

if TYPE_CHECKING:
    from falcon.backtest.engine import _Simulation


def applies(sim: _Simulation) -> bool:
    """True when the vectorised path gives the event loop's results."""
    return (
        len(sim.a.tickers) == 1
        and not sim.level_specs
        and sim.risk.sizing.kind is not SizingKind.RISK
    )


def run(sim: _Simulation, long_rows: np.ndarray, short_rows: np.ndarray) -> None:
    """Simulate ``sim`` (see :func:`applies`) from its candidate entry rows."""
    a, costs, risk = sim.a, sim.costs, sim.risk
    n = a.n
    last = n - 1
    rows = np.flatnonzero(long_rows | short_rows)
    is_long = long_rows[rows]
    fill = rows + 1
    # Exit decided at the close of `decide`, filled at the next open (same rules as find_exit).
    decide = np.where(is_long, sim.exit_long_at[fill], sim.exit_short_at[fill])
    reason_timed = np.zeros(len(rows), dtype=bool)
    if risk.max_bars is not None:
        timed = fill + risk.max_bars - 1
        use = (timed <= last) & ((decide < 0) | (timed < decide))
        decide = np.where(use, timed, decide)
        reason_timed = use
    exit_row = np.where((decide >= 0) & (decide + 1 <= last), decide + 1, -1)
    # The next candidate that may enter once this trade is out: its fill at or after the exit.
    successor = np.searchsorted(rows, exit_row - 1, side="left")

    market = a.open[fill]
    entry_px = np.where(is_long, costs.slipped(market, buy=True), costs.slipped(market, buy=False))
    exit_open = a.open[np.maximum(exit_row, 0)]
    exit_px = np.where(
        is_long, costs.slipped(exit_open, buy=False), costs.slipped(exit_open, buy=True)
    )
    unit = costs.unit_cost(entry_px)  # elementwise: the same floats as one at a time
    if not np.all(np.isfinite(unit) & (unit > 0)):
        raise ValueError("cannot size entries at non-positive prices")

    fill_l, long_l, entry_l, unit_l = (
        fill.tolist(),
        is_long.tolist(),
        entry_px.tolist(),
        unit.tolist(),
    )
    exit_l, succ_l, timed_l, xpx_l = (
        exit_row.tolist(),
        successor.tolist(),
        reason_timed.tolist(),
        exit_px.tolist(),
    )
    t_in, t_out = a.tix[fill].tolist(), a.tix[np.maximum(exit_row, 0)].tolist()
    kind, value = risk.sizing.kind, risk.sizing.value
    cash = sim.config.cash
    closed, cash_t, cash_v = sim.closed, sim.cash_t, sim.cash_v
    i, total = 0, len(fill_l)
    while i < total:
        long, price, f = long_l[i], entry_l[i], fill_l[i]
        # Flat at every entry here: equity is cash, and so is buying power (long/short too).
        qty = shares_for(kind, value, unit_l[i], cash, cash, 0.0)
        if qty < 1:
            sim.rejected.append((0, f, long, RejectReason.INSUFFICIENT_CASH.value))
            i += 1
            continue
        sign = 1 if long else -1
        fee = costs.fee(qty, price)
        cash = cash_after(cash, sign * qty, price, fee)
        cash_t.append(t_in[i])
        cash_v.append(cash)
        x = exit_l[i]
        if x < 0:
            sim.open_fast(0, long, qty, f, price, fee)
            break
        out = xpx_l[i]
        out_fee = costs.fee(qty, out)
        cash = cash_after(cash, -sign * qty, out, out_fee)
        cash_t.append(t_out[i])
        cash_v.append(cash)
        closed.append(
            (0, long, qty, f, price, fee, x, out, out_fee, "max_bars" if timed_l[i] else "signal")
        )
        i = succ_l[i]
