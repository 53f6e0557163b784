"""Compiling rules to signals: known crossing bars, ticker boundaries, ATR, sessions, look-ahead."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from falcon.errors import DataError
from falcon.strategy import builtin_names, builtin_spec, compile_signals, load_spec, lookahead_check

SIGNALS = ["entry_long", "exit_long", "entry_short", "exit_short"]


def _bars(closes: dict[str, list[float]], start: datetime | None = None,
          step: timedelta = timedelta(days=1)) -> pl.DataFrame:
    start = start or datetime(2024, 1, 2, 5, tzinfo=UTC)
    rows: list[dict[str, Any]] = []
    for ticker, series in closes.items():
        for i, c in enumerate(series):
            rows.append({"ticker": ticker, "ts": start + i * step, "open": c, "high": c + 1,
                         "low": c - 1, "close": c, "volume": 1000.0 + i})
    return pl.DataFrame(rows).with_columns(pl.col("ts").dt.cast_time_unit("us"))


def _spec(**doc: Any) -> Any:
    return load_spec({"name": "t", **doc})


def _true_rows(frame: pl.DataFrame, column: str) -> list[tuple[str, int]]:
    indexed = frame.with_columns(i=pl.int_range(pl.len()).over("ticker"))
    return [(r["ticker"], r["i"]) for r in indexed.filter(pl.col(column)).iter_rows(named=True)]


def test_crossing_bars_are_exact() -> None:
    closes = [5, 4, 3, 2, 3, 4, 5, 6, 5, 4, 3, 2]
    # sma(close, 2) vs sma(close, 4) on this V-shape: the fast average rises above the slow one
    # on bar 5, falls back below it on bar 9.
    spec = _spec(entry="sma(close, 2) crosses_above sma(close, 4)",
                 exit="sma(close, 2) crosses_below sma(close, 4)")
    out = compile_signals(spec, _bars({"A": closes})).collect()
    assert _true_rows(out, "entry_long") == [("A", 5)]
    assert _true_rows(out, "exit_long") == [("A", 9)]
    assert out.select(pl.col(SIGNALS).null_count().sum()).row(0) == (0, 0, 0, 0)
    assert out.columns == ["ticker", "ts", "open", "high", "low", "close", "volume", *SIGNALS]


def test_shifts_and_crosses_do_not_leak_across_tickers() -> None:
    # A ends high, B starts low: a global shift would see a cross on B's first bars.
    frame = _bars({"A": [10, 11, 12, 50, 60], "B": [1, 2, 3, 2, 1]})
    spec = _spec(entry="close crosses_below 20", exit="close < close[1]")
    out = compile_signals(spec, frame).collect()
    assert _true_rows(out, "entry_long") == []
    assert _true_rows(out, "exit_long") == [("B", 3), ("B", 4)]


def test_breakout_uses_previous_bars_and_arithmetic() -> None:
    spec = _spec(entry="close > highest(close, 3)[1] and volume >= 0.5 * sma(volume, 2)",
                 exit={"left": "close", "op": "<", "right": "lowest(close, 3)[1]"})
    out = compile_signals(spec, _bars({"A": [1, 2, 3, 3, 5, 4, 1]})).collect()
    assert _true_rows(out, "entry_long") == [("A", 4)]
    assert _true_rows(out, "exit_long") == [("A", 6)]


def test_division_by_zero_is_no_signal() -> None:
    out = compile_signals(_spec(entry="close / (close - close) > 1", exit="not (close / 0 < 1)"),
                          _bars({"A": [1, 2, 3]})).collect()
    assert not out["entry_long"].any()
    assert not out["exit_long"].any()


def test_long_short_and_atr_column() -> None:
    spec = _spec(direction="long_short", entry="close > 3", exit="close < 2",
                 short_entry="close < 2", short_exit="close > 3",
                 stop_loss={"atr": 2, "atr_period": 3})
    out = compile_signals(spec, _bars({"A": [1, 2, 3, 4, 5]})).collect()
    assert out["entry_long"].to_list() == [False, False, False, True, True]
    assert out["entry_short"].to_list() == [True, False, False, False, False]
    assert out["atr"].null_count() == 3 and out["atr"][3] == pytest.approx(2.0)
    long_only = _spec(entry="close > 3", short_entry="close < 2")
    assert not compile_signals(long_only, _bars({"A": [1, 2]})).collect()["entry_short"].any()


def test_parameters_reach_the_rules() -> None:
    doc = {"params": {"level": {"default": 2}}, "entry": "close > $level"}
    frame = _bars({"A": [1, 2, 3, 4]})
    assert compile_signals(_spec(**doc), frame).collect()["entry_long"].sum() == 2
    spec3 = load_spec({"name": "t", **doc}, {"level": 3})
    assert compile_signals(spec3, frame).collect()["entry_long"].sum() == 1


def test_missing_columns() -> None:
    with pytest.raises(DataError, match="volume"):
        compile_signals(_spec(entry="close > 1"), _bars({"A": [1]}).drop("volume"))


def _minute_bars() -> pl.DataFrame:
    # Two sessions of 1-minute bars from 09:00 to 16:29 New York (EST: UTC-5).
    rows: list[dict[str, Any]] = []
    for day in (8, 9):
        start = datetime(2024, 1, day, 14, 0, tzinfo=UTC)
        for i in range(450):
            mso = i - 30
            price = 100.0 + (0.0 if mso < 30 else (mso - 29) * 0.01)
            high = price + (2 if 0 <= mso < 30 and mso == 10 else 0.05)
            rows.append({"ticker": "X", "ts": start + timedelta(minutes=i), "open": price,
                         "high": high, "low": price - 0.05, "close": price, "volume": 100.0})
    return pl.DataFrame(rows).with_columns(pl.col("ts").dt.cast_time_unit("us"))


def test_opening_range_is_session_aware_and_causal() -> None:
    bars = _minute_bars()
    spec = _spec(timeframe="minute", entry="close > opening_range_high(30) - 2",
                 exit="minutes_since_open() == 0")
    out = compile_signals(spec, bars).collect()
    local = out.with_columns(t=pl.col("ts").dt.convert_time_zone("America/New_York").dt.time())
    first_entries = local.filter(pl.col("entry_long")).group_by(
        pl.col("ts").dt.date()).agg(pl.col("t").min())["t"].to_list()
    # The range (09:30-09:59, high 102) is only known from the 10:00 bar on.
    assert [str(t) for t in first_entries] == ["10:00:00", "10:00:00"]
    assert [str(t) for t in local.filter(pl.col("exit_long"))["t"]] == ["09:30:00", "09:30:00"]
    assert lookahead_check(spec, bars, cut_points=15) == []


def _daily_real() -> pl.DataFrame:
    spec = importlib.util.find_spec("backtesting")
    assert spec is not None and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "test" / "GOOG.csv"
    goog = pl.read_csv(path, try_parse_dates=True).rename(str.lower).rename({"": "ts"})
    goog = goog.with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    half = goog.height // 2
    a = goog.head(half).with_columns(ticker=pl.lit("AAA"))
    b = goog.tail(goog.height - half).with_columns(ticker=pl.lit("BBB"))
    return pl.concat([a, b]).select("ticker", "ts", "open", "high", "low", "close", "volume")


@pytest.mark.parametrize("name", [n for n in builtin_names() if n != "opening_range_breakout"])
def test_builtins_on_real_data_have_no_lookahead(name: str) -> None:
    bars = _daily_real()
    spec = builtin_spec(name, direction="long_short") if name != "momentum_breakout" \
        else builtin_spec(name)
    out = compile_signals(spec, bars).collect()
    assert out.height == bars.height
    assert out["entry_long"].sum() > 0
    assert lookahead_check(spec, bars, cut_points=8) == []


def test_opening_range_breakout_builtin_on_minutes() -> None:
    bars = _minute_bars()
    spec = builtin_spec("opening_range_breakout")
    out = compile_signals(spec, bars).collect()
    assert out["entry_long"].sum() == 2  # one breakout per session
    assert lookahead_check(spec, bars, cut_points=10) == []


def test_lookahead_checker_catches_a_peeking_function() -> None:
    bars = _daily_real().head(300)

    def peeking(frame: pl.DataFrame) -> pl.DataFrame:
        nxt = pl.col("close").shift(-1).over("ticker")
        return frame.with_columns(entry_long=(nxt > pl.col("close")).fill_null(False),
                                  exit_long=pl.lit(False), entry_short=pl.lit(False),
                                  exit_short=pl.lit(False))

    found = lookahead_check(peeking, bars, cut_points=10)
    assert found
    assert {f["column"] for f in found} == {"entry_long"}
    assert all(f["full"] != f["truncated"] for f in found)
