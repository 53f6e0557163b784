"""Orders and fills: frozen values, changed only by making a new one (``dataclasses.replace``).

An order's ``qty`` is a whole, positive number of shares; its direction is ``side``. A bracket is
three orders tied together: the entry (``parent_id`` None), and a stop loss and a take profit
that carry the entry's id in ``parent_id`` and share one ``oco_group`` (one cancels the other).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Side(StrEnum):
    """Direction of an order or a fill."""

    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        """+1 for a buy, -1 for a sell: the sign of the change in position."""
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        """The side that closes a position opened by this side."""
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(StrEnum):
    """How an order's price is decided (see :mod:`falcon.execution.fills`)."""

    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"
    TRAILING_STOP = "trailing_stop"


class TimeInForce(StrEnum):
    """How long an unfilled order lives."""

    DAY = "day"  # canceled at the end of the session it was meant for
    GTC = "gtc"  # good till canceled


@dataclass(frozen=True, slots=True, kw_only=True)
class Order:
    """An instruction to trade; its state (open, filled ...) lives in events, not here.

    A trailing stop keeps its current trigger in ``stop_price`` and the best price seen since it
    was placed in ``watermark``; :func:`falcon.execution.fills.trail` makes the updated order.
    """

    id: str
    ticker: str
    side: Side
    qty: int
    type: OrderType = OrderType.MARKET
    limit_price: float | None = None
    stop_price: float | None = None
    trail_percent: float | None = None  # a fraction: 0.05 trails 5 % behind the watermark
    trail_amount: float | None = None  # in price units
    watermark: float | None = None
    tif: TimeInForce = TimeInForce.GTC
    parent_id: str | None = None
    oco_group: str | None = None
    tag: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.qty, bool) or not isinstance(self.qty, int) or self.qty < 1:
            raise ValueError(f"order {self.id}: qty must be a whole number >= 1, got {self.qty!r}")
        for name in ("limit_price", "stop_price", "trail_amount", "watermark"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"order {self.id}: {name} must be finite and > 0")
        needs_limit = self.type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
        needs_stop = self.type in (OrderType.STOP, OrderType.STOP_LIMIT)
        if needs_limit != (self.limit_price is not None):
            verdict = "required" if needs_limit else "not allowed"
            raise ValueError(f"order {self.id}: limit_price is {verdict} for {self.type}")
        if needs_stop and self.stop_price is None:
            raise ValueError(f"order {self.id}: stop_price is required for {self.type}")
        if self.type is OrderType.TRAILING_STOP:
            if (self.trail_percent is None) == (self.trail_amount is None):
                raise ValueError(
                    f"order {self.id}: give exactly one of trail_percent, trail_amount"
                )
            if self.trail_percent is not None and not 0 < self.trail_percent < 1:
                raise ValueError(f"order {self.id}: trail_percent must be in (0, 1)")
        elif self.trail_percent is not None or self.trail_amount is not None:
            raise ValueError(f"order {self.id}: trail_* only applies to trailing stops")

    @property
    def is_exit_leg(self) -> bool:
        """True for the stop loss or take profit of a bracket."""
        return self.parent_id is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Fill:
    """A simulated execution: ``price`` already includes slippage, ``fee`` is the commission."""

    order_id: str
    ticker: str
    side: Side
    qty: int
    price: float
    fee: float
    ts: datetime

    def __post_init__(self) -> None:
        if isinstance(self.qty, bool) or not isinstance(self.qty, int) or self.qty < 1:
            raise ValueError(f"fill of {self.order_id}: qty must be a whole number >= 1")
        if not (math.isfinite(self.price) and self.price > 0):
            raise ValueError(f"fill of {self.order_id}: price must be finite and > 0")
        if not (math.isfinite(self.fee) and self.fee >= 0):
            raise ValueError(f"fill of {self.order_id}: fee must be finite and >= 0")

    @property
    def notional(self) -> float:
        """Shares times price."""
        return self.qty * self.price


@dataclass(frozen=True, slots=True, kw_only=True)
class Position:
    """Holdings of one ticker: ``qty`` is signed (negative is short), ``avg_cost`` per share.

    ``realized_pnl`` is gross of fees (the ledger keeps fees apart).
    """

    ticker: str
    qty: int = 0
    avg_cost: float = 0.0
    realized_pnl: float = 0.0
