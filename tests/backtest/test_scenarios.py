"""Hand-built bars with known outcomes: each test is a few bars and one rule of the fill model.

Bars are (open, high, low, close). A signal on bar i fills at bar i+1's open.
"""

from __future__ import annotations

import polars as pl
import pytest

from falcon.backtest.engine import run_backtest
from falcon.backtest.results import BacktestConfig
from falcon.domain.rules import Direction, Level, RiskRules, Sizing, SizingKind, StopKind
from falcon.errors import ValidationError

from .frames import bars


def pct(value: float) -> Level:
    return Level(kind=StopKind.PERCENT, value=value)


SHARES_10 = Sizing(kind=SizingKind.SHARES, value=10)
FLAT = (100.0, 100.0, 100.0, 100.0)


def one_trade(frame: pl.DataFrame, **risk: object) -> dict[str, object]:
    result = run_backtest(frame, risk=RiskRules(sizing=SHARES_10, **risk))  # type: ignore[arg-type]
    assert result.trades.height == 1, result.trades
    return result.trades.row(0, named=True)


def test_stop_hit_inside_a_later_bar() -> None:
    frame = bars([FLAT, FLAT, (99, 100, 94, 96), FLAT], entry_long=[0])
    trade = one_trade(frame, stop_loss=pct(0.05))
    assert (trade["exit_price"], trade["exit_reason"], trade["bars_held"]) == (95.0, "stop_loss", 1)
    assert trade["pnl"] == pytest.approx(-50.0)


def test_stop_checked_on_the_entry_bar_after_its_open() -> None:
    frame = bars([FLAT, (100, 101, 94, 97), FLAT], entry_long=[0])
    trade = one_trade(frame, stop_loss=pct(0.05))
    assert (trade["exit_price"], trade["bars_held"]) == (95.0, 0)


def test_target_hit_when_traded_through() -> None:
    frame = bars([FLAT, FLAT, (101, 111, 100, 108), FLAT], entry_long=[0])
    trade = one_trade(frame, take_profit=pct(0.10))
    assert (trade["exit_price"], trade["exit_reason"]) == (pytest.approx(110.0), "take_profit")


def test_target_only_touched_does_not_fill() -> None:
    # 100 * 1.10 is 110.00000000000001 in floats: use a target the high equals exactly.
    frame = bars([FLAT, FLAT, (101, 112.5, 100, 108), FLAT], entry_long=[0])
    result = run_backtest(frame, risk=RiskRules(sizing=SHARES_10, take_profit=pct(0.125)))
    assert result.trades.height == 0
    assert result.open_trades.height == 1


def test_gap_through_the_stop_fills_at_the_open() -> None:
    frame = bars([FLAT, FLAT, (90, 92, 88, 91), FLAT], entry_long=[0])
    trade = one_trade(frame, stop_loss=pct(0.05))
    assert (trade["exit_price"], trade["exit_reason"]) == (90.0, "stop_loss")


def test_gap_through_the_target_fills_at_the_open() -> None:
    frame = bars([FLAT, FLAT, (115, 116, 94, 100), FLAT], entry_long=[0])
    trade = one_trade(frame, stop_loss=pct(0.05), take_profit=pct(0.10))
    assert (trade["exit_price"], trade["exit_reason"]) == (115.0, "take_profit")


def test_bar_touching_both_stop_and_target_takes_the_stop() -> None:
    frame = bars([FLAT, FLAT, (100, 111, 94, 105), FLAT], entry_long=[0])
    trade = one_trade(frame, stop_loss=pct(0.05), take_profit=pct(0.10))
    assert (trade["exit_price"], trade["exit_reason"]) == (95.0, "stop_loss")


def test_trailing_stop_follows_earlier_highs() -> None:
    ohlc = [FLAT, FLAT, (101, 105, 100, 104), (104, 120, 103, 119), (118, 118, 107, 110), FLAT]
    trade = one_trade(bars(ohlc, entry_long=[0]), trailing_stop=pct(0.10))
    # Levels: 90 (from the entry open), 94.5 (high 105), 108 (high 120) -> hit in bar 4.
    assert (trade["exit_price"], trade["exit_reason"], trade["bars_held"]) == (
        pytest.approx(108.0),
        "trailing_stop",
        3,
    )


def test_trailing_stop_uses_only_earlier_bars_within_a_bar() -> None:
    # Bar 2 rises to 130 and falls to 100: a level from its own high (117) would hit, but we
    # cannot know the high came first, so the level from earlier bars (90) holds.
    ohlc = [FLAT, FLAT, (101, 130, 100, 125), (125, 126, 116, 120), FLAT]
    trade = one_trade(bars(ohlc, entry_long=[0]), trailing_stop=pct(0.10))
    assert (trade["exit_price"], trade["bars_held"]) == (pytest.approx(117.0), 2)


def test_fixed_stop_reported_while_above_the_trailing_level() -> None:
    ohlc = [FLAT, FLAT, (100, 101, 94, 96), FLAT]
    trade = one_trade(bars(ohlc, entry_long=[0]), stop_loss=pct(0.05), trailing_stop=pct(0.10))
    assert (trade["exit_price"], trade["exit_reason"]) == (95.0, "stop_loss")


def test_short_stop_and_target_mirror_the_long_ones() -> None:
    frame = bars([FLAT, FLAT, (101, 106, 99, 104), FLAT], entry_short=[0])
    result = run_backtest(
        frame,
        risk=RiskRules(
            direction=Direction.LONG_SHORT,
            sizing=SHARES_10,
            stop_loss=pct(0.05),
            take_profit=pct(0.10),
        ),
    )
    trade = result.trades.row(0, named=True)
    assert (trade["side"], trade["exit_price"], trade["exit_reason"]) == (
        "short",
        105.0,
        "stop_loss",
    )
    assert trade["pnl"] == pytest.approx(-50.0)


def test_max_bars_exits_at_the_next_open() -> None:
    ohlc = [
        FLAT,
        (100, 101, 99, 100),
        (101, 102, 100, 101),
        (102, 103, 101, 102),
        (103, 104, 102, 103),
    ]
    trade = one_trade(bars(ohlc, entry_long=[0]), max_bars=2)
    assert (trade["exit_price"], trade["exit_reason"], trade["bars_held"]) == (102.0, "max_bars", 2)


def test_signal_exit_fills_at_next_open_with_slippage_and_fees() -> None:
    ohlc = [FLAT, (100, 101, 99, 100), (110, 111, 109, 110), (120, 121, 119, 120)]
    frame = bars(ohlc, entry_long=[0], exit_long=[1])
    config = BacktestConfig(commission=0.001, commission_per_share=0.01, slippage_bps=10)
    result = run_backtest(frame, risk=RiskRules(sizing=SHARES_10), config=config)
    trade = result.trades.row(0, named=True)
    assert trade["entry_price"] == pytest.approx(100.1)
    assert trade["exit_price"] == pytest.approx(110 * 0.999)
    fees = 10 * 100.1 * 0.001 + 0.1 + 10 * 109.89 * 0.001 + 0.1
    assert trade["fees"] == pytest.approx(fees)
    assert trade["pnl"] == pytest.approx(10 * (109.89 - 100.1) - fees)
    assert result.final_equity == pytest.approx(10_000 + trade["pnl"])


def test_all_in_buys_what_cash_pays_for_commission_included() -> None:
    frame = bars([FLAT, (100, 101, 99, 100), FLAT], entry_long=[0])
    result = run_backtest(frame, risk=RiskRules(), config=BacktestConfig(commission=0.01))
    assert result.open_trades["qty"].item() == 99  # 10_000 // 101


def test_order_larger_than_cash_is_cut_to_what_cash_allows() -> None:
    frame = bars([FLAT, FLAT, FLAT], entry_long=[0])
    result = run_backtest(frame, risk=RiskRules(sizing=Sizing(kind=SizingKind.SHARES, value=500)))
    assert result.open_trades["qty"].item() == 100
    assert result.equity["cash"][-1] == pytest.approx(0.0)


def test_entry_that_cannot_buy_one_share_is_rejected() -> None:
    pricey = (20_000.0, 20_000.0, 20_000.0, 20_000.0)
    frame = bars([pricey, pricey, pricey], entry_long=[0])
    result = run_backtest(frame, risk=RiskRules())
    assert result.trades.height == result.open_trades.height == 0
    assert result.rejections.select("ticker", "reason").rows() == [("T", "insufficient_cash")]
    assert result.final_equity == 10_000


def test_position_open_at_the_end_is_marked_not_counted() -> None:
    frame = bars([FLAT, (100, 101, 99, 100), (100, 121, 99, 120)], entry_long=[0])
    result = run_backtest(frame, risk=RiskRules(sizing=SHARES_10))
    assert result.metrics["trades"] == 0
    assert result.metrics["win_rate_pct"] is None
    assert result.final_equity == pytest.approx(10_000 + 10 * 20)
    row = result.open_trades.row(0, named=True)
    assert (row["exit_ts"], row["exit_price"], row["pnl"]) == (None, None, pytest.approx(200.0))


def test_exit_signal_on_the_last_bar_never_fills() -> None:
    frame = bars([FLAT, FLAT, FLAT], entry_long=[0], exit_long=[2])
    result = run_backtest(frame, risk=RiskRules(sizing=SHARES_10))
    assert result.trades.height == 0 and result.open_trades.height == 1


def test_long_only_never_sells_what_it_does_not_hold() -> None:
    frame = bars([FLAT] * 6, exit_long=[0, 2], entry_short=[1, 3], exit_short=[4])
    result = run_backtest(frame, risk=RiskRules())
    assert result.trades.height == result.open_trades.height == 0
    assert (result.equity["cash"] == 10_000).all()


def test_entry_and_exit_on_the_same_bar_do_nothing_when_flat() -> None:
    frame = bars([FLAT] * 4, entry_long=[0], exit_long=[0])
    result = run_backtest(frame, risk=RiskRules())
    assert result.trades.height == result.open_trades.height == 0


def test_long_short_entry_short_reverses_a_long_at_one_open() -> None:
    ohlc = [FLAT, (100, 101, 99, 100), (110, 111, 109, 110), (105, 106, 104, 105)]
    frame = bars(ohlc, entry_long=[0], entry_short=[1])
    result = run_backtest(frame, risk=RiskRules(direction=Direction.LONG_SHORT, sizing=SHARES_10))
    assert result.trades.select("side", "entry_price", "exit_price").rows() == [
        ("long", 100.0, 110.0)
    ]
    assert result.open_trades.select("side", "entry_price").rows() == [("short", 110.0)]
    assert result.final_equity == pytest.approx(10_000 + 100 + 50)


def test_max_positions_takes_tickers_in_alphabetical_order() -> None:
    frames = [bars([FLAT, FLAT, FLAT], ticker=t, entry_long=[0]) for t in ("C", "A", "B")]
    result = run_backtest(
        pl.concat(frames),
        risk=RiskRules(max_positions=2, sizing=SHARES_10),
    )
    assert sorted(result.open_trades["ticker"].to_list()) == ["A", "B"]
    assert result.rejections.select("ticker", "reason").rows() == [("C", "risk_limit")]


def test_exit_frees_cash_for_an_entry_at_the_same_open() -> None:
    a = bars([FLAT, FLAT, (110, 110, 110, 110), FLAT], ticker="A", entry_long=[0], exit_long=[1])
    b = bars([FLAT, FLAT, (100, 100, 100, 100), FLAT], ticker="B", entry_long=[1])
    result = run_backtest(pl.concat([a, b]), risk=RiskRules())
    assert result.trades["qty"].to_list() == [100]
    assert result.open_trades.select("ticker", "qty").rows() == [("B", 110)]


def test_equity_carries_the_last_close_over_a_missing_bar() -> None:
    a = bars([FLAT, FLAT, (100, 130, 100, 130), FLAT], ticker="A", days=[0, 1, 2, 4])
    b = bars(
        [FLAT, (100, 100, 100, 100), (100, 120, 100, 120), (120, 120, 110, 110)],
        ticker="B",
        entry_long=[0],
        days=[0, 1, 3, 4],
    )
    result = run_backtest(pl.concat([a, b]), risk=RiskRules(sizing=SHARES_10))
    # B is held from day 1; it has no bar on day 2: its value stays at the day-1 close.
    assert result.equity["equity"].to_list() == pytest.approx(
        [10_000, 10_000, 10_000, 10_200, 10_100]
    )


def test_atr_stop_uses_the_signal_bar_atr_and_rejects_without_one() -> None:
    ohlc = [FLAT, FLAT, FLAT, (100, 100, 93, 95), FLAT]
    frame = bars(ohlc, entry_long=[0, 2], exit_long=[1], atr=[None, 2.0, 3.0, 3.0, 3.0])
    atr_stop = Level(kind=StopKind.ATR, value=2.0)
    result = run_backtest(frame, risk=RiskRules(sizing=SHARES_10, stop_loss=atr_stop))
    assert result.rejections["reason"].to_list() == ["risk_limit"]
    assert result.trades.select("exit_price", "exit_reason").rows() == [(94.0, "stop_loss")]


def test_risk_sizing_risks_the_fraction_of_equity_to_the_stop() -> None:
    frame = bars([FLAT, FLAT, FLAT], entry_long=[0])
    risk = RiskRules(stop_loss=pct(0.05), sizing=Sizing(kind=SizingKind.RISK, value=0.01))
    result = run_backtest(frame, risk=risk)
    assert result.open_trades["qty"].item() == 20  # 10_000 * 1 % / (100 * 5 %)


def test_fraction_sizing_uses_equity() -> None:
    frame = bars([FLAT, FLAT, FLAT], entry_long=[0])
    risk = RiskRules(sizing=Sizing(kind=SizingKind.FRACTION, value=0.25))
    assert run_backtest(frame, risk=risk).open_trades["qty"].item() == 25


def test_unsorted_input_is_sorted_and_bad_input_rejected() -> None:
    frame = bars([FLAT, (100, 101, 99, 100), (110, 111, 109, 110)], entry_long=[0], exit_long=[1])
    shuffled = frame.reverse()
    assert run_backtest(shuffled, risk=RiskRules()).trades.height == 1
    with pytest.raises(ValidationError, match="lacks column"):
        run_backtest(frame.drop("exit_short"), risk=RiskRules())
    with pytest.raises(ValidationError, match="nulls"):
        run_backtest(
            frame.with_columns(pl.lit(None, dtype=pl.Boolean).alias("exit_long")), risk=RiskRules()
        )
    with pytest.raises(ValidationError, match="duplicate"):
        run_backtest(pl.concat([frame, frame]), risk=RiskRules())
    with pytest.raises(ValidationError, match="atr"):
        run_backtest(frame, risk=RiskRules(stop_loss=Level(kind=StopKind.ATR, value=2)))
    with pytest.raises(ValidationError, match=r"low\.\.high"):
        run_backtest(frame.with_columns(pl.col("high") * 0.5), risk=RiskRules())


def test_lazy_frame_is_accepted_and_result_is_read_only() -> None:
    frame = bars([FLAT, FLAT, FLAT], entry_long=[0])
    result = run_backtest(frame.lazy(), risk=RiskRules())
    with pytest.raises(TypeError):
        result.metrics["trades"] = 3  # type: ignore[index]
    with pytest.raises(AttributeError):
        result.trades = pl.DataFrame()  # type: ignore[misc]


def test_atr_trailing_stop_trails_by_a_fixed_amount() -> None:
    ohlc = [FLAT, FLAT, (101, 120, 100, 119), (118, 118, 109, 112), FLAT]
    frame = bars(ohlc, entry_long=[0], atr=[5.0, 9.0, 9.0, 9.0, 9.0])
    trail = Level(kind=StopKind.ATR, value=2.0)  # 2 x ATR(signal bar) = 10 behind the high
    trade = one_trade(frame, trailing_stop=trail)
    assert (trade["exit_price"], trade["exit_reason"]) == (110.0, "trailing_stop")
