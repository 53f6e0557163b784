"""The fill model, one order against one bar."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from falcon.domain.market import Bar
from falcon.domain.orders import Order, OrderType, Side
from falcon.execution.fills import CostModel, after_bar, exit_leg_first, fill_price, stop_touched

TS = datetime(2024, 1, 2)
FREE = CostModel()


def bar(o: float, h: float, low: float, c: float) -> Bar:
    return Bar(ticker="T", ts=TS, open=o, high=h, low=low, close=c)


def order(side: Side, kind: OrderType = OrderType.MARKET, **kw: object) -> Order:
    return Order(id="o1", ticker="T", side=side, qty=10, type=kind, **kw)  # type: ignore[arg-type]


def test_market_fills_at_the_open_with_slippage_against_the_trader() -> None:
    costs = CostModel(slippage_bps=25)
    assert fill_price(order(Side.BUY), bar(100, 101, 99, 100), costs) == pytest.approx(100.25)
    assert fill_price(order(Side.SELL), bar(100, 101, 99, 100), costs) == pytest.approx(99.75)


@pytest.mark.parametrize(
    ("side", "limit", "ohlc", "expected"),
    [
        (Side.BUY, 95.0, (100, 101, 95, 100), None),  # only touched
        (Side.BUY, 95.0, (100, 101, 94.99, 100), 95.0),  # through
        (Side.BUY, 95.0, (94, 96, 93, 95), 94.0),  # opened below the limit: the open
        (Side.SELL, 105.0, (100, 105, 99, 100), None),
        (Side.SELL, 105.0, (100, 105.5, 99, 100), 105.0),
        (Side.SELL, 105.0, (107, 108, 104, 106), 107.0),
    ],
)
def test_limit_fills_only_through_the_limit(
    side: Side, limit: float, ohlc: tuple[float, float, float, float], expected: float | None
) -> None:
    got = fill_price(
        order(side, OrderType.LIMIT, limit_price=limit), bar(*ohlc), CostModel(slippage_bps=50)
    )
    assert got == expected  # no slippage on limit fills


@pytest.mark.parametrize(
    ("side", "stop", "ohlc", "expected"),
    [
        (Side.SELL, 95.0, (100, 101, 95, 99), 95.0),  # touched is enough for a stop
        (Side.SELL, 95.0, (100, 101, 95.01, 99), None),
        (Side.SELL, 95.0, (90, 92, 88, 91), 90.0),  # gap: the open
        (Side.BUY, 105.0, (100, 105, 99, 104), 105.0),
        (Side.BUY, 105.0, (110, 112, 109, 111), 110.0),
    ],
)
def test_stop_triggers_on_touch_and_fills_at_open_on_a_gap(
    side: Side, stop: float, ohlc: tuple[float, float, float, float], expected: float | None
) -> None:
    assert fill_price(order(side, OrderType.STOP, stop_price=stop), bar(*ohlc), FREE) == expected


def test_stop_fill_gets_slippage() -> None:
    got = fill_price(
        order(Side.SELL, OrderType.STOP, stop_price=95.0),
        bar(100, 101, 94, 99),
        CostModel(slippage_bps=100),
    )
    assert got == pytest.approx(95 * 0.99)


def test_stop_limit() -> None:
    buy = order(Side.BUY, OrderType.STOP_LIMIT, stop_price=105.0, limit_price=106.0)
    assert fill_price(buy, bar(100, 104, 99, 103), FREE) is None  # not triggered
    assert fill_price(buy, bar(100, 107, 99, 106), FREE) == 105.0  # triggered below its limit
    assert fill_price(buy, bar(105.5, 107, 105.2, 106), FREE) == 105.5  # gap, open under limit
    assert fill_price(buy, bar(108, 109, 107, 108), FREE) is None  # gap above the limit
    tight = order(Side.BUY, OrderType.STOP_LIMIT, stop_price=105.0, limit_price=105.0)
    b = bar(100, 107, 99, 106)
    assert fill_price(tight, b, FREE) is None
    rested = after_bar(tight, b)
    assert (rested.type, rested.limit_price, rested.stop_price) == (OrderType.LIMIT, 105.0, None)


def test_trailing_stop_moves_with_the_high_and_never_loosens() -> None:
    trail = order(Side.SELL, OrderType.TRAILING_STOP, trail_percent=0.1, watermark=100.0)
    assert fill_price(trail, bar(100, 120, 91, 118), FREE) is None  # level 90 inside this bar
    trail = after_bar(trail, bar(100, 120, 91, 118))
    assert (trail.watermark, trail.stop_price) == (120.0, pytest.approx(108.0))
    trail = after_bar(trail, bar(115, 116, 110, 112))
    assert trail.stop_price == pytest.approx(108.0)
    assert fill_price(trail, bar(112, 113, 107, 108), FREE) == pytest.approx(108.0)
    by_amount = order(Side.BUY, OrderType.TRAILING_STOP, trail_amount=2.0, watermark=50.0)
    assert fill_price(by_amount, bar(51, 52.5, 50, 52), FREE) == 52.0


def test_bar_touching_both_legs_fills_the_stop_unless_the_target_gapped() -> None:
    stop = order(Side.SELL, OrderType.STOP, stop_price=95.0)
    target = Order(
        id="o2", ticker="T", side=Side.SELL, qty=10, type=OrderType.LIMIT, limit_price=110.0
    )
    leg, price = exit_leg_first(stop, target, bar(100, 111, 94, 105), FREE)  # type: ignore[misc]
    assert (leg.id, price) == ("o1", 95.0)
    leg, price = exit_leg_first(stop, target, bar(112, 113, 94, 100), FREE)  # type: ignore[misc]
    assert (leg.id, price) == ("o2", 112.0)
    assert exit_leg_first(stop, target, bar(100, 101, 99, 100), FREE) is None


def test_predicates_work_on_arrays_as_on_floats() -> None:
    highs, lows = np.array([101.0, 99.0]), np.array([95.0, 96.0])
    assert stop_touched(95.0, highs, lows, buy=False).tolist() == [True, False]
    assert stop_touched(95.0, 101.0, 95.0, buy=False)


def test_orders_are_validated() -> None:
    with pytest.raises(ValueError, match="qty"):
        Order(id="x", ticker="T", side=Side.BUY, qty=0)
    with pytest.raises(ValueError, match="limit_price"):
        order(Side.BUY, OrderType.LIMIT)
    with pytest.raises(ValueError, match="trail"):
        order(Side.SELL, OrderType.TRAILING_STOP)
    with pytest.raises(ValueError, match="commission"):
        CostModel(commission=0.5)
    with pytest.raises(ValueError, match=r"low\.\.high"):
        bar(100, 99, 98, 99)
