"""Indicator conditions, evaluated incrementally: the compiler's values on the full history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from falcon.alerts.indicator import Windows, compile_condition, evaluate
from falcon.domain.market import Bar
from falcon.strategy import compile_expressions
from falcon.strategy.compile import _session_columns

START = datetime(2024, 3, 5, 14, 20, tzinfo=UTC)  # 09:20 New York: pre-market, then the session


def _bars(seed: int, tickers: list[str], minutes: int) -> list[list[Bar]]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.standard_normal((minutes, len(tickers))) * 0.004, axis=0))
    out = []
    for m in range(minutes):
        batch = []
        for j, t in enumerate(tickers):
            if m > 0 and rng.random() < 0.15:
                continue  # a ticker without a bar this minute
            c = float(close[m, j])
            batch.append(Bar(ticker=t, ts=START + timedelta(minutes=m), open=c * 0.999,
                             high=c * 1.002, low=c * 0.997, close=c,
                             volume=float(rng.integers(100, 1000))))
        out.append(batch)
    return out


def _reference(batches: list[list[Bar]], text: str) -> dict[tuple[str, datetime], bool]:
    rows = [(b.ticker, b.ts, b.open, b.high, b.low, b.close, b.volume)
            for batch in batches for b in batch]
    frame = pl.DataFrame(rows, schema=["ticker", "ts", "open", "high", "low", "close", "volume"],
                         orient="row").sort("ticker", "ts")
    frame = frame.with_columns(_session_columns(frame.schema["ts"]))
    out = compile_expressions(frame, {"c": text}, timeframe="minute").collect()
    return {(t, ts): bool(v) for t, ts, v in out.select("ticker", "ts", pl.col("c").fill_null(
        False)).iter_rows()}


@pytest.mark.parametrize("text", [
    "ema(close, 12) > ema(close, 30)",  # recursive: a window would only approximate it
    "rsi(close, 14) < 45",
    "close crosses_above vwap()",
    "close > opening_range_high(5) and adx(5) > 20",
    "macd(close, 5, 13, 4).hist > 0",
])
def test_conditions_equal_the_compiler_on_the_full_history(text: str) -> None:
    tickers = ["AAA", "BBB", "CCC"]
    batches = _bars(1, tickers, 150)
    cond = compile_condition(text)
    windows = Windows()
    for t in tickers:
        windows.want(t, cond.window)
    want = _reference(batches, cond.text)
    seen = 0
    for batch in batches:
        for b in batch:
            windows.push(b)
        values = evaluate(cond, windows, [b.ticker for b in batch])
        for b in batch:
            if b.ticker in values:
                assert values[b.ticker] == want[(b.ticker, b.ts)], (text, b.ticker, b.ts)
                seen += 1
    assert seen > 200
    assert any(want.values()) and not all(want.values())


def test_a_condition_evaluated_late_catches_up_in_order() -> None:
    """Bars pushed while a condition was not evaluated are fed to it, oldest first."""
    batches = _bars(2, ["AAA", "BBB"], 120)
    cond = compile_condition("ema(close, 10) > sma(close, 20)")
    windows = Windows()
    for t in ("AAA", "BBB"):
        windows.want(t, cond.window)
    want = _reference(batches, cond.text)
    for i, batch in enumerate(batches):
        for b in batch:
            windows.push(b)
        if i % 7 == 6:  # only every seventh minute
            values = evaluate(cond, windows, ["AAA", "BBB"])
            for t, v in values.items():
                last = max(b.ts for bt in batches[: i + 1] for b in bt if b.ticker == t)
                assert v == want[(t, last)]


def test_not_enough_history_leaves_a_ticker_out() -> None:
    cond = compile_condition("sma(close, 5) > 0")
    windows = Windows()
    windows.want("AAA", cond.window)
    results = []
    for m in range(6):
        windows.push(Bar(ticker="AAA", ts=START + timedelta(minutes=m), open=10.0, high=10.0,
                         low=10.0, close=10.0, volume=1.0))
        results.append(evaluate(cond, windows, ["AAA"]))
    assert results == [{}, {}, {}, {}, {"AAA": True}, {"AAA": True}]
    assert evaluate(cond, windows, ["AAA"]) == {"AAA": True}  # no new bar: the last value
    assert evaluate(cond, windows, ["ZZZ"]) == {}  # untracked
