"""Incremental (streaming) evaluation of the rule language: one batch of bars at a time.

:func:`falcon.strategy.compile_signals` evaluates rules over a whole history at once; a trader
that gets one bar per ticker per minute would have to re-run it on a window every minute. A
:class:`SignalStream` instead keeps, for every function call in the rules and every ticker, the
state that call needs (a ring of the last *n* values, a running sum, a Wilder average, a session
accumulator) in numpy arrays with one slot per ticker, and advances all tickers of a batch (one
timestamp, many tickers) with a few vectorised numpy operations: O(1) per bar, no polars, no
window re-computed.

The values are those of the compiler on the full history of each ticker (the compiler is the
reference semantics), not approximations on a window: the same TA-Lib seeding and first-value
positions, the same null rules (a null is NaN here; a condition is 1.0, 0.0 or NaN with polars'
three-valued ``and``/``or``), to floating-point rounding (the compiler sums a rolling window over
the whole column; here each ticker has its own running sum). The signals are the same exactly:
both engines compare through :func:`falcon.strategy.snap.compare`, at 12 significant digits, so
the last bits never decide a comparison. ``tests/strategy/test_stream.py`` checks every function
against ``compile_signals``.

Usage::

    stream = SignalStream(spec)
    out = stream.update(ts, ["AAPL", "MSFT"], open=o, high=h, low=lo, close=c, volume=v)
    out.entry_long            # bool array, one per ticker given
    out.atr                   # the sizing ATR (NaN before its first value), or None

A ticker's history is the sequence of bars given for it, in order; tickers may start late and skip
batches. Each ticker may appear at most once per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import numpy as np

from falcon.strategy.expr import (
    Attr,
    Call,
    Field,
    Neg,
    Node,
    Not,
    Num,
    Param,
    Shift,
    parse,
    to_text,
)
from falcon.strategy.functions import analyze, call_parts, constant
from falcon.strategy.snap import compare, subtract

if TYPE_CHECKING:
    from falcon.strategy.spec import StrategySpec

__all__ = ["BatchSignals", "ExpressionStream", "SignalStream"]

_Array = np.ndarray
Value = _Array | dict[str, _Array]
_NAN = np.nan
_EPS = 1e-8  # TA-Lib's zero (falcon.indicators._TA_EPSILON)
_NY = ZoneInfo("America/New_York")
_OPEN_MINUTE = 9 * 60 + 30
_FIELDS = ("open", "high", "low", "close", "volume")
_NO_SESSION = np.iinfo(np.int64).min
_SIGNALS = ("entry_long", "exit_long", "entry_short", "exit_short")


# --- the batch context and per-ticker state ----------------------------------------------------


@dataclass
class _Ctx:
    """One batch: the tickers' slots, their bars, how many bars each had before, the session."""

    rows: _Array  # slot of each ticker of the batch
    pos: _Array  # bars each ticker had before this one (its row number in the compiler)
    cols: dict[str, _Array]
    mso: int = 0  # minutes since 09:30 America/New_York
    session: int = 0  # the session's date as an ordinal

    @property
    def m(self) -> int:
        return len(self.rows)


class _State:
    """Per-ticker arrays (first axis: ticker slot) that grow with the number of tickers."""

    def __init__(self) -> None:
        self._arrays: dict[str, tuple[tuple[int, ...], object]] = {}

    def _alloc(self, name: str, tail: tuple[int, ...], fill: object, dtype: type = np.float64
               ) -> None:
        self._arrays[name] = (tail, fill)
        setattr(self, name, np.full((0, *tail), fill, dtype=dtype))

    def grow(self, cap: int) -> None:
        for name, (tail, fill) in self._arrays.items():
            old: _Array = getattr(self, name)
            new = np.full((cap, *tail), fill, dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)


class _Lag(_State):
    """The value ``k`` bars ago (NaN before the ticker has ``k`` earlier bars)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.buf: _Array
        self._alloc("buf", (k,), _NAN)

    def step(self, ctx: _Ctx, x: _Array) -> _Array:
        if self.k == 0:
            return x
        idx = ctx.pos % self.k
        old = self.buf[ctx.rows, idx]
        self.buf[ctx.rows, idx] = x
        return old


class _Window(_State):
    """The last ``n`` values (a ring), with a compensated running sum and a count of NaNs.

    The ring starts full of NaN, so a ticker's window holds a NaN until it has ``n`` bars: that is
    the compiler's "no value before bar n-1" and "null if any input in the window is null".
    """

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.buf: _Array
        self.total: _Array
        self.comp: _Array
        self.nans: _Array
        self._alloc("buf", (n,), _NAN)
        self._alloc("total", (), 0.0)
        self._alloc("comp", (), 0.0)
        self._alloc("nans", (), n, np.int64)
        self._rows: _Array = np.zeros(0, dtype=np.int64)

    def step(self, ctx: _Ctx, x: _Array) -> None:
        rows = ctx.rows
        self._rows = rows
        idx = ctx.pos % self.n
        old = self.buf[rows, idx]
        self.buf[rows, idx] = x
        old_nan, new_nan = np.isnan(old), np.isnan(x)
        self.nans[rows] += new_nan.astype(np.int64) - old_nan.astype(np.int64)
        s, c = self.total[rows], self.comp[rows]
        # Neumaier's compensated sum: add the new value, take the old one out.
        for v in (np.where(new_nan, 0.0, x), np.where(old_nan, 0.0, -old)):
            t = s + v
            c = c + np.where(np.abs(s) >= np.abs(v), (s - t) + v, (v - t) + s)
            s = t
        self.total[rows], self.comp[rows] = s, c

    def sum(self) -> _Array:
        rows = self._rows
        return np.where(self.nans[rows] == 0, self.total[rows] + self.comp[rows], _NAN)

    def mean(self) -> _Array:
        return self.sum() / self.n

    def max(self) -> _Array:
        return np.asarray(self.buf[self._rows].max(axis=1))  # NaN propagates, as a null does

    def min(self) -> _Array:
        return np.asarray(self.buf[self._rows].min(axis=1))


class _Count(_State):
    """How many non-NaN values a ticker has had, this one included (``_Ops.count``)."""

    def __init__(self) -> None:
        super().__init__()
        self.n: _Array
        self._alloc("n", (), 0, np.int64)

    def step(self, ctx: _Ctx, x: _Array) -> _Array:
        out = self.n[ctx.rows] + (~np.isnan(x)).astype(np.int64)
        self.n[ctx.rows] = out
        return out


class _Smooth(_State):
    """``_Ops.smooth``: ``y = (1-alpha)*y[-1] + alpha*x`` from the bar where ``count == at``.

    There ``y`` is ``seed``; before it NaN; a later NaN input is skipped (output NaN, state kept).
    """

    def __init__(self, alpha: float, at: int) -> None:
        super().__init__()
        self.alpha, self.keep, self.at = alpha, 1.0 - alpha, at
        self.y: _Array
        self._alloc("y", (), _NAN)

    def step(self, ctx: _Ctx, x: _Array, seed: _Array, count: _Array,
             counted: _Array | None = None) -> _Array:
        valid = ~np.isnan(x if counted is None else counted)
        series = np.where((count == self.at) & valid, seed,
                          np.where(count > self.at, x, _NAN))
        state = self.y[ctx.rows]
        missing = np.isnan(series)
        stepped = self.keep * state + self.alpha * series
        state = np.where(missing, state, np.where(np.isnan(state), series, stepped))
        self.y[ctx.rows] = state
        return np.where(missing, _NAN, state)


class _Ffill(_State):
    """The last non-NaN value of a ticker."""

    def __init__(self) -> None:
        super().__init__()
        self.last: _Array
        self._alloc("last", (), _NAN)

    def step(self, ctx: _Ctx, x: _Array) -> _Array:
        out = np.where(np.isnan(x), self.last[ctx.rows], x)
        self.last[ctx.rows] = out
        return out


# --- the whitelisted functions, incrementally --------------------------------------------------


class _Func:
    """One hoisted call: its state for every ticker and its step over a batch."""

    def __init__(self, consts: list[float]) -> None:
        self.consts = consts
        self.states: list[_State] = []

    def step(self, ctx: _Ctx, s: list[_Array]) -> Value:  # pragma: no cover - abstract
        raise NotImplementedError


def _n(consts: list[float], i: int = 0) -> int:
    return int(consts[i])


class _Rolling(_Func):
    def __init__(self, consts: list[float], how: str) -> None:
        super().__init__(consts)
        self.how = how
        self.w = _Window(_n(consts))
        self.states = [self.w]

    def step(self, ctx: _Ctx, s: list[_Array]) -> Value:
        w = self.w
        w.step(ctx, s[0])
        return w.mean() if self.how == "mean" else w.max() if self.how == "max" else w.min()


class _Ema(_Func):
    def __init__(self, consts: list[float]) -> None:
        super().__init__(consts)
        n = _n(consts)
        self.w, self.c, self.sm = _Window(n), _Count(), _Smooth(2.0 / (n + 1), n)
        self.states = [self.w, self.c, self.sm]

    def step(self, ctx: _Ctx, s: list[_Array]) -> Value:
        x = s[0]
        self.w.step(ctx, x)
        return self.sm.step(ctx, x, self.w.mean(), self.c.step(ctx, x))


class _Wilder:
    """``falcon.indicators._wilder``: alpha = 1/n seeded with the mean of the first n."""

    def __init__(self, owner: _Func, n: int) -> None:
        self.w, self.c, self.sm = _Window(n), _Count(), _Smooth(1.0 / n, n)
        owner.states += [self.w, self.c, self.sm]

    def step(self, ctx: _Ctx, x: _Array) -> _Array:
        self.w.step(ctx, x)
        return self.sm.step(ctx, x, self.w.mean(), self.c.step(ctx, x))


class _Rsi(_Func):
    def __init__(self, consts: list[float]) -> None:
        super().__init__(consts)
        n = _n(consts)
        self.lag = _Lag(1)
        self.states = [self.lag]
        self.gain, self.loss = _Wilder(self, n), _Wilder(self, n)

    def step(self, ctx: _Ctx, s: list[_Array]) -> Value:
        x = s[0]
        change = x - self.lag.step(ctx, x)
        with np.errstate(invalid="ignore", divide="ignore"):
            gain = self.gain.step(ctx, np.where(change > 0, change, change * 0.0))
            loss = self.loss.step(ctx, np.where(change < 0, -change, change * 0.0))
            total = gain + loss
            return np.where(np.abs(total) < _EPS, total * 0.0, 100.0 * gain / total)


class _Macd(_Func):
    def __init__(self, consts: list[float]) -> None:
        super().__init__(consts)
        fast, slow, signal = _n(consts, 0), _n(consts, 1), _n(consts, 2)
        if slow < fast:
            fast, slow = slow, fast
        self.count = _Count()
        self.w_slow, self.w_fast = _Window(slow), _Window(fast)
        self.s_slow, self.s_fast = _Smooth(2.0 / (slow + 1), slow), _Smooth(2.0 / (fast + 1), slow)
        self.w_sig, self.c_sig = _Window(signal), _Count()
        self.s_sig = _Smooth(2.0 / (signal + 1), signal)
        self.states = [self.count, self.w_slow, self.w_fast, self.s_slow, self.s_fast,
                       self.w_sig, self.c_sig, self.s_sig]

    def step(self, ctx: _Ctx, s: list[_Array]) -> Value:
        a = s[0]
        count = self.count.step(ctx, a)
        self.w_slow.step(ctx, a)
        self.w_fast.step(ctx, a)
        slow = self.s_slow.step(ctx, a, self.w_slow.mean(), count)
        fast = self.s_fast.step(ctx, a, self.w_fast.mean(), count)
        line = fast - slow
        self.w_sig.step(ctx, line)
        sig = self.s_sig.step(ctx, line, self.w_sig.mean(), self.c_sig.step(ctx, line))
        line = np.where(np.isnan(sig), _NAN, line)
        return {"macd": line, "signal": sig, "hist": line - sig}


class _Bollinger(_Func):
    def __init__(self, consts: list[float]) -> None:
        super().__init__(consts)
        n = _n(consts)
        self.k = float(consts[1])
        self.w, self.w2 = _Window(n), _Window(n)
        self.states = [self.w, self.w2]

    def step(self, ctx: _Ctx, s: list[_Array]) -> Value:
        a = s[0]
        self.w.step(ctx, a)
        self.w2.step(ctx, a * a)
        middle = self.w.mean()
        variance = self.w2.mean() - middle * middle
        with np.errstate(invalid="ignore"):
            width = np.where(variance < _EPS, variance * 0.0, np.sqrt(variance)) * self.k
        return {"upper": middle + width, "middle": middle, "lower": middle - width}


class _TrueRange:
    def __init__(self, owner: _Func) -> None:
        self.lag = _Lag(1)
        owner.states.append(self.lag)

    def step(self, ctx: _Ctx, h: _Array, lo: _Array, c: _Array) -> _Array:
        prev = self.lag.step(ctx, c)
        return np.maximum(np.maximum(h - lo, np.abs(prev - h)), np.abs(prev - lo))


class _TrueRangeFunc(_Func):
    def __init__(self, consts: list[float]) -> None:
        super().__init__(consts)
        self.tr = _TrueRange(self)

    def step(self, ctx: _Ctx, s: list[_Array]) -> Value:
        return self.tr.step(ctx, s[0], s[1], s[2])


class _Atr(_Func):
    def __init__(self, consts: list[float]) -> None:
        super().__init__(consts)
        self.tr = _TrueRange(self)
        self.wilder = _Wilder(self, _n(consts))

    def step(self, ctx: _Ctx, s: list[_Array]) -> Value:
        return self.wilder.step(ctx, self.tr.step(ctx, s[0], s[1], s[2]))


class _WilderSum:
    """ADX's Wilder sum as an average: seeded with sum(first n-1)/n at ``count == n-1``."""

    def __init__(self, owner: _Func, n: int) -> None:
        self.n = n
        self.w, self.sm = _Window(n - 1), _Smooth(1.0 / n, n - 1)
        owner.states += [self.w, self.sm]

    def step(self, ctx: _Ctx, v: _Array, count: _Array) -> _Array:
        self.w.step(ctx, v)
        return self.sm.step(ctx, v, self.w.sum() / self.n, count)


class _Adx(_Func):
    def __init__(self, consts: list[float]) -> None:
        super().__init__(consts)
        n = self.n = _n(consts)
        self.tr = _TrueRange(self)
        self.lag_h, self.lag_lo, self.count = _Lag(1), _Lag(1), _Count()
        self.states += [self.lag_h, self.lag_lo, self.count]
        self.s_tr, self.s_plus, self.s_minus = (_WilderSum(self, n) for _ in range(3))
        self.w_seed, self.sm, self.ff = _Window(n), _Smooth(1.0 / n, 2 * n - 1), _Ffill()
        self.states += [self.w_seed, self.sm, self.ff]

    def step(self, ctx: _Ctx, s: list[_Array]) -> Value:
        h, lo, c = s
        n = self.n
        tr = self.tr.step(ctx, h, lo, c)
        count = self.count.step(ctx, tr)
        up = h - self.lag_h.step(ctx, h)
        down = self.lag_lo.step(ctx, lo) - lo
        valid = ~np.isnan(tr)
        with np.errstate(invalid="ignore", divide="ignore"):
            zero = np.where(valid, 0.0, _NAN)
            minus_dm = np.where((down > 0) & (up < down), down, zero)
            plus_dm = np.where((up > 0) & (up > down), up, zero)
            tr_avg = self.s_tr.step(ctx, tr, count)
            plus_di = 100.0 * (self.s_plus.step(ctx, plus_dm, count) / tr_avg)
            minus_di = 100.0 * (self.s_minus.step(ctx, minus_dm, count) / tr_avg)
            di_sum = plus_di + minus_di
            ok = (np.abs(tr_avg * n) >= _EPS) & (np.abs(di_sum) >= _EPS) & (count >= n)
            dx = np.where(ok, 100.0 * (np.abs(minus_di - plus_di) / di_sum), _NAN)
        at = 2 * n - 1
        self.w_seed.step(ctx, np.where(count >= n, np.nan_to_num(dx, nan=0.0), _NAN))
        smoothed = self.sm.step(ctx, dx, self.w_seed.mean(), count, counted=tr)
        # An undefined DX keeps the previous ADX. (The compiler's forward fill is over the whole
        # column; it differs only when a ticker's seed itself is undefined: see the report.)
        filled = self.ff.step(ctx, smoothed)
        return np.where(valid & (count >= at), filled, _NAN)


class _Roc(_Func):
    def __init__(self, consts: list[float]) -> None:
        super().__init__(consts)
        self.lag = _Lag(_n(consts))
        self.states = [self.lag]

    def step(self, ctx: _Ctx, s: list[_Array]) -> Value:
        e = s[0]
        prev = self.lag.step(ctx, e)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(prev == 0, prev * 0.0, (e / prev - 1.0) * 100.0)


class _RelativeVolume(_Func):
    def __init__(self, consts: list[float]) -> None:
        super().__init__(consts)
        self.lag, self.w = _Lag(1), _Window(_n(consts))
        self.states = [self.lag, self.w]

    def step(self, ctx: _Ctx, s: list[_Array]) -> Value:
        v = ctx.cols["volume"]
        self.w.step(ctx, self.lag.step(ctx, v))
        avg = self.w.mean()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(avg != 0, v / avg, _NAN)


class _AvgDollarVolume(_Func):
    def __init__(self, consts: list[float]) -> None:
        super().__init__(consts)
        self.w = _Window(_n(consts))
        self.states = [self.w]

    def step(self, ctx: _Ctx, s: list[_Array]) -> Value:
        self.w.step(ctx, ctx.cols["close"] * ctx.cols["volume"])
        return self.w.mean()


class _Gap(_Func):
    def __init__(self, consts: list[float]) -> None:
        super().__init__(consts)
        self.lag = _Lag(1)
        self.states = [self.lag]

    def step(self, ctx: _Ctx, s: list[_Array]) -> Value:
        prev = self.lag.step(ctx, ctx.cols["close"])
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(prev != 0, (ctx.cols["open"] / prev - 1.0) * 100.0, _NAN)


class _Pure(_Func):
    def __init__(self, consts: list[float], fn: Callable[[list[_Array]], _Array]) -> None:
        super().__init__(consts)
        self.fn = fn

    def step(self, ctx: _Ctx, s: list[_Array]) -> Value:
        return self.fn(s)


class _MinutesSinceOpen(_Func):
    def step(self, ctx: _Ctx, s: list[_Array]) -> Value:
        return np.full(ctx.m, float(ctx.mso))


class _SessionState(_State):
    """Accumulators that restart when a ticker's bar belongs to a new session."""

    def __init__(self) -> None:
        super().__init__()
        self.session: _Array
        self.a: _Array
        self.b: _Array
        self._alloc("session", (), _NO_SESSION, np.int64)

    def enter(self, ctx: _Ctx, fills: tuple[float, ...]) -> tuple[_Array, ...]:
        """The accumulators of the batch's rows, reset where the session changed."""
        new = self.session[ctx.rows] != ctx.session
        self.session[ctx.rows] = ctx.session
        names = ("a", "b")[: len(fills)]
        return tuple(np.where(new, f, getattr(self, k)[ctx.rows])
                     for k, f in zip(names, fills, strict=True))


class _OpeningRange(_Func):
    def __init__(self, consts: list[float], col: str, how: str) -> None:
        super().__init__(consts)
        self.minutes, self.col, self.how = _n(consts), col, how
        self.st = _SessionState()
        self.st._alloc("a", (), _NAN)
        self.states = [self.st]

    def step(self, ctx: _Ctx, s: list[_Array]) -> Value:
        (level,) = self.st.enter(ctx, (_NAN,))
        if 0 <= ctx.mso < self.minutes:
            x = ctx.cols[self.col]
            level = np.fmax(level, x) if self.how == "max" else np.fmin(level, x)
        self.st.a[ctx.rows] = level
        return level if ctx.mso >= self.minutes else np.full(ctx.m, _NAN)


class _Vwap(_Func):
    def __init__(self, consts: list[float]) -> None:
        super().__init__(consts)
        self.st = _SessionState()
        self.st._alloc("a", (), 0.0)
        self.st._alloc("b", (), 0.0)
        self.states = [self.st]

    def step(self, ctx: _Ctx, s: list[_Array]) -> Value:
        num, den = self.st.enter(ctx, (0.0, 0.0))
        cols = ctx.cols
        in_session = ctx.mso >= 0
        typical = (cols["high"] + cols["low"] + cols["close"]) / 3.0
        vol = cols["volume"] if in_session else np.zeros(ctx.m)
        num = num + typical * vol
        den = den + vol
        self.st.a[ctx.rows], self.st.b[ctx.rows] = num, den
        if not in_session:
            return np.full(ctx.m, _NAN)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / den, _NAN)


_FACTORIES: dict[str, Callable[[list[float]], _Func]] = {
    "sma": lambda c: _Rolling(c, "mean"),
    "highest": lambda c: _Rolling(c, "max"),
    "lowest": lambda c: _Rolling(c, "min"),
    "ema": _Ema,
    "rsi": _Rsi,
    "macd": _Macd,
    "bollinger": _Bollinger,
    "atr": _Atr,
    "adx": _Adx,
    "true_range": _TrueRangeFunc,
    "roc": _Roc,
    "relative_volume": _RelativeVolume,
    "avg_dollar_volume": _AvgDollarVolume,
    "gap": _Gap,
    "abs": lambda c: _Pure(c, lambda s: np.abs(s[0])),
    # polars' min/max_horizontal skip nulls: fmin/fmax skip NaN.
    "min": lambda c: _Pure(c, lambda s: np.fmin(s[0], s[1])),
    "max": lambda c: _Pure(c, lambda s: np.fmax(s[0], s[1])),
    "minutes_since_open": _MinutesSinceOpen,
    "opening_range_high": lambda c: _OpeningRange(c, "high", "max"),
    "opening_range_low": lambda c: _OpeningRange(c, "low", "min"),
    "vwap": _Vwap,
}


# --- the program: an expression DAG as a list of steps -----------------------------------------


def _kleene_and(a: _Array, b: _Array) -> _Array:
    out = np.minimum(a, b)
    return np.where((a == 0.0) | (b == 0.0), 0.0, out)


def _kleene_or(a: _Array, b: _Array) -> _Array:
    out = np.maximum(a, b)
    return np.where((a == 1.0) | (b == 1.0), 1.0, out)


def _compare(op: str, a: _Array, b: _Array) -> _Array:
    # As the compiler compares: at 12 significant digits (falcon.strategy.snap).
    return compare(op, a, b)


@dataclass
class _Step:
    """One node of the DAG: how to compute it from earlier steps' values."""

    kind: str
    inputs: tuple[int, ...] = ()
    value: float = 0.0
    name: str = ""
    func: _Func | None = None
    lags: tuple[_Lag, ...] = ()


class _Program:
    """Expressions compiled to a list of steps; every step runs once per batch."""

    def __init__(self, params: dict[str, float]) -> None:
        self.params = params
        self.steps: list[_Step] = []
        self.keys: dict[str, int] = {}
        self.states: list[_State] = []
        self.session = False

    def add(self, node: Node) -> int:
        """The step index computing ``node`` (shared by every equal sub-expression)."""
        key = to_text(node, self.params)
        found = self.keys.get(key)
        if found is not None:
            return found
        step = self._build(node)
        self.steps.append(step)
        self.keys[key] = len(self.steps) - 1
        return len(self.steps) - 1

    def _lag(self, k: int) -> _Lag:
        lag = _Lag(k)
        self.states.append(lag)
        return lag

    def _build(self, node: Node) -> _Step:
        if isinstance(node, Num):
            return _Step("const", value=float(node.value))
        if isinstance(node, Param):
            return _Step("const", value=constant(node, self.params))
        if isinstance(node, Field):
            return _Step("field", name=node.name)
        if isinstance(node, Call):
            func, series, consts = call_parts(node, self.params)
            inputs = tuple(self.add(s) for s in series)
            impl = _FACTORIES[func.name](consts)
            self.states += impl.states
            self.session = self.session or func.minute_only
            return _Step("call", inputs, func=impl)
        if isinstance(node, Attr):
            return _Step("attr", (self.add(node.target),), name=node.name)
        if isinstance(node, Shift):
            bars = node.bars
            k = int(constant(bars, self.params)) if isinstance(bars, Param) else bars
            return _Step("shift", (self.add(node.target),), lags=(self._lag(k),))
        if isinstance(node, Neg):
            return _Step("neg", (self.add(node.operand),))
        if isinstance(node, Not):
            return _Step("not", (self.add(node.operand),))
        inputs = (self.add(node.left), self.add(node.right))
        lags: tuple[_Lag, ...] = ()
        if node.op.startswith("crosses_"):
            lags = (self._lag(1), self._lag(1))
        return _Step("op", inputs, name=node.op, lags=lags)

    def run(self, ctx: _Ctx) -> list[Value]:
        vals: list[Value] = []
        for st in self.steps:
            vals.append(self._eval(st, ctx, vals))
        return vals

    def _eval(self, st: _Step, ctx: _Ctx, vals: list[Value]) -> Value:
        kind = st.kind
        args = [vals[i] for i in st.inputs]
        if kind == "const":
            return np.full(ctx.m, st.value)
        if kind == "field":
            return ctx.cols[st.name]
        if kind == "call" and st.func is not None:
            return st.func.step(ctx, [_num(a) for a in args])
        if kind == "attr":
            target = args[0]
            if not isinstance(target, dict):  # pragma: no cover - analyze() checks fields
                raise TypeError(f"'.{st.name}' of a single-valued result")
            return target[st.name]
        a = _num(args[0])
        if kind == "shift":
            return st.lags[0].step(ctx, a)
        if kind == "neg":
            return -a
        if kind == "not":
            return 1.0 - a
        b = _num(args[1])
        op = st.name
        if op in ("+", "-", "*", "/"):
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                if op == "+":  # both at 12 significant digits (falcon.strategy.snap)
                    return subtract(a, -b)
                if op == "-":
                    return subtract(a, b)
                if op == "*":
                    return a * b
                return np.where(b != 0, a / np.where(b != 0, b, 1.0), _NAN)
        if op == "and":
            return _kleene_and(a, b)
        if op == "or":
            return _kleene_or(a, b)
        if op in ("crosses_above", "crosses_below"):
            pa, pb = st.lags[0].step(ctx, a), st.lags[1].step(ctx, b)
            if op == "crosses_above":
                return _kleene_and(_compare(">", a, b), _compare("<=", pa, pb))
            return _kleene_and(_compare("<", a, b), _compare(">=", pa, pb))
        return _compare(op, a, b)


def _num(v: Value) -> _Array:
    if isinstance(v, dict):  # pragma: no cover - analyze() rejects a struct where a number goes
        raise TypeError("a multi-valued result needs a field")
    return v


def _session_of(ts: datetime | int | np.integer) -> tuple[int, int]:
    """Minutes since 09:30 America/New_York and the local date's ordinal."""
    if isinstance(ts, datetime):
        moment = ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
    else:
        moment = datetime.fromtimestamp(int(ts) / 1e9, UTC)
    local = moment.astimezone(_NY)
    return local.hour * 60 + local.minute - _OPEN_MINUTE, local.date().toordinal()


class _Engine:
    """Ticker slots, capacity and the per-ticker bar count around a :class:`_Program`."""

    def __init__(self, program: _Program) -> None:
        self.program = program
        self.slot: dict[str, int] = {}
        self.cap = 0
        self.seen = np.zeros(0, dtype=np.int64)

    def _rows(self, tickers: Sequence[str]) -> _Array:
        slot = self.slot
        for t in tickers:
            if t not in slot:
                slot[t] = len(slot)
        if len(slot) > self.cap:
            cap = max(16, 2 * self.cap, len(slot))
            for state in self.program.states:
                state.grow(cap)
            seen = np.zeros(cap, dtype=np.int64)
            seen[: self.cap] = self.seen
            self.seen, self.cap = seen, cap
        return np.fromiter((slot[t] for t in tickers), dtype=np.int64, count=len(tickers))

    def step(self, ts: datetime | int | None, tickers: Sequence[str],
             cols: Mapping[str, Sequence[float] | _Array]) -> list[Value]:
        rows = self._rows(tickers)
        if len(np.unique(rows)) != len(rows):
            raise ValueError("a batch holds at most one bar per ticker")
        arrays = {f: np.asarray(cols[f], dtype=np.float64) for f in _FIELDS if f in cols}
        ctx = _Ctx(rows=rows, pos=self.seen[rows], cols=arrays)
        if self.program.session:
            if ts is None:
                raise ValueError("minute-session functions need the batch's timestamp")
            ctx.mso, ctx.session = _session_of(ts)
        out = self.program.run(ctx)
        self.seen[rows] += 1
        return out


# --- public API --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchSignals:
    """The signals of one batch, one entry per ticker given (in that order)."""

    tickers: tuple[str, ...]
    entry_long: _Array
    exit_long: _Array
    entry_short: _Array
    exit_short: _Array
    atr: _Array | None = None  # NaN before its first value


class SignalStream:
    """A strategy's four signals (and its sizing ATR), bar batch by bar batch."""

    def __init__(self, spec: StrategySpec) -> None:
        program = _Program(dict(spec.params))
        self._rules = {c: program.add(spec.rules[c]) for c in _SIGNALS if c in spec.rules}
        self._atr = None
        if spec.atr_period is not None:
            self._atr = program.add(Call("atr", (Num(spec.atr_period),)))
        self._engine = _Engine(program)
        self.spec = spec

    def update(
        self, ts: datetime | int | None, tickers: Sequence[str], *,
        open: Sequence[float] | _Array, high: Sequence[float] | _Array,
        low: Sequence[float] | _Array, close: Sequence[float] | _Array,
        volume: Sequence[float] | _Array,
    ) -> BatchSignals:
        """Advance every ticker of the batch by its bar; the signals on those bars.

        ``ts`` (an aware datetime, naive meaning UTC, or Unix nanoseconds) is the batch's bar start;
        only strategies with minute-session functions need it.
        """
        cols = {"open": open, "high": high, "low": low, "close": close, "volume": volume}
        vals = self._engine.step(ts, tickers, cols)
        m = len(tickers)
        flags: dict[str, _Array] = {}
        for column in _SIGNALS:
            i = self._rules.get(column)
            flags[column] = (_num(vals[i]) == 1.0) if i is not None else np.zeros(m, dtype=bool)
        atr = _num(vals[self._atr]) if self._atr is not None else None
        return BatchSignals(tuple(tickers), flags["entry_long"], flags["exit_long"],
                            flags["entry_short"], flags["exit_short"], atr)


class ExpressionStream:
    """Named loose expressions (alert conditions, factors), batch by batch.

    The streaming twin of :func:`falcon.strategy.compile_expressions`: each value is a float
    array, NaN for null; a condition is 1.0 (true), 0.0 (false) or NaN.
    """

    def __init__(self, exprs: Mapping[str, str], *, params: dict[str, float] | None = None,
                 timeframe: str = "day") -> None:
        program = _Program(dict(params or {}))
        self._outputs: dict[str, int] = {}
        for name, text in exprs.items():
            node = parse(text)
            analyze(node, program.params, timeframe)
            self._outputs[name] = program.add(node)
        self._engine = _Engine(program)

    def update(self, ts: datetime | int | None, tickers: Sequence[str],
               bars: Mapping[str, Sequence[float] | _Array]) -> dict[str, _Array]:
        """Advance the tickers by one bar each (``bars``: open, high, low, close, volume)."""
        vals = self._engine.step(ts, tickers, bars)
        return {name: _num(vals[i]) for name, i in self._outputs.items()}
