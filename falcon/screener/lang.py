"""The screener's view of the strategy expression language (:mod:`falcon.strategy`).

Profiles use the same expressions as strategy specs (``rsi(close, 14) < 30``,
``close > highest(close, 20)[1]``, ``bollinger(close, 20, 2).lower``,
``ema(close, 12) crosses_above ema(close, 26)``). The strategy package parses them into an AST,
type-checks them against its whitelist and compiles them to polars; this module adapts that to
what a screen needs: a check with a message, named columns added to a frame of many tickers in
one pass, the two sides of a comparison (for the reasons shown with a pick) and how many bars of
history an expression needs.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from falcon.strategy.expr import BinOp, ExprError, parse, to_text
from falcon.strategy.functions import analyze

__all__ = ["add_columns", "check", "comparison_word", "lookback", "split_comparison"]

_COMPARISONS = {">": "above", ">=": "at or above", "<": "below", "<=": "at or below",
                "==": "equal to", "!=": "not equal to", "crosses_above": "crossed above",
                "crosses_below": "crossed below"}


def check(text: str) -> str | None:
    """None when ``text`` is a valid daily expression, else what is wrong with it."""
    try:
        analyze(parse(text), {}, "day")
    except ExprError as exc:
        return str(exc)
    return None


def lookback(text: str) -> int:
    """Bars of history before ``text`` has its first value (nested windows add up)."""
    return int(analyze(parse(text), {}, "day").lookback)


def split_comparison(text: str) -> tuple[str, str, str] | None:
    """(left, operator, right) when ``text`` is one comparison, else None.

    ``close > highest(close, 20)[1]`` gives ``("close", ">", "highest(close, 20)[1]")``; a
    condition joined with ``and``/``or`` gives None (its reason needs a template).
    """
    try:
        node = parse(text)
    except ExprError:
        return None
    if isinstance(node, BinOp) and node.op in _COMPARISONS:
        return to_text(node.left), node.op, to_text(node.right)
    return None


def comparison_word(op: str) -> str:
    """``>`` -> ``above`` and so on, for reasons in words."""
    return _COMPARISONS.get(op, op)


def add_columns(bars: pl.LazyFrame, exprs: Mapping[str, str], *,
                by: str = "ticker") -> pl.LazyFrame:
    """``bars`` with one column per named expression, computed per ``by`` group in one pass.

    Rows must be contiguous per group and in time order. Function calls shared by several
    expressions are computed once (the strategy compiler hoists them into staged columns).
    """
    from falcon.strategy.compile import compile_expressions
    from falcon.strategy.functions import BY

    if by != BY:
        raise ValueError(f"the strategy compiler groups by {BY!r}, not {by!r}")
    return compile_expressions(bars, dict(exprs))
