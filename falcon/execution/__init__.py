"""The fill model, open orders and the cash/position ledger: one implementation, shared by the
backtester and the paper trader.

* :mod:`falcon.execution.fills`: when an order fills inside a bar and at what price
  (:class:`CostModel`, :func:`fill_price`, :func:`after_bar`, :func:`exit_leg_first`);
* :mod:`falcon.execution.ledger`: :class:`Ledger` (cash, positions, fees; ``apply(fill)``);
* :mod:`falcon.execution.book`: :class:`OrderBook` (brackets, OCO, time in force) for the live
  paper trader; :func:`bracket` builds an entry with its exit legs;
* :mod:`falcon.execution.sizing`: :func:`entry_quantity` from a strategy's sizing rule.
"""

from falcon.execution.book import OrderBook, bracket
from falcon.execution.fills import CostModel, after_bar, exit_leg_first, fill_price
from falcon.execution.ledger import Ledger, LedgerRejected
from falcon.execution.sizing import entry_quantity

__all__ = [
    "CostModel",
    "Ledger",
    "LedgerRejected",
    "OrderBook",
    "after_bar",
    "bracket",
    "entry_quantity",
    "exit_leg_first",
    "fill_price",
]
