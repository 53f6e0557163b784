"""Money and the double-entry books of a paper account: rounding, fee model, ledger legs.

Ledger books and signs (debits positive, each transaction sums to exactly zero)::

    deposit    cash +S                       equity -S
    buy        position:T +cost  fees +fee   cash -(cost + fee)
    sell       position:T -basis  fees +fee  realized_pnl -(proceeds - basis)
               cash +(proceeds - fee)

``position:T`` always holds ``qty * avg_cost`` (in micro-dollars), so it returns to zero when the
position closes; ``realized_pnl`` is a credit book (a profit is negative), as is ``equity``.
Amounts are rounded to micro-dollars (the ``Money`` column's unit); the cash leg takes the
rounding so that every transaction balances exactly and ``paper_accounts.cash`` is the sum of the
``cash`` book. Fees are rounded to micro-dollars *before* the in-memory ledger books them
(:class:`MicroCosts`), so replaying the stored fills rebuilds the very same ledger.
"""

from __future__ import annotations

import hashlib
from decimal import ROUND_HALF_EVEN, Decimal

from falcon.execution.fills import CostModel
from falcon.execution.ledger import Ledger

__all__ = ["ZERO", "MicroCosts", "fill_legs", "money", "position_basis", "txn_id_for"]

MICRO = Decimal("0.000001")
ZERO = Decimal(0)


def money(value: float | Decimal) -> Decimal:
    """``value`` rounded to micro-dollars, the unit of the ``Money`` column."""
    return Decimal(value).quantize(MICRO, rounding=ROUND_HALF_EVEN)


class MicroCosts(CostModel):
    """The shared cost model, with each fee rounded to micro-dollars as the database stores it."""

    __slots__ = ()

    def fee(self, qty: int, price: float) -> float:
        """The commission of :class:`CostModel`, rounded to 6 decimals."""
        return round(CostModel.fee(self, qty, price), 6)

    @classmethod
    def of(cls, costs: CostModel) -> MicroCosts:
        """The same costs, rounding fees."""
        return cls(
            commission=costs.commission,
            commission_per_share=costs.commission_per_share,
            slippage_bps=costs.slippage_bps,
        )


def txn_id_for(key: str) -> str:
    """A deterministic ledger transaction id (<= 64 chars) for an idempotency key."""
    return "txn:" + hashlib.sha256(key.encode()).hexdigest()[:40]


def fill_legs(
    ticker: str, basis_before: Decimal, basis_after: Decimal, fee: float, realized: float
) -> list[tuple[str, Decimal]]:
    """The balanced legs of one fill: position at cost, fees, realized P&L, and cash."""
    legs: list[tuple[str, Decimal]] = []
    if basis_after != basis_before:
        legs.append((f"position:{ticker}", basis_after - basis_before))
    if fee:
        legs.append(("fees", money(fee)))
    if realized:
        legs.append(("realized_pnl", -money(realized)))
    legs.append(("cash", -sum((amount for _, amount in legs), ZERO)))
    return legs


def position_basis(ledger: Ledger, ticker: str) -> Decimal:
    """The balance of the ``position:T`` book for ``ticker``: ``qty * avg_cost`` in money (zero
    when flat)."""
    pos = ledger.position(ticker)
    return ZERO if pos is None else money(pos.qty * pos.avg_cost)
