"""Comparisons at 12 significant digits: the same decision in both engines where the exact
values are equal (a flat price against its own average), and the rounding itself."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from falcon.strategy import compile_signals, load_spec
from falcon.strategy.snap import CANCEL, SIGNIFICANT, snap, subtract

from .test_stream import _signals_stream

FINITE = st.floats(allow_nan=False, allow_infinity=False)


@given(x=st.one_of(FINITE, st.floats(1e-12, 1e34), st.floats(0.01, 10_000)))
def test_snap_rounds_to_twelve_significant_digits(x: float) -> None:
    got = float(snap(np.array([x]))[0])
    if x == 0 or not 1e-11 <= abs(x) < 1e33:
        assert got == x  # nothing to round (zero), or far beyond any price or indicator
        return
    assert math.copysign(1, got) == math.copysign(1, x)
    assert abs(got - x) <= 5.000001 * 10.0 ** (math.floor(math.log10(abs(x))) - SIGNIFICANT + 1)
    assert float(snap(np.array([got]))[0]) == got  # idempotent
    assert float(f"{got:.{SIGNIFICANT}g}") == got  # a 12-digit decimal's nearest double


@given(x=st.one_of(FINITE, st.floats(1e-12, 1e34)), y=st.one_of(FINITE, st.floats(1e-12, 1e34)))
def test_snap_keeps_order(x: float, y: float) -> None:
    a, b = snap(np.array([min(x, y), max(x, y)]))
    assert a <= b


def test_snap_passes_nan_and_infinities() -> None:
    got = snap(np.array([np.nan, np.inf, -np.inf, 0.0]))
    assert np.isnan(got[0]) and got[1] == np.inf and got[2] == -np.inf and got[3] == 0.0


def test_a_difference_within_the_last_digits_of_its_operands_is_zero() -> None:
    a = np.array([10.01, 10.01, 0.3, 100.0, 100.0, 5.0, np.nan, 1e-300])
    b = np.array([10.009999999999998, 10.0, 0.1 + 0.2, 100.0 * (1 + 0.5 * CANCEL),
                  100.0 * (1 + 2 * CANCEL), -5.0, 1.0, 0.0])
    got = subtract(a, b)
    assert got[:3].tolist() == [0.0, pytest.approx(0.01), 0.0]
    assert got[3] == 0.0 and got[4] != 0.0  # within CANCEL of 100: zero; twice it: kept
    assert got[5] == 10.0 and np.isnan(got[6]) and got[7] == 1e-300


LEVELS = [10.01, 0.37, 123.45, 1.1, 7.77, 33.33, 0.1, 2.675, 19.99, 45.67, 1234.5678, 0.0123]
START = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)


def _flat_stretches(n: int = 160) -> pl.DataFrame:
    """Per ticker: 40 moving minutes, 40 at one price, and again."""
    rows: list[dict[str, Any]] = []
    for t, level in enumerate(LEVELS):
        rng = np.random.default_rng(t)
        for i in range(n):
            c = level if (i // 40) % 2 else level * (1 + 0.01 * rng.standard_normal())
            rows.append({"ticker": f"T{t:02d}", "ts": START + timedelta(minutes=i), "open": c,
                         "high": c, "low": c, "close": c, "volume": 100.0})
    return pl.DataFrame(rows).sort("ticker", "ts")


@pytest.mark.parametrize("fast,slow", [(2, 7), (3, 8), (5, 20), (10, 30)])
def test_a_flat_price_neither_crosses_nor_beats_its_own_average_in_either_engine(
    fast: int, slow: int,
) -> None:
    frame = _flat_stretches()
    rules = {
        "entry": f"sma(close, {fast}) crosses_above sma(close, {slow})",
        "exit": f"close > sma(close, {slow})",
        "short_entry": f"close >= sma(close, {slow}) and close <= sma(close, {fast})",
        "short_exit": f"sma(close, {fast}) != sma(close, {slow}) or "
                      f"close - sma(close, {slow}) > 0 or sma(close, {fast}) - close > 0",
    }
    spec = load_spec({"name": "ties", "timeframe": "minute", "direction": "long_short",
                      **rules})
    want = compile_signals(spec, frame).collect()
    got = _signals_stream(spec, frame)
    for column in ("entry_long", "exit_long", "entry_short", "exit_short"):
        assert got[column].to_list() == want[column].to_list(), column
    # Once a window lies inside a flat stretch, its average is the price: exactly.
    pos = want.with_columns(pl.int_range(pl.len()).over("ticker").alias("i"))
    flat = pos.filter(((pl.col("i") // 40) % 2 == 1) & (pl.col("i") % 40 >= slow))
    assert flat.height > 0
    assert not flat["entry_long"].any() and not flat["exit_long"].any()
    assert flat["entry_short"].all() and not flat["exit_short"].any()
