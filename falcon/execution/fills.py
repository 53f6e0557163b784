"""The fill model: when an order fills inside a bar, and at what price.

Every engine (the backtester's vectorised exit search, the order book of the paper trader) calls
these functions, so the rules below live in one place. The predicates and price functions accept
floats or numpy arrays alike; ``buy`` is the side of the *order* (a long's stop loss is a sell).

Rules (see DESIGN.md, "Conventions every engine follows"):

* market: fills at the bar's open, plus slippage against the trader;
* stop: triggers when the bar *touches* the stop (buy: high >= stop, sell: low <= stop); if the
  open is already beyond the stop (a gap) it fills at the open, else at the stop; plus slippage;
* limit: fills only when the price trades *through* the limit (buy: low < limit, sell:
  high > limit, strictly: a bar that only touches the limit does not fill it); at the open when
  the open is already better than the limit, else at the limit; no slippage (a limit caps it);
* stop-limit: the stop triggers as above; triggered by a gap at the open it is a limit order
  from the open on; triggered inside the bar it fills at the stop price when that is strictly
  better than the limit, otherwise it rests as a plain limit order from the next bar on (we
  cannot know whether the price came back through the limit after the trigger in this bar);
* trailing stop: a stop whose level trails the best price seen (the watermark) by a percent or an
  amount; inside a bar it uses the level set by earlier bars (we cannot know whether this bar's
  high came before its low), then :func:`after_bar` moves it with this bar's high (low);
* a bar that touches both the stop loss and the take profit of one position fills the stop (the
  pessimistic reading): see :func:`exit_leg_first`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt

from falcon.domain.market import Bar
from falcon.domain.orders import Order, OrderType, Side

# A price, or a column of prices: the predicates below return a bool or an array of bools,
# the price functions whatever they were given.
PriceLike: TypeAlias = float | npt.NDArray[np.float64]
Price = TypeVar("Price", float, npt.NDArray[np.float64])

BPS = 1e-4


@dataclass(frozen=True, slots=True, kw_only=True)
class CostModel:
    """Commission (a fraction of notional plus a per-share fee) and slippage in basis points."""

    commission: float = 0.0
    commission_per_share: float = 0.0
    slippage_bps: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.commission < 0.1:
            raise ValueError("commission is a fraction of notional in [0, 0.1)")
        if not (math.isfinite(self.commission_per_share) and self.commission_per_share >= 0):
            raise ValueError("commission_per_share must be >= 0")
        if not 0 <= self.slippage_bps < 1000:
            raise ValueError("slippage_bps must be in [0, 1000)")

    def fee(self, qty: int, price: float) -> float:
        """Commission of a fill of ``qty`` shares at ``price``; charged on entries and exits."""
        return qty * price * self.commission + qty * self.commission_per_share

    def unit_cost(self, price: Price) -> Price:
        """Cash one share costs at ``price``, commission included (used for sizing)."""
        return price + price * self.commission + self.commission_per_share

    def slipped(self, price: Price, *, buy: bool) -> Price:
        """``price`` moved ``slippage_bps`` against the trader."""
        if not self.slippage_bps:
            return price
        factor = 1.0 + self.slippage_bps * BPS if buy else 1.0 - self.slippage_bps * BPS
        return price * factor


# --- predicates and raw prices: floats or arrays --------------------------------------------


def stop_touched(stop: PriceLike, high: PriceLike, low: PriceLike, *, buy: bool) -> Any:
    """A stop triggers when the bar reaches it (touch is enough)."""
    return high >= stop if buy else low <= stop


def stop_gapped(stop: PriceLike, open_: PriceLike, *, buy: bool) -> Any:
    """The bar opened at or beyond the stop: it fills at the open."""
    return open_ >= stop if buy else open_ <= stop


def stop_fill_price(stop: Price, open_: Price, *, buy: bool) -> Price:
    """Raw (before slippage) price of a triggered stop: the stop, or the open if gapped."""
    return np.maximum(open_, stop) if buy else np.minimum(open_, stop)


def limit_through(limit: PriceLike, high: PriceLike, low: PriceLike, *, buy: bool) -> Any:
    """A limit fills only when the price trades strictly through it."""
    return low < limit if buy else high > limit


def limit_gapped(limit: PriceLike, open_: PriceLike, *, buy: bool) -> Any:
    """The bar opened strictly better than the limit: it fills at the open."""
    return open_ < limit if buy else open_ > limit


def limit_fill_price(limit: Price, open_: Price, *, buy: bool) -> Price:
    """Price of a limit that traded through: the limit, or the open if that was better."""
    return np.minimum(open_, limit) if buy else np.maximum(open_, limit)


def trail_level(
    watermark: Price, *, buy: bool, percent: float | None, amount: float | None
) -> Price:
    """Trigger of a trailing stop: ``percent`` (a fraction) or ``amount`` behind the watermark.

    A sell trailing stop (protecting a long) sits below the highest price, a buy one above the
    lowest.
    """
    if percent is not None:
        return watermark * (1.0 + percent) if buy else watermark * (1.0 - percent)
    if amount is None:
        raise ValueError("a trailing stop needs a percent or an amount")
    return watermark + amount if buy else watermark - amount


# --- one order against one bar -------------------------------------------------------------


def _stop_level(order: Order) -> float:
    if order.type is OrderType.TRAILING_STOP and order.stop_price is None:
        if order.watermark is None:
            raise ValueError(f"trailing stop {order.id} has neither a stop_price nor a watermark")
        return trail_level(
            order.watermark,
            buy=order.side is Side.BUY,
            percent=order.trail_percent,
            amount=order.trail_amount,
        )
    if order.stop_price is None:
        raise ValueError(f"order {order.id} ({order.type}) has no stop_price")
    return order.stop_price


def fill_price(order: Order, bar: Bar, costs: CostModel) -> float | None:
    """The price at which ``order`` fills inside ``bar``, or None if it does not fill there.

    ``bar`` is the first bar the order can trade in (the bar after the signal). Quantity and
    affordability are the ledger's business, not the fill model's.
    """
    buy = order.side is Side.BUY
    kind = order.type
    if kind is OrderType.MARKET:
        return float(costs.slipped(bar.open, buy=buy))
    if kind is OrderType.LIMIT:
        limit = float(order.limit_price)  # type: ignore[arg-type]  # validated by Order
        if limit_through(limit, bar.high, bar.low, buy=buy):
            return float(limit_fill_price(limit, bar.open, buy=buy))
        return None
    stop = _stop_level(order)
    if not stop_touched(stop, bar.high, bar.low, buy=buy):
        return None
    if kind in (OrderType.STOP, OrderType.TRAILING_STOP):
        return float(costs.slipped(stop_fill_price(stop, bar.open, buy=buy), buy=buy))
    # stop-limit
    limit = float(order.limit_price)  # type: ignore[arg-type]
    if stop_gapped(stop, bar.open, buy=buy):
        if limit_through(limit, bar.high, bar.low, buy=buy):
            return float(limit_fill_price(limit, bar.open, buy=buy))
        return None
    if (stop < limit) if buy else (stop > limit):
        return stop
    return None


def after_bar(order: Order, bar: Bar) -> Order:
    """The order as it rests after an unfilled ``bar``.

    A trailing stop's watermark follows the bar's high (sell) or low (buy) and its level never
    loosens; a stop-limit whose stop triggered becomes a plain limit order. Others are unchanged.
    """
    buy = order.side is Side.BUY
    if order.type is OrderType.TRAILING_STOP:
        seen = bar.low if buy else bar.high
        mark = (
            seen
            if order.watermark is None
            else (min(order.watermark, seen) if buy else max(order.watermark, seen))
        )
        level = trail_level(mark, buy=buy, percent=order.trail_percent, amount=order.trail_amount)
        if order.stop_price is not None:
            level = min(level, order.stop_price) if buy else max(level, order.stop_price)
        return replace(order, watermark=mark, stop_price=level)
    if order.type is OrderType.STOP_LIMIT and stop_touched(
        _stop_level(order), bar.high, bar.low, buy=buy
    ):
        return replace(order, type=OrderType.LIMIT, stop_price=None)
    return order


def exit_leg_first(
    stop_leg: Order, target_leg: Order, bar: Bar, costs: CostModel
) -> tuple[Order, float] | None:
    """Which leg of a stop-loss / take-profit pair fills in ``bar``, and at what price.

    A gap through either level at the open fills that leg at the open; otherwise, if the bar
    touches both, the stop is assumed to have come first.
    """
    stop_px = fill_price(stop_leg, bar, costs)
    target_px = fill_price(target_leg, bar, costs)
    if stop_px is None and target_px is None:
        return None
    if stop_px is not None and target_px is not None:
        stop = _stop_level(stop_leg)
        gapped_target = limit_gapped(
            float(target_leg.limit_price or 0.0), bar.open, buy=target_leg.side is Side.BUY
        )
        if gapped_target and not stop_gapped(stop, bar.open, buy=stop_leg.side is Side.BUY):
            return target_leg, target_px
        return stop_leg, stop_px
    if stop_px is not None:
        return stop_leg, stop_px
    if target_px is None:  # pragma: no cover - excluded above; narrows the type
        return None
    return target_leg, target_px
