"""Comparisons in rules are made on values rounded to 12 significant digits.

Two engines evaluate the rule language: the compiler (polars, a whole history at once, for the
backtester and the screener) and the stream (numpy, one bar at a time, for the paper trader and
alerts). They compute the same indicators in a different order -- a rolling sum over a whole
column against a running sum per ticker -- so their values differ in the last bits. Where the
two sides of a comparison are equal in exact arithmetic, those bits decide it: on a stretch of
unchanged prices (common in minute bars of thinly traded stocks) ``sma(close, 5) crosses_above
sma(close, 20)`` fired now and then in each engine, on different bars, and ``close >
sma(close, 20)`` held on some bars and not on others.

So every comparison (``<``, ``<=``, ``>``, ``>=``, ``==``, ``!=``, and the two bars of
``crosses_above`` / ``crosses_below``) is made as if both operands were first rounded to
:data:`SIGNIFICANT` decimal digits by :func:`snap`, by :func:`compare`: the one function both
engines call (the compiler through ``map_batches``), so the result is bit for bit the same. A
price has far fewer digits: an average of equal prices comes back to that price exactly, and two
values are told apart whenever they differ by more than a few parts in 10^12 -- far below a cent
on any price.

A comparison written as a difference (``close - sma(close, 20) > 0``) meets the same last bits
in the difference itself, which is tiny where the operands are equal and keeps no trace of their
size. So a sum or difference smaller than :data:`CANCEL` of its larger operand is zero
(:func:`subtract`, and its same rule in the compiler: plain arithmetic, correctly rounded alike
in numpy and polars).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["CANCEL", "SIGNIFICANT", "compare", "snap", "subtract"]

SIGNIFICANT = 12

# 10**0 .. 10**22: the powers of ten a double holds exactly (5**22 < 2**53), so a value is
# scaled and brought back with one correctly rounded operation each.
_POW10 = np.array([10.0 ** k for k in range(23)])
# Rounded: values from 1e-11 (scaled up by at most 10**22) to below 1e33 (down by 10**21);
# others, far from any price or indicator a rule compares, are compared as they are.
_LOW, _HIGH = SIGNIFICANT - 1 - 22, 22 + SIGNIFICANT - 1 - 1


def snap(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``x`` rounded to :data:`SIGNIFICANT` significant decimal digits (half away from zero),
    as the double nearest that decimal; NaN, infinities, zero, and magnitudes below 1e-11 or
    from 1e33 up unchanged. Monotone: ``x <= y`` gives ``snap(x) <= snap(y)``."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mag = np.abs(x)
        exponent = np.floor(np.log10(mag))  # the power of ten of the first digit
        ok = np.isfinite(exponent) & (exponent >= _LOW) & (exponent <= _HIGH)
        # The scale that makes the value an integer of SIGNIFICANT digits: 10**k.
        k = np.where(ok, SIGNIFICANT - 1 - exponent, 0.0).astype(np.int64)
        power = _POW10[np.abs(k)]
        scaled = np.where(k >= 0, mag * power, mag / power)
        rounded = np.floor(scaled + 0.5)
        back = np.where(k >= 0, rounded / power, rounded * power)
        out = np.where(ok, np.copysign(back, x), x)
    return np.asarray(out, dtype=np.float64)


_OPS = {
    "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
    "==": np.equal, "!=": np.not_equal,
}
# snap moves a value by at most half a unit of its 12th digit, 5e-12 of it (plus a rounding):
# two values further apart than 1.001e-11 of the larger stay apart, in the same order; and a
# pair that close is within 1.01e-11 of either value (one product fewer to find them).
_NEAR = 1.01e-11


def compare(op: str, a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """``a op b`` on the snapped values: 1.0 or 0.0, NaN where either side is NaN (no value).

    Only the pairs near enough for rounding to matter are snapped (snap keeps order, so it can
    only turn a strict inequality into an equality); over a whole history that is a few pairs,
    where snapping every value cost more than the rest of a backtest.
    """
    x, y = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    fn = _OPS[op]
    with np.errstate(invalid="ignore", over="ignore"):
        out = fn(x, y)
        diff = np.abs(x - y)
        near = (diff <= _NEAR * np.abs(x)) & (diff != 0)
        if near.any():
            idx = np.flatnonzero(near)
            out = np.array(out)  # a writable copy (broadcast results may be read-only views)
            out[idx] = fn(snap(x[idx]), snap(y[idx]))
    return np.where(np.isnan(x) | np.isnan(y), np.nan, out.astype(np.float64))


CANCEL = 1e-11


def subtract(a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """``a - b``, zero where it is within :data:`CANCEL` of the larger operand (``a + b`` is
    ``subtract(a, -b)``); NaN where either side is NaN."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = x - y
        tiny = np.abs(diff) <= CANCEL * np.maximum(np.abs(x), np.abs(y))
    return np.where(tiny, 0.0, diff)

