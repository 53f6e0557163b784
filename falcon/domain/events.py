"""What happened to an order: immutable, past-tense events.

The paper trader persists these; replaying the ``OrderFilled`` events of an account through
:meth:`falcon.execution.ledger.Ledger.apply` rebuilds its cash and positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from falcon.domain.orders import Fill, Order


class RejectReason(StrEnum):
    """Why an order was refused."""

    NO_SHARES = "no_shares"  # a sell of shares not held (long-only)
    INSUFFICIENT_CASH = "insufficient_cash"  # not enough cash or margin, even for one share
    MARKET_CLOSED = "market_closed"
    RISK_LIMIT = "risk_limit"  # e.g. max_positions reached, or no stop distance to size on
    HALTED = "halted"  # the account is halted


class CancelReason(StrEnum):
    """Why an order stopped being live without a fill."""

    USER = "user"
    EXPIRED = "expired"  # a day order at the end of its session
    OCO = "oco"  # its sibling in a one-cancels-other group filled
    PARENT = "parent"  # the entry of its bracket was rejected or canceled
    POSITION_CLOSED = "position_closed"  # nothing left for an exit leg to close


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderSubmitted:
    """An order was accepted into the book."""

    order: Order
    ts: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderFilled:
    """An order was (wholly) filled."""

    order: Order
    fill: Fill

    @property
    def ts(self) -> datetime:
        """When the fill happened."""
        return self.fill.ts


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderCanceled:
    """An order left the book unfilled."""

    order: Order
    ts: datetime
    reason: CancelReason


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRejected:
    """An order was refused, at submission or when it would have filled."""

    order: Order
    ts: datetime
    reason: RejectReason
    detail: str = ""


OrderEvent = OrderSubmitted | OrderFilled | OrderCanceled | OrderRejected
