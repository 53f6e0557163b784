"""The streaming evaluator against the compiler: same values, bar by bar, on the full history.

Bars are random walks (numpy, seeded by hypothesis) for a few tickers that start at different
minutes and skip some, over two sessions of minute bars (pre-market included), so that shifts,
warm-ups, ticker boundaries and session resets are all exercised. The reference is
``compile_signals`` / ``compile_expressions`` on the whole history at once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from falcon.strategy import (
    BatchSignals,
    ExpressionStream,
    SignalStream,
    builtin_document,
    builtin_names,
    compile_expressions,
    compile_signals,
    load_spec,
)
from falcon.strategy.compile import _session_columns

FIELDS = ("open", "high", "low", "close", "volume")
SIGNALS = ("entry_long", "exit_long", "entry_short", "exit_short")
# 08:50..10:30 New York time on two consecutive sessions (EST: UTC-5).
TIMELINE = [datetime(2024, 3, d, 13, 50, tzinfo=UTC) + timedelta(minutes=i)
            for d in (4, 5) for i in range(100)]


def _frame(seed: int, tickers: int, gaps: float) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for t in range(tickers):
        start = int(rng.integers(0, 60))
        close = 50 * np.exp(np.cumsum(rng.standard_normal(len(TIMELINE)) * 0.01))
        prev = np.concatenate([[close[0]], close[:-1]])
        for i in range(start, len(TIMELINE)):
            if rng.random() < gaps:
                continue
            hi = max(prev[i], close[i]) * (1 + rng.random() * 0.004)
            lo = min(prev[i], close[i]) * (1 - rng.random() * 0.004)
            # Now and then a flat bar (no directional movement, zero range) and zero volume.
            if rng.random() < 0.03:
                hi = lo = close[i] = prev[i]
            vol = 0.0 if rng.random() < 0.03 else float(rng.integers(1, 5000))
            rows.append({"ticker": f"T{t}", "ts": TIMELINE[i], "open": float(prev[i]),
                         "high": float(hi), "low": float(lo), "close": float(close[i]),
                         "volume": vol})
    return pl.DataFrame(rows).sort("ticker", "ts")


def _batches(frame: pl.DataFrame) -> list[tuple[datetime, list[str], dict[str, np.ndarray]]]:
    out = []
    for (ts,), g in frame.sort("ts", "ticker").group_by("ts", maintain_order=True):
        out.append((ts, g["ticker"].to_list(), {f: g[f].to_numpy() for f in FIELDS}))
    return out


def _stream_values(frame: pl.DataFrame, exprs: dict[str, str]) -> pl.DataFrame:
    stream = ExpressionStream(exprs, timeframe="minute")
    cols: dict[str, list[Any]] = {"ticker": [], "ts": [], **{k: [] for k in exprs}}
    for ts, tickers, bars in _batches(frame):
        values = stream.update(ts, tickers, bars)
        cols["ticker"] += tickers
        cols["ts"] += [ts] * len(tickers)
        for k in exprs:
            cols[k] += values[k].tolist()
    return pl.DataFrame(cols).sort("ticker", "ts")


def _reference_values(frame: pl.DataFrame, exprs: dict[str, str]) -> pl.DataFrame:
    # compile_expressions has no session columns of its own: add them as compile_signals does.
    with_session = frame.with_columns(_session_columns(frame.schema["ts"]))
    return compile_expressions(with_session, exprs, timeframe="minute").collect()


def _assert_same(frame: pl.DataFrame, exprs: dict[str, str]) -> None:
    got, want = _stream_values(frame, exprs), _reference_values(frame, exprs)
    assert got["ticker"].to_list() == want["ticker"].to_list()
    for name in exprs:
        a = want[name].cast(pl.Float64).fill_null(np.nan).to_numpy()
        b = got[name].to_numpy().astype(np.float64)
        assert np.array_equal(np.isnan(a), np.isnan(b)), (name, exprs[name])
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-9, equal_nan=True,
                                   err_msg=f"{name}: {exprs[name]}")


def _signals_stream(spec: Any, frame: pl.DataFrame) -> pl.DataFrame:
    stream = SignalStream(spec)
    parts = []
    for ts, tickers, bars in _batches(frame):
        out: BatchSignals = stream.update(ts, tickers, **bars)
        part: dict[str, Any] = {"ticker": tickers, "ts": [ts] * len(tickers)}
        part.update({c: getattr(out, c).tolist() for c in SIGNALS})
        if out.atr is not None:
            part["atr"] = out.atr.tolist()
        parts.append(pl.DataFrame(part))
    return pl.concat(parts).sort("ticker", "ts")


def _assert_same_signals(spec: Any, frame: pl.DataFrame) -> None:
    got = _signals_stream(spec, frame)
    want = compile_signals(spec, frame).collect()
    for c in SIGNALS:
        assert got[c].to_list() == want[c].to_list(), c
    if spec.atr_period is not None:
        a = want["atr"].fill_null(np.nan).to_numpy()
        np.testing.assert_allclose(got["atr"].to_numpy(), a, rtol=1e-9, equal_nan=True)
    else:
        assert "atr" not in got.columns


FRAMES = st.builds(_frame, seed=st.integers(0, 2**32 - 1), tickers=st.integers(1, 4),
                   gaps=st.sampled_from([0.0, 0.1, 0.4]))
N = st.integers(1, 12)

# One expression per whitelisted function (and the language's operators), parameters drawn.
SINGLE = st.one_of(
    N.map(lambda n: f"sma(close, {n})"),
    N.map(lambda n: f"ema(close, {n})"),
    N.map(lambda n: f"rsi(close, {n})"),
    st.tuples(N, N, N).map(lambda t: f"macd(close, {t[0]}, {t[1]}, {t[2]}).macd"),
    st.tuples(N, N, N).map(lambda t: f"macd(close, {t[0]}, {t[1]}, {t[2]}).signal"),
    st.tuples(N, N, N).map(lambda t: f"macd(close, {t[0]}, {t[1]}, {t[2]}).hist"),
    st.tuples(N, st.sampled_from(["upper", "middle", "lower"])).map(
        lambda t: f"bollinger(close, {t[0]}, 1.5).{t[1]}"),
    N.map(lambda n: f"atr({n})"),
    st.integers(2, 12).map(lambda n: f"adx({n})"),
    st.just("true_range()"),
    N.map(lambda n: f"roc(close, {n})"),
    N.map(lambda n: f"highest(high, {n})[1]"),
    N.map(lambda n: f"lowest(low, {n})"),
    N.map(lambda n: f"relative_volume({n})"),
    N.map(lambda n: f"avg_dollar_volume({n})"),
    st.just("gap()"),
    st.just("abs(close - open)"),
    st.just("min(close, open)"),
    st.just("max(close / volume, open)"),
    st.just("minutes_since_open()"),
    N.map(lambda n: f"opening_range_high({n * 3})"),
    N.map(lambda n: f"opening_range_low({n * 3})"),
    st.just("vwap()"),
)

NUMERIC = st.sampled_from([
    "close", "open", "sma(close, 3)", "ema(close, 5)", "rsi(close, 4)", "atr(3)", "adx(3)",
    "macd(close, 3, 6, 3).hist", "bollinger(close, 5, 2).lower", "highest(close, 4)[1]",
    "roc(close, 2)", "vwap()", "opening_range_high(10)", "gap()", "50",
    "relative_volume(3)", "sma(rsi(close, 3), 3)", "ema(close - sma(close, 4), 3)",
    "close[2]", "true_range() / atr(4)", "min(close, lowest(low, 3)[1])",
])


def _compare(t: tuple[str, str, str]) -> str:
    left, op, right = t
    return f"{left} {op} {right}"


def _condition() -> st.SearchStrategy[str]:
    compare = st.tuples(NUMERIC, st.sampled_from(["<", ">", "<=", ">=", "crosses_above",
                                                  "crosses_below"]), NUMERIC).map(_compare)
    return st.recursive(compare, lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
            lambda t: f"({t[0]}) {t[1]} ({t[2]})"),
        inner.map(lambda c: f"not ({c})"),
    ), max_leaves=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=FRAMES, expr=SINGLE)
def test_every_function_streams_the_compilers_values(frame: pl.DataFrame, expr: str) -> None:
    _assert_same(frame, {"x": expr})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=FRAMES, rules=st.lists(_condition(), min_size=4, max_size=4),
       stop_atr=st.booleans())
def test_random_strategies_stream_the_compilers_signals(
    frame: pl.DataFrame, rules: list[str], stop_atr: bool
) -> None:
    doc: dict[str, Any] = {
        "name": "random", "timeframe": "minute", "direction": "long_short",
        "entry": rules[0], "exit": rules[1], "short_entry": rules[2], "short_exit": rules[3],
    }
    if stop_atr:
        doc["stop_loss"] = {"atr": 2, "atr_period": 5}
    _assert_same_signals(load_spec(doc), frame)


# Parameters that make the built-ins fire on 100-minute sessions.
SHORT_PARAMS: dict[str, dict[str, float]] = {
    "opening_range_breakout": {"range_minutes": 10, "last_entry": 60},
    "sma_cross": {"fast": 3, "slow": 8},
}


@pytest.mark.parametrize("name", builtin_names())
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=FRAMES)
def test_builtin_strategies_stream_the_compilers_signals(name: str, frame: pl.DataFrame) -> None:
    doc = builtin_document(name)
    doc["timeframe"] = "minute"
    if "short_entry" in doc:
        doc["direction"] = "long_short"
    spec = load_spec(doc, SHORT_PARAMS.get(name))
    _assert_same_signals(spec, frame)


def test_builtins_fire_and_the_stream_sees_them() -> None:
    """A check that the property tests compare something: signals do fire on these bars."""
    frame = _frame(3, 4, 0.1)
    fired = 0
    for name in builtin_names():
        doc = builtin_document(name)
        doc["timeframe"] = "minute"
        got = _signals_stream(load_spec(doc, SHORT_PARAMS.get(name)), frame)
        fired += int(got["entry_long"].sum()) + int(got["exit_long"].sum())
    assert fired > 10


def test_session_functions_reset_at_the_next_session() -> None:
    frame = _frame(5, 1, 0.0)
    got = _stream_values(frame, {"orh": "opening_range_high(5)", "vwap": "vwap()",
                                 "mso": "minutes_since_open()"})
    day = got["ts"].dt.convert_time_zone("America/New_York").dt.date()
    first, second = got.filter(day == day.min()), got.filter(day == day.max())
    # Each session's range comes from its own first five minutes only.
    for part in (first, second):
        src = frame.filter(pl.col("ts").is_in(part["ts"].to_list()))
        local = src["ts"].dt.convert_time_zone("America/New_York")
        minutes = local.dt.hour().cast(pl.Int32) * 60 + local.dt.minute().cast(pl.Int32) - 570
        window = src.filter((minutes >= 0) & (minutes < 5))
        after = part.filter(pl.col("mso") >= 5)
        assert after["orh"].unique().to_list() == [window["high"].max()]
        assert part.filter(pl.col("mso") < 0)["vwap"].is_nan().all()


def test_crossing_a_constant() -> None:
    frame = _frame(2, 2, 0.0).with_columns(close=pl.col("close") - pl.col("close").mean() + 50)
    spec = load_spec({"name": "c", "entry": "close crosses_above 50",
                      "exit": "close crosses_below 50"})
    assert _signals_stream(spec, frame)["entry_long"].sum() > 0
    _assert_same_signals(spec, frame)


def test_a_ticker_twice_in_one_batch_is_refused() -> None:
    stream = ExpressionStream({"x": "sma(close, 2)"})
    bars = {f: np.ones(2) for f in FIELDS}
    with pytest.raises(ValueError, match="one bar per ticker"):
        stream.update(None, ["A", "A"], bars)


def test_state_is_per_ticker_whatever_the_batch_order() -> None:
    frame = _frame(11, 3, 0.2)
    exprs = {"e": "ema(close, 4)", "c": "close crosses_above sma(close, 3)"}
    a = _stream_values(frame, exprs)
    # The same bars with each batch's tickers reversed: a slot follows its ticker, not a position.
    stream = ExpressionStream(exprs, timeframe="minute")
    rows = []
    for ts, tickers, bars in _batches(frame):
        rev = {f: v[::-1] for f, v in bars.items()}
        out = stream.update(ts, tickers[::-1], rev)
        rows += [(t, ts, out["e"][i], out["c"][i]) for i, t in enumerate(tickers[::-1])]
    b = pl.DataFrame(rows, schema=["ticker", "ts", "e", "c"], orient="row").sort("ticker", "ts")
    np.testing.assert_array_equal(a["e"].to_numpy(), b["e"].to_numpy())
    np.testing.assert_array_equal(a["c"].to_numpy(), b["c"].to_numpy())
