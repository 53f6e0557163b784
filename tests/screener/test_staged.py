"""Staged compilation: indicators over the whole history, rules on each ticker's last rows only."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from falcon.strategy.compile import compile_expressions, compile_staged

from . import synth

D = date(2024, 5, 1)
#: Shifts outside calls, a nested shift, crossings (one bar back), a shifted call, a constant.
EXPRS = {
    "breakout": "close > highest(close, 20)[1]",
    "roc": "(close / close[20] - 1) * 100",
    "nested": "(close[2] - sma(close, 5))[3]",
    "cross": "ema(close, 5) crosses_above sma(close, 20)",
    "cross_shifted": "(rsi(close, 14) crosses_below 50)[2]",
    "rsi_turn": "rsi(close, 14) - rsi(close, 14)[1]",
    "band": "close <= bollinger(close, 20, 2).lower * 1.02",
    "const": "4",
}
#: Rows before a row that each expression reads outside its calls.
REACH = {"breakout": 1, "roc": 20, "nested": 5, "cross": 1, "cross_shifted": 3, "rsi_turn": 1,
         "band": 0, "const": 0}


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    # Random walks of different lengths (a screen's tickers start on different days).
    frame = synth.universe(D, n_days=120, n_random=6)
    return frame.select("ticker", "date", "open", "high", "low", "close", "volume")


def _tail(frame: pl.LazyFrame, rows: int) -> pl.LazyFrame:
    return frame.filter(pl.int_range(pl.len()).reverse().over("ticker") < rows)


def _last(frame: pl.LazyFrame) -> pl.DataFrame:
    return frame.filter(pl.col("date") == D).sort("ticker").collect()


def test_two_steps_chained_equal_compile_expressions(bars: pl.DataFrame) -> None:
    staged = compile_staged(EXPRS)
    whole = compile_expressions(bars, EXPRS).collect()
    assert_frame_equal(staged.with_finals(staged.with_calls(bars)).collect(), whole)
    # The temporaries are gone; only the bars and the named columns remain.
    assert whole.columns == [*bars.columns, *EXPRS]


@pytest.mark.parametrize("name", sorted(EXPRS))
def test_reach_is_what_the_rules_read(name: str) -> None:
    assert compile_staged({name: EXPRS[name]}).reach == REACH[name]


def test_rules_on_the_last_rows_give_the_last_values(bars: pl.DataFrame) -> None:
    staged = compile_staged(EXPRS)
    assert staged.reach == max(REACH.values())
    whole = _last(compile_expressions(bars, EXPRS))
    calls = staged.with_calls(bars)
    short = _last(staged.with_finals(_tail(calls, staged.reach + 1)))
    assert_frame_equal(short, whole)
    assert whole["roc"].null_count() == 0  # the values compared are real numbers
    # One row fewer and the longest shift falls off the kept rows: the reach is needed.
    fewer = _last(staged.with_finals(_tail(calls, staged.reach)))
    assert fewer["roc"].null_count() == fewer.height
    assert_frame_equal(fewer.drop("roc"), whole.drop("roc"))
