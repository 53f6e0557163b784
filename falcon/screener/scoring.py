"""Scoring, levels and reasons: what turns a screen's candidates into ranked, actionable picks.

Factors are normalised *across the day's candidates* (the tickers that passed the universe and
every condition), so that a score says "better than the others today", not "big in absolute
terms":

- ``rank``: percentile rank in (0, 1] (ties share their average rank; one candidate scores 1);
- ``zscore``: (x - mean) / std, clipped to ``±clip`` (0 when every candidate has the same value);
- ``none``: the raw value (for factors that are already on a common scale).

A missing factor value (too little history) normalises to 0: it neither helps nor hurts more than
the lowest-ranked candidate. The score is the weighted sum; ties are broken by ticker so that the
same data always gives the same order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import polars as pl

from falcon.screener.profiles import Factor, Levels

__all__ = ["format_number", "levels", "normalize", "render_reason", "score"]


def normalize(values: pl.Series, method: str, clip: float = 3.0) -> pl.Series:
    """``values`` normalised across candidates by ``method`` (rank | zscore | none); nulls -> 0."""
    x = values.cast(pl.Float64)
    x = x.fill_nan(None)
    if method == "rank":
        valid_n = x.drop_nulls().len()
        out = x.rank(method="average") / valid_n if valid_n else x * 0.0
    elif method == "zscore":
        valid = x.drop_nulls()
        mean = cast(float, valid.mean()) if valid.len() else 0.0
        std = cast(float, valid.std(ddof=0)) if valid.len() else 0.0
        # All candidates alike (or one alone): no one stands out, everyone scores 0.
        flat = not std or not math.isfinite(std)
        out = x * 0.0 if flat else ((x - mean) / std).clip(-clip, clip)
    elif method == "none":
        out = x
    else:  # pragma: no cover - the profile schema allows only the three above
        raise ValueError(f"unknown normalisation {method!r}")
    return out.fill_null(0.0).alias(values.name)


def score(candidates: pl.DataFrame, factors: Sequence[Factor],
          columns: Mapping[str, str]) -> pl.DataFrame:
    """``candidates`` with ``score`` and ``n_<factor>`` columns, best first.

    ``columns`` maps each factor name to the column holding its raw value.
    """
    if candidates.is_empty():
        return candidates.with_columns(score=pl.lit(0.0))
    total = pl.Series("score", [0.0] * candidates.height)
    normalised = []
    for f in factors:
        n = normalize(candidates[columns[f.name]], f.normalize, f.clip).alias(f"n_{f.name}")
        normalised.append(n)
        total = total + n * f.weight
    out = candidates.with_columns(*normalised, total.round(6).alias("score"))
    return out.sort(["score", "ticker"], descending=[True, False])


def levels(close: float, atr: float | None, lv: Levels) -> dict[str, float | None]:
    """Entry range, stop and target for a long pick from the close and the ATR."""
    out: dict[str, float | None] = {"entry_low": None, "entry_high": None, "stop": None,
                                    "target": None}
    usable_atr = atr is not None and math.isfinite(atr) and atr > 0
    if lv.entry_pct is not None:
        band = close * lv.entry_pct / 100.0
        out["entry_low"], out["entry_high"] = close - band, close + band
    elif lv.entry_atr is not None and usable_atr:
        out["entry_low"], out["entry_high"] = close - lv.entry_atr * atr, close + lv.entry_atr * atr  # type: ignore[operator]
    if usable_atr:
        stop = close - lv.stop_atr * atr  # type: ignore[operator]
        # A stop at or below zero is no stop; a long position cannot lose more than everything.
        out["stop"] = stop if stop > 0 else None
        if lv.target_r is not None and out["stop"] is not None:
            out["target"] = close + lv.target_r * (close - stop)
        elif lv.target_atr is not None:
            out["target"] = close + lv.target_atr * atr  # type: ignore[operator]
    if out["entry_low"] is not None and out["entry_low"] <= 0:
        out["entry_low"] = min(close, out["entry_high"] or close) * 0.5
    return {k: (round(v, 4) if v is not None else None) for k, v in out.items()}


def format_number(value: Any) -> str:
    """A number as a person would write it in a reason: 182.3, 2.3, 0.042, 5,000,000."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(x):
        return "n/a"
    if abs(x) >= 10_000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        text = f"{x:.1f}"
    elif abs(x) >= 0.1:
        text = f"{x:.2f}"
    else:
        text = f"{x:.4f}"
    text = text.rstrip("0").rstrip(".") if "." in text else text
    return "0" if text in ("-0", "") else text


class _Num:
    """A value in a reason template: ``{left}`` formats nicely, ``{left:.1f}`` as asked."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __format__(self, spec: str) -> str:
        if not spec or self.value is None:
            return format_number(self.value)
        try:
            return format(float(self.value), spec)
        except (TypeError, ValueError):
            return str(self.value)


def render_reason(template: str | None, expr: str, sides: tuple[str, str, str] | None,
                  left: Any, right: Any, factors: Mapping[str, Any], word: str) -> str:
    """The reason a condition gives for a pick, from its template or from the expression."""
    if template:
        values = {name: _Num(v) for name, v in factors.items()}
        values["left"], values["right"] = _Num(left), _Num(right)
        try:
            return template.format_map(values)
        except (KeyError, ValueError, IndexError):
            return template  # validated at load; a bad one must not lose the pick
    if sides is not None:
        lhs, _op, rhs = sides
        return f"{lhs} {format_number(left)} {word} {rhs} {format_number(right)}"
    return f"{expr} holds"
