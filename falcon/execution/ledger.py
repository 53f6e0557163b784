"""The cash and position ledger: one implementation for the backtester and the paper trader.

A :class:`Ledger` is a plain Python object. Its state changes only through :meth:`Ledger.apply`
with a :class:`~falcon.domain.orders.Fill`; the paper trader rebuilds an account by applying its
persisted fills in order, and gets exactly the state the backtester would have had.

Money rules (chosen to agree with backtesting.py at ``margin=1``):

* long-only: a buy must be paid from cash (price * qty + fee <= cash); a sell may not exceed the
  shares held;
* long/short: selling more than is held opens a short; a short sale credits its proceeds to
  cash, but any order that adds exposure must fit the *buying power*
  ``equity - sum(|qty| * mark)`` (100 % margin on longs and shorts alike, no leverage);
  an order that only reduces a position is always allowed;
* whole shares; fees accumulate in :attr:`Ledger.fees`; ``realized_pnl`` is gross of fees, so
  ``equity == starting cash + realized_pnl + unrealized - fees``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

from falcon.domain.events import RejectReason
from falcon.domain.orders import Fill, Position, Side
from falcon.errors import RiskRejected

# Floating-point slack on the cash checks: sizing computes the affordable count with the same
# formula, and one ulp of difference must not turn an affordable order into a rejection.
_CASH_SLACK = 1e-9


def cash_after(cash: float, signed_qty: int, price: float, fee: float) -> float:
    """Cash after a fill of ``signed_qty`` shares (negative sells) at ``price`` paying ``fee``.

    The one place this arithmetic lives: :meth:`Ledger.book` and the backtester's vectorised
    path both call it, so their floats agree to the last bit.
    """
    return cash - (signed_qty * price + fee)


class LedgerRejected(RiskRejected):
    """A fill the ledger refuses to apply; ``reason`` says why."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Ledger:
    """Cash, positions (signed quantity, average cost, realized P&L) and fees of one account."""

    __slots__ = (
        "_cash",
        "_fees",
        "_marks",
        "_pos",
        "_realized",
        "allow_short",
        "starting_cash",
    )

    def __init__(self, *, cash: float, allow_short: bool = False) -> None:
        if not (math.isfinite(cash) and cash > 0):
            raise ValueError("starting cash must be > 0")
        self.starting_cash = float(cash)
        self.allow_short = allow_short
        self._cash = float(cash)
        self._fees = 0.0
        self._realized = 0.0
        # ticker -> [signed qty, average cost, realized P&L]: plain lists, because the
        # backtester books tens of thousands of fills per run; read through ``positions``.
        self._pos: dict[str, list[float]] = {}
        self._marks: dict[str, float] = {}

    # --- read ---------------------------------------------------------------------------------

    @property
    def cash(self) -> float:
        """Cash, short-sale proceeds included."""
        return self._cash

    @property
    def fees(self) -> float:
        """Commissions paid so far."""
        return self._fees

    @property
    def realized_pnl(self) -> float:
        """Realized P&L of all positions, gross of fees."""
        return self._realized

    @property
    def positions(self) -> Mapping[str, Position]:
        """Open positions by ticker (a read-only snapshot)."""
        return MappingProxyType(
            {
                t: Position(ticker=t, qty=int(p[0]), avg_cost=p[1], realized_pnl=p[2])
                for t, p in self._pos.items()
            }
        )

    def position(self, ticker: str) -> Position | None:
        """The open position in ``ticker`` (None when flat); cheaper than :attr:`positions`
        when one ticker is wanted (that property copies every position)."""
        p = self._pos.get(ticker)
        if p is None:
            return None
        return Position(ticker=ticker, qty=int(p[0]), avg_cost=p[1], realized_pnl=p[2])

    def qty(self, ticker: str) -> int:
        """Signed shares held of ``ticker`` (0 when flat)."""
        pos = self._pos.get(ticker)
        return int(pos[0]) if pos else 0

    @property
    def marks(self) -> Mapping[str, float]:
        """Latest known price per ticker (read-only)."""
        return MappingProxyType(self._marks)

    def mark(self, ticker: str, price: float) -> None:
        """Record the latest price of ``ticker`` for equity and margin (fills mark too)."""
        self._marks[ticker] = price

    def market_value(self) -> float:
        """Signed value of all positions at their marks."""
        return sum(p[0] * self._marks[t] for t, p in self._pos.items())

    def value_at(self, marks: Mapping[str, float]) -> float:
        """Signed value of all positions, each at :meth:`price_at`; no snapshot of the positions
        is built."""
        own = self._marks
        # price_at's rule, inlined: hundreds of positions, valued for every entry sized.
        return sum(p[0] * marks.get(t, own.get(t, p[1])) for t, p in self._pos.items())

    def price_at(self, ticker: str, marks: Mapping[str, float]) -> float:
        """The price ``ticker`` is valued at given ``marks``: its price there, else the
        ledger's own mark, else the position's average cost (0 when flat and never marked)."""
        price = marks.get(ticker)
        if price is not None:
            return price
        price = self._marks.get(ticker)
        if price is not None:
            return price
        p = self._pos.get(ticker)
        return 0.0 if p is None else p[1]

    def gross_exposure(self) -> float:
        """Absolute value of all positions at their marks."""
        return sum(abs(p[0]) * self._marks[t] for t, p in self._pos.items())

    def equity(self) -> float:
        """Cash plus the marked value of every position."""
        return self._cash + self.market_value()

    def buying_power(self) -> float:
        """Cash an order that adds exposure may use: cash when long-only, else equity - exposure."""
        if not self.allow_short:
            return self._cash
        return max(0.0, self.equity() - self.gross_exposure())

    # --- write --------------------------------------------------------------------------------

    def check(self, fill: Fill) -> RejectReason | None:
        """Why ``fill`` would be refused, or None if :meth:`apply` would accept it."""
        return self.check_trade(fill.ticker, fill.side, fill.qty, fill.price, fill.fee)

    def apply(self, fill: Fill, *, checked: bool = True) -> float:
        """Book ``fill``; returns the P&L it realized (gross of fees).

        Raises :class:`LedgerRejected` (and changes nothing) if the fill breaks a money rule.
        ``checked=False`` books a fill that was judged already (a replay of stored fills, or a
        second ledger following the first): the money rules of a margin account depend on the
        marks of the moment it filled, which a replay does not have.
        """
        return self.book(fill.ticker, fill.side, fill.qty, fill.price, fill.fee, checked=checked)

    def check_trade(
        self, ticker: str, side: Side, qty: int, price: float, fee: float
    ) -> RejectReason | None:
        """:meth:`check` without building a :class:`Fill` (the backtester's hot path)."""
        pos = self._pos.get(ticker)
        held = pos[0] if pos else 0
        if side is Side.SELL:
            opening = qty - held if held > 0 else qty
            if opening > 0 and not self.allow_short:
                return RejectReason.NO_SHARES
        else:
            opening = qty + held if held < 0 else qty
        if opening <= 0:
            return None  # only reduces a position: always allowed
        # The part that adds exposure pays its share of the fee.
        need = opening * price + fee * opening / qty
        if self.allow_short:
            if ticker not in self._marks:
                self._marks[ticker] = price
            room = self.buying_power()
            if opening < qty:  # a reversal: the closing part frees its exposure first
                room += (qty - opening) * self._marks[ticker]
        else:
            room = self._cash
        if need > room + _CASH_SLACK * max(1.0, abs(room)):
            return RejectReason.INSUFFICIENT_CASH
        return None

    def book(self, ticker: str, side: Side, qty: int, price: float, fee: float, *,
             checked: bool = True) -> float:
        """:meth:`apply` without building a :class:`Fill`; same checks, same effect."""
        if qty < 1 or qty != int(qty):
            raise ValueError(f"qty must be a whole number >= 1, got {qty!r}")
        reason = self.check_trade(ticker, side, qty, price, fee) if checked else None
        if reason is not None:
            raise LedgerRejected(reason, f"{side} {qty} {ticker} @ {price:.4f}: {reason}")
        signed = qty if side is Side.BUY else -qty
        pos = self._pos.get(ticker)
        realized = 0.0
        if pos is None:
            self._pos[ticker] = [signed, price, 0.0]
        else:
            held, avg = pos[0], pos[1]
            new_qty = held + signed
            if (held > 0) == (signed > 0):
                pos[1] = (abs(held) * avg + qty * price) / abs(new_qty)
            else:
                closed = min(abs(held), qty)
                realized = closed * (price - avg) if held > 0 else closed * (avg - price)
                pos[2] += realized
                if new_qty and (new_qty > 0) != (held > 0):
                    pos[1] = price  # flipped through zero: the rest opened at this price
            pos[0] = new_qty
            if new_qty == 0:
                del self._pos[ticker]
        self._cash = cash_after(self._cash, signed, price, fee)
        self._fees += fee
        self._realized += realized
        self._marks[ticker] = price
        return realized
