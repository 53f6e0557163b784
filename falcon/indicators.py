"""Technical indicators as polars expressions, following TA-Lib's definitions exactly.

Every function takes column names or expressions and returns an expression. Two ways to compute
per ticker on a frame holding many tickers (rows sorted by ticker, then time):

    bars.with_columns(rsi14=rsi("close", 14).over("ticker"))   # a polars window: one call per group
    bars.with_columns(rsi14=rsi("close", 14, by="ticker"))     # one pass over every group: fast

Both give the same values (to ~1e-13 relative: the one-pass form rescales each group). ``by=``
needs each group's rows to be contiguous; the screener and the strategy compiler use it, because a
window over 10,000 small groups costs far more than one pass over the whole column.

TA-Lib conventions reproduced here, including where the first value appears (nulls before it):

- EMA is seeded with the simple average of its first ``n`` values; RSI, ATR and ADX use Wilder's
  smoothing (alpha = 1/n) seeded the same way;
- Bollinger bands use the population standard deviation, computed as TA-Lib does
  (mean of squares minus square of the mean; a variance under 1e-8 counts as zero);
- MACD seeds its fast EMA on the bar where the slow EMA starts (TA-Lib's lookback alignment),
  and all three of its outputs start together, when the signal line does;
- a leading run of nulls is skipped, as TA-Lib's Python wrapper skips leading NaNs.
  (NaN in an input is treated as null.)

The recursive indicators run in ``map_batches`` on numpy arrays (a polars expression tree cannot
share an intermediate result, and these reuse theirs many times); their recursion is polars'
``ewm_mean(adjust=False)`` over a series whose first valid value is replaced by the seed, so no
Python loop runs per row.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import polars as pl

__all__ = [
    "IntoExpr",
    "adx",
    "atr",
    "avg_dollar_volume",
    "bollinger",
    "ema",
    "gap",
    "highest",
    "lowest",
    "macd",
    "relative_volume",
    "roc",
    "rsi",
    "sma",
    "true_range",
]

IntoExpr = str | pl.Expr
_Array = np.ndarray

# TA-Lib treats |v| < 1e-8 as zero in RSI and ADX (TA_IS_ZERO), and a variance < 1e-8 as zero in
# Bollinger bands (TA_IS_ZERO_OR_NEG); reproducing that keeps flat stretches identical.
_TA_EPSILON = 1e-8
_KEY = "__by"


def _expr(x: IntoExpr) -> pl.Expr:
    return pl.col(x) if isinstance(x, str) else x


def _period(n: int, name: str = "n", minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n!r}")
    return int(n)


# --- simple indicators: plain expressions ------------------------------------------------------


def _position(by: IntoExpr) -> pl.Expr:
    """Row number within the row's group (groups contiguous)."""
    key = _expr(by)
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    return row - pl.when(key.ne_missing(key.shift(1))).then(row).forward_fill()


def _shift(x: pl.Expr, k: int, by: IntoExpr | None) -> pl.Expr:
    return x.shift(k) if by is None else pl.when(_position(by) >= k).then(x.shift(k))


def _rolling(x: pl.Expr, n: int, op: str, by: IntoExpr | None) -> pl.Expr:
    out: pl.Expr = getattr(x, f"rolling_{op}")(n)
    return out if by is None or n == 1 else pl.when(_position(by) >= n - 1).then(out)


def sma(x: IntoExpr, n: int, *, by: IntoExpr | None = None) -> pl.Expr:
    """Simple moving average over ``n`` bars (TA-Lib SMA; first value on bar ``n-1``)."""
    return _rolling(_expr(x), _period(n), "mean", by)


def highest(x: IntoExpr, n: int, *, by: IntoExpr | None = None) -> pl.Expr:
    """Highest value over the last ``n`` bars including this one (TA-Lib MAX)."""
    return _rolling(_expr(x), _period(n), "max", by)


def lowest(x: IntoExpr, n: int, *, by: IntoExpr | None = None) -> pl.Expr:
    """Lowest value over the last ``n`` bars including this one (TA-Lib MIN)."""
    return _rolling(_expr(x), _period(n), "min", by)


def roc(x: IntoExpr, n: int = 10, *, by: IntoExpr | None = None) -> pl.Expr:
    """Rate of change in percent over ``n`` bars: (x / x[n] - 1) * 100 (TA-Lib ROC; 0 if x[n]=0)."""
    e = _expr(x)
    prev = _shift(e, _period(n), by)
    return pl.when(prev == 0).then(prev * 0.0).otherwise((e / prev - 1.0) * 100.0)


def relative_volume(volume: IntoExpr, n: int = 20, *, by: IntoExpr | None = None) -> pl.Expr:
    """This bar's volume over the average volume of the ``n`` PREVIOUS bars (first on bar ``n``).

    Null when that average is zero: "relative to nothing" is not a number a rule can use.
    """
    v = _expr(volume)
    avg = _shift(v, 1, by).rolling_mean(_period(n))
    if by is not None:
        avg = pl.when(_position(by) >= n).then(avg)
    return pl.when(avg != 0).then(v / avg)


def avg_dollar_volume(
    close: IntoExpr, volume: IntoExpr, n: int = 20, *, by: IntoExpr | None = None
) -> pl.Expr:
    """Average of close * volume over the last ``n`` bars including this one."""
    return _rolling(_expr(close) * _expr(volume), _period(n), "mean", by)


def gap(open_: IntoExpr, close: IntoExpr, *, by: IntoExpr | None = None) -> pl.Expr:
    """Opening gap in percent: (open / previous close - 1) * 100; null on the first bar."""
    prev = _shift(_expr(close), 1, by)
    return pl.when(prev != 0).then((_expr(open_) / prev - 1.0) * 100.0)


def true_range(
    high: IntoExpr, low: IntoExpr, close: IntoExpr, *, by: IntoExpr | None = None
) -> pl.Expr:
    """True range: max(high-low, |prev close-high|, |prev close-low|); null on the first bar."""
    h, lo, prev = _expr(high), _expr(low), _shift(_expr(close), 1, by)
    tr = pl.max_horizontal(h - lo, (prev - h).abs(), (prev - lo).abs())
    # max_horizontal skips nulls; TA-Lib has no value without a previous close.
    return pl.when(prev.is_not_null() & h.is_not_null() & lo.is_not_null()).then(tr)


# --- recursive indicators: numpy inside map_batches --------------------------------------------


def _numpy(series: pl.Series) -> _Array:
    """A writable float64 array, NaN for null."""
    return np.array(series.to_numpy(), dtype=np.float64, copy=True)


class _Ops:
    """Array operations that restart at every group boundary (or never, without groups)."""

    def __init__(self, size: int, key: pl.Series | None) -> None:
        self.index = np.arange(size)
        self.pos: _Array | None = None
        if key is not None:
            first = key.ne_missing(key.shift(1)).to_numpy()
            self.first = first
            self.pos = self.index - np.maximum.accumulate(np.where(first, self.index, 0))

    def shift(self, x: _Array, k: int) -> _Array:
        out = np.full_like(x, np.nan)
        if k < len(x):
            out[k:] = x[: len(x) - k]
        if self.pos is not None:
            out[self.pos < k] = np.nan
        return out

    def rolling(self, x: _Array, n: int, op: str) -> _Array:
        series = pl.Series(x, nan_to_null=True)
        out = _numpy(getattr(series, f"rolling_{op}")(n))
        if self.pos is not None and n > 1:
            out[self.pos < n - 1] = np.nan
        return out

    def count(self, x: _Array) -> _Array:
        """How many non-NaN values the group has had up to and including each row."""
        valid = (~np.isnan(x)).astype(np.int64)
        total = np.cumsum(valid)
        if self.pos is None:
            return total
        # total - valid is non-decreasing, so a running maximum forward-fills it from group starts.
        return total - np.maximum.accumulate(np.where(self.first, total - valid, 0))

    def ffill(self, x: _Array) -> _Array:
        last = np.maximum.accumulate(np.where(np.isnan(x), 0, self.index))
        return x[last]

    def smooth(
        self,
        x: _Array,
        alpha: float,
        seed: _Array,
        at: int,
        count: _Array,
        *,
        counted: _Array | None = None,
    ) -> _Array:
        """``y = (1-alpha)*y[-1] + alpha*x`` from the row where ``count == at`` (there: ``seed``).

        Rows before that are NaN. Polars' ewm_mean(adjust=False) starts from its first non-null
        input, so feeding it the seed there and the raw values after gives TA-Lib's recursion;
        rows where ``x`` is NaN later on are skipped and stay NaN. ``count`` counts the valid
        values of ``counted`` (default ``x``).
        """
        start = (count == at) & ~np.isnan(x if counted is None else counted)
        series = np.where(start, seed, np.where(count > at, x, np.nan))
        if self.pos is None:
            return self._ewm(series, alpha)
        return self._smooth_groups(series, alpha)

    def _smooth_groups(self, series: _Array, alpha: float) -> _Array:
        """The recursion of :meth:`smooth`, restarted in every group.

        Many short groups (a screen: 10,000 tickers x 300 days) step through time once for all
        groups at a time, as columns of a (group x position) matrix: a few hundred vector steps.
        Few long groups (a backtest of a handful of symbols) run polars' ewm on each slice.
        Both do TA-Lib's arithmetic, ``y = (1-alpha)*y[-1] + alpha*x``.
        """
        if self.pos is None:  # pragma: no cover - callers check
            return self._ewm(series, alpha)
        starts = np.flatnonzero(self.first)
        groups = len(starts)
        longest = int(self.pos.max(initial=0)) + 1
        if groups * 64 < longest:
            bounds = np.append(starts, len(series))
            out = np.empty_like(series)
            for lo, hi in itertools.pairwise(bounds):
                out[lo:hi] = self._ewm(series[lo:hi], alpha)
            return out
        gid = np.cumsum(self.first) - 1
        matrix = np.full((groups, longest), np.nan)
        matrix[gid, self.pos] = series
        result = np.full_like(matrix, np.nan)
        state = np.full(groups, np.nan)
        keep = 1.0 - alpha
        for j in range(longest):
            col = matrix[:, j]
            missing = np.isnan(col)
            stepped = keep * state + alpha * col
            # Not started yet (state NaN): the first value is the seed itself.
            state = np.where(missing, state, np.where(np.isnan(state), col, stepped))
            result[:, j] = np.where(missing, np.nan, state)
        return result[gid, self.pos]

    @staticmethod
    def _ewm(series: _Array, alpha: float) -> _Array:
        s = pl.Series(series, nan_to_null=True)
        smoothed = s.ewm_mean(alpha=alpha, adjust=False, min_samples=1, ignore_nulls=True)
        return _numpy(smoothed)


def _batched(
    compute: Callable[..., _Array | dict[str, _Array]],
    inputs: Sequence[IntoExpr],
    by: IntoExpr | None,
    fields: Sequence[str] | None = None,
) -> pl.Expr:
    """An expression running ``compute(ops, *arrays)`` on whole columns (or groups, in .over)."""
    names = [f"__in{i}" for i in range(len(inputs))]
    parts = [_expr(x).cast(pl.Float64).alias(name) for x, name in zip(inputs, names, strict=True)]
    if by is not None:
        parts.append(_expr(by).alias(_KEY))
    dtype: pl.DataType = (
        pl.Float64() if fields is None else pl.Struct({f: pl.Float64() for f in fields})
    )

    def run(batch: pl.Series) -> pl.Series:
        frame = batch.struct.unnest()
        arrays = [_numpy(frame[name]) for name in names]
        ops = _Ops(len(frame), frame[_KEY] if by is not None else None)
        out = compute(ops, *arrays)
        if isinstance(out, dict):
            cols = [pl.Series(k, out[k], nan_to_null=True) for k in fields or ()]
            return pl.DataFrame(cols).to_struct(batch.name)
        return pl.Series(batch.name, out, nan_to_null=True)

    return pl.struct(parts).map_batches(run, return_dtype=dtype)


def _ema(ops: _Ops, x: _Array, n: int) -> _Array:
    return ops.smooth(x, 2.0 / (n + 1), ops.rolling(x, n, "mean"), n, ops.count(x))


def _wilder(ops: _Ops, x: _Array, n: int) -> _Array:
    """Wilder's smoothing (alpha = 1/n) seeded with the mean of the first ``n`` valid values."""
    return ops.smooth(x, 1.0 / n, ops.rolling(x, n, "mean"), n, ops.count(x))


def _true_range_np(ops: _Ops, high: _Array, low: _Array, close: _Array) -> _Array:
    prev = ops.shift(close, 1)
    # np.maximum propagates NaN, so no previous close gives no true range, as in TA-Lib.
    return np.maximum(np.maximum(high - low, np.abs(prev - high)), np.abs(prev - low))


def ema(x: IntoExpr, n: int, *, by: IntoExpr | None = None) -> pl.Expr:
    """Exponential moving average, alpha = 2/(n+1), seeded with the SMA of the first n values."""
    n = _period(n)
    return _batched(lambda ops, a: _ema(ops, a, n), [x], by)


def rsi(x: IntoExpr, n: int = 14, *, by: IntoExpr | None = None) -> pl.Expr:
    """Relative strength index (TA-Lib RSI, Wilder; first value on bar ``n``), 0..100."""
    n = _period(n)

    def compute(ops: _Ops, a: _Array) -> _Array:
        change = a - ops.shift(a, 1)
        with np.errstate(invalid="ignore"):
            gain = _wilder(ops, np.where(change > 0, change, change * 0.0), n)
            loss = _wilder(ops, np.where(change < 0, -change, change * 0.0), n)
            total = gain + loss
            return np.where(np.abs(total) < _TA_EPSILON, total * 0.0, 100.0 * gain / total)

    return _batched(compute, [x], by)


def macd(
    x: IntoExpr, fast: int = 12, slow: int = 26, signal: int = 9, *, by: IntoExpr | None = None
) -> pl.Expr:
    """MACD as a struct with fields ``macd``, ``signal`` and ``hist`` (TA-Lib MACD).

    TA-Lib swaps ``fast`` and ``slow`` when given in the wrong order, seeds the fast EMA with the
    SMA of the ``fast`` values ending on the slow EMA's first bar, and starts all three outputs on
    bar ``slow + signal - 2``.
    """
    fast, slow, signal = _period(fast, "fast"), _period(slow, "slow"), _period(signal, "signal")
    if slow < fast:
        fast, slow = slow, fast

    def compute(ops: _Ops, a: _Array) -> dict[str, _Array]:
        count = ops.count(a)
        slow_ema = ops.smooth(a, 2.0 / (slow + 1), ops.rolling(a, slow, "mean"), slow, count)
        fast_ema = ops.smooth(a, 2.0 / (fast + 1), ops.rolling(a, fast, "mean"), slow, count)
        line = fast_ema - slow_ema
        sig = _ema(ops, line, signal)
        line = np.where(np.isnan(sig), np.nan, line)
        return {"macd": line, "signal": sig, "hist": line - sig}

    return _batched(compute, [x], by, ["macd", "signal", "hist"])


def bollinger(x: IntoExpr, n: int = 20, k: float = 2.0, *, by: IntoExpr | None = None) -> pl.Expr:
    """Bollinger bands as a struct ``upper``, ``middle``, ``lower`` (SMA ± k population std)."""
    n, k = _period(n), float(k)

    def compute(ops: _Ops, a: _Array) -> dict[str, _Array]:
        middle = ops.rolling(a, n, "mean")
        # TA-Lib's formula (mean of squares minus squared mean), not a two-pass variance, so that
        # the bands agree with it to the last digits.
        variance = ops.rolling(a * a, n, "mean") - middle * middle
        with np.errstate(invalid="ignore"):
            width = np.where(variance < _TA_EPSILON, variance * 0.0, np.sqrt(variance)) * k
        return {"upper": middle + width, "middle": middle, "lower": middle - width}

    return _batched(compute, [x], by, ["upper", "middle", "lower"])


def atr(
    high: IntoExpr, low: IntoExpr, close: IntoExpr, n: int = 14, *, by: IntoExpr | None = None
) -> pl.Expr:
    """Average true range (TA-Lib ATR, Wilder; first value on bar ``n``)."""
    n = _period(n)

    def compute(ops: _Ops, h: _Array, lo: _Array, c: _Array) -> _Array:
        return _wilder(ops, _true_range_np(ops, h, lo, c), n)

    return _batched(compute, [high, low, close], by)


def adx(
    high: IntoExpr, low: IntoExpr, close: IntoExpr, n: int = 14, *, by: IntoExpr | None = None
) -> pl.Expr:
    """Average directional index (TA-Lib ADX; first value on bar ``2n-1``), 0..100."""
    n = _period(n, minimum=2)
    return _batched(lambda ops, h, lo, c: _adx(ops, h, lo, c, n), [high, low, close], by)


def _adx(ops: _Ops, h: _Array, lo: _Array, c: _Array, n: int) -> _Array:
    tr = _true_range_np(ops, h, lo, c)
    count = ops.count(tr)
    up = h - ops.shift(h, 1)
    down = ops.shift(lo, 1) - lo
    valid = ~np.isnan(tr)
    with np.errstate(invalid="ignore", divide="ignore"):
        minus_dm = np.where((down > 0) & (up < down), down, np.where(valid, 0.0, np.nan))
        plus_dm = np.where((up > 0) & (up > down), up, np.where(valid, 0.0, np.nan))

        # TA-Lib keeps Wilder *sums* S = S - S/n + x seeded with the sum of the first n-1 values;
        # as S/n that is an alpha = 1/n average seeded with sum(first n-1)/n. The DIs are ratios,
        # so the scale cancels; only the zero test on the true-range sum needs S itself.
        def wilder_sum_avg(v: _Array) -> _Array:
            return ops.smooth(v, 1.0 / n, ops.rolling(v, n - 1, "sum") / n, n - 1, count)

        tr_avg = wilder_sum_avg(tr)
        plus_di = 100.0 * (wilder_sum_avg(plus_dm) / tr_avg)
        minus_di = 100.0 * (wilder_sum_avg(minus_dm) / tr_avg)
        di_sum = plus_di + minus_di
        dx_ok = (np.abs(tr_avg * n) >= _TA_EPSILON) & (np.abs(di_sum) >= _TA_EPSILON) & (count >= n)
        dx = np.where(dx_ok, 100.0 * (np.abs(minus_di - plus_di) / di_sum), np.nan)
    # The first ADX averages the n DX values from bar n (an undefined DX counts as 0); later ones
    # are Wilder-smoothed, and an undefined DX leaves the previous ADX unchanged.
    at = 2 * n - 1
    seed = ops.rolling(np.where(count >= n, np.nan_to_num(dx, nan=0.0), np.nan), n, "mean")
    smoothed = ops.smooth(dx, 1.0 / n, seed, at, count, counted=tr)
    return np.where(valid & (count >= at), ops.ffill(smoothed), np.nan)
