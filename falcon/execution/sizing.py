"""How many whole shares an entry buys or sells short, from a strategy's :class:`Sizing`."""

from __future__ import annotations

import math

from falcon.domain.rules import Sizing, SizingKind
from falcon.execution.fills import CostModel


def entry_quantity(
    sizing: Sizing,
    *,
    price: float,
    buying_power: float,
    equity: float,
    costs: CostModel,
    stop_distance: float | None = None,
) -> int:
    """Whole shares for an entry at ``price`` (slippage included), never more than affordable.

    * ``all_in``: ``floor(buying_power / (price * (1 + commission) + per_share_fee))``, like
      backtesting.py's ``buy()`` without a size (with several positions: all that is left);
    * ``fraction``: that fraction of ``equity`` in notional, commission included;
    * ``risk``: ``equity * value / stop_distance`` (the stop loss would lose ``value`` of equity);
    * ``shares``: a fixed count.

    Every kind is cut to what ``buying_power`` pays for, commission included; 0 means the entry
    cannot be afforded (the caller rejects it with ``insufficient_cash``).
    """
    unit = costs.unit_cost(price)
    if not (math.isfinite(unit) and unit > 0):
        raise ValueError(f"cannot size an entry at price {price}")
    if sizing.kind is SizingKind.RISK and (stop_distance is None or not stop_distance > 0):
        raise ValueError("risk sizing needs a stop loss (a positive stop distance)")
    return shares_for(sizing.kind, sizing.value, unit, buying_power, equity, stop_distance or 0.0)


def shares_for(
    kind: SizingKind, value: float, unit: float, buying_power: float, equity: float, stop: float
) -> int:
    """The arithmetic of :func:`entry_quantity` on a checked unit cost (the backtester's loop)."""
    # ``//`` rather than floor(a / b): it is what backtesting.py does, and the two can differ by
    # one share when the quotient is within an ulp of a whole number.
    affordable = int(buying_power // unit) if buying_power > 0 else 0
    if kind is SizingKind.ALL_IN:
        return affordable
    if kind is SizingKind.FRACTION:
        wanted = int(equity * value // unit) if equity > 0 else 0
    elif kind is SizingKind.RISK:
        wanted = int(equity * value // stop) if equity > 0 else 0
    else:
        wanted = int(value)
    return max(0, min(wanted, affordable))
