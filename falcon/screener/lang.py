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

import functools
from collections.abc import Mapping

import polars as pl

from falcon.strategy.compile import StagedExpressions, compile_expressions, compile_staged
from falcon.strategy.expr import (
    FIELDS,
    Attr,
    BinOp,
    Call,
    ExprError,
    Field,
    Neg,
    Node,
    Not,
    Shift,
    parse,
    to_text,
)
from falcon.strategy.functions import BY, FUNCTIONS, analyze

__all__ = ["add_columns", "check", "comparison_word", "fields", "lookback", "recursive",
           "split_comparison", "staged"]

_COMPARISONS = {">": "above", ">=": "at or above", "<": "below", "<=": "at or below",
                "==": "equal to", "!=": "not equal to", "crosses_above": "crossed above",
                "crosses_below": "crossed below"}


@functools.lru_cache(maxsize=1024)
def _parsed(text: str) -> Node:
    # A screen asks several questions of each expression (look-back, fields, sides); the AST
    # is immutable, so one parse serves them all.
    return parse(text)


def check(text: str) -> str | None:
    """None when ``text`` is a valid daily expression, else what is wrong with it."""
    try:
        analyze(parse(text), {}, "day")
    except ExprError as exc:
        return str(exc)
    return None


def lookback(text: str) -> int:
    """Bars of history before ``text`` has its first value (nested windows add up)."""
    return int(analyze(_parsed(text), {}, "day").lookback)


#: Bar fields a function reads without naming them (``atr(14)`` reads high, low and close).
_IMPLICIT_FIELDS = {
    "atr": ("high", "low", "close"), "adx": ("high", "low", "close"),
    "true_range": ("high", "low", "close"), "relative_volume": ("volume",),
    "avg_dollar_volume": ("close", "volume"), "gap": ("open", "close"),
}


#: Functions whose value depends on every bar since the series began (EMA and Wilder smoothing):
#: how much history they get changes their value, unlike windows of a fixed length.
RECURSIVE = frozenset({"ema", "rsi", "macd", "atr", "adx"})


def recursive(text: str) -> bool:
    """True when ``text`` calls a recursive smoothing (its value depends on its start)."""
    return bool(_calls(_parsed(text)) & RECURSIVE)


def _calls(node: Node) -> set[str]:
    if isinstance(node, Call):
        return {node.name}.union(*(_calls(a) for a in node.args))
    if isinstance(node, Attr | Shift):
        return _calls(node.target)
    if isinstance(node, Neg | Not):
        return _calls(node.operand)
    if isinstance(node, BinOp):
        return _calls(node.left) | _calls(node.right)
    return set()


def fields(text: str) -> set[str]:
    """The bar fields (open, high, low, close, volume) that ``text`` reads.

    A screen reads only these columns of the store for the expression. A function this module
    does not know the inputs of counts as reading every field: reading too much is only slower.
    """
    out: set[str] = set()

    def walk(node: Node) -> None:
        if isinstance(node, Field):
            out.add(node.name)
        elif isinstance(node, Call):
            func = FUNCTIONS.get(node.name)
            if func is not None and func.ohlc and len(node.args) < 3:
                out.update(("high", "low", "close"))
            if node.name in _IMPLICIT_FIELDS:
                out.update(_IMPLICIT_FIELDS[node.name])
            elif func is None or func.minute_only:
                out.update(FIELDS)
            for arg in node.args:
                walk(arg)
        elif isinstance(node, Attr | Shift):
            walk(node.target)
        elif isinstance(node, Neg | Not):
            walk(node.operand)
        elif isinstance(node, BinOp):
            walk(node.left)
            walk(node.right)

    walk(_parsed(text))
    return out


def split_comparison(text: str) -> tuple[str, str, str] | None:
    """(left, operator, right) when ``text`` is one comparison, else None.

    ``close > highest(close, 20)[1]`` gives ``("close", ">", "highest(close, 20)[1]")``; a
    condition joined with ``and``/``or`` gives None (its reason needs a template).
    """
    try:
        node = _parsed(text)
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
    if by != BY:
        raise ValueError(f"the strategy compiler groups by {BY!r}, not {by!r}")
    return compile_expressions(bars, dict(exprs))


def staged(exprs: Mapping[str, str]) -> StagedExpressions:
    """Named daily expressions compiled in two steps: indicator columns, then the rules.

    The screen computes the indicators over each ticker's history and the rules (comparisons,
    arithmetic, factor values) only on the last rows of each ticker (see
    :class:`falcon.strategy.compile.StagedExpressions`).
    """
    return compile_staged(dict(exprs))
