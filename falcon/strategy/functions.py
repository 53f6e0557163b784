"""The whitelist of rule functions: their arguments, result, look-back and polars builder.

A name that is not in :data:`FUNCTIONS` (or :data:`FIELDS`) is a validation error; there is no other
way for a rule to reach code. ``analyze`` type-checks an AST and works out how many bars of history
it needs before its first value (its look-back, TA-Lib's word).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from falcon import indicators as ind
from falcon.strategy.expr import (
    FIELDS,
    Attr,
    Call,
    ExprError,
    Field,
    Neg,
    Node,
    Not,
    Num,
    Param,
    Shift,
)

__all__ = ["FUNCTIONS", "Analysis", "Func", "analyze", "constant"]

BY = "ticker"
# Columns the compiler adds for minute strategies (see compile.py).
MSO = "__minutes_since_open"
SESSION = "__session_date"

Builder = Callable[[list[pl.Expr], list[float]], pl.Expr]


@dataclass(frozen=True)
class Arg:
    """One argument: a ``series`` (any numeric expression), or an ``int``/``num`` constant."""

    name: str
    kind: str
    default: float | None = None
    minimum: float | None = None


@dataclass(frozen=True)
class Func:
    """A whitelisted function."""

    name: str
    args: tuple[Arg, ...]
    build: Builder
    lookback: Callable[[list[float]], int] = lambda c: 0
    fields: tuple[str, ...] | None = None
    ohlc: bool = False  # high, low, close are implicit, or may be given first (TA-Lib style)
    minute_only: bool = False
    doc: str = ""


def _int(n: float) -> int:
    return int(n)


_OHLC = [pl.col("high"), pl.col("low"), pl.col("close")]


def _session_window(e: pl.Expr) -> pl.Expr:
    return e.over([BY, SESSION])


def _opening_range(col: str, how: str) -> Builder:
    def build(s: list[pl.Expr], c: list[float]) -> pl.Expr:
        minutes = _int(c[0])
        mso = pl.col(MSO)
        in_range = (mso >= 0) & (mso < minutes)
        agg = pl.col(col).filter(in_range)
        value = _session_window(agg.max() if how == "max" else agg.min())
        # Only once the range is complete: before that its high is still being made (look-ahead).
        return pl.when(mso >= minutes).then(value)

    return build


def _vwap(s: list[pl.Expr], c: list[float]) -> pl.Expr:
    in_session = pl.col(MSO) >= 0
    typical = (pl.col("high") + pl.col("low") + pl.col("close")) / 3.0
    vol = pl.when(in_session).then(pl.col("volume")).otherwise(0.0)
    num = _session_window((typical * vol).cum_sum())
    den = _session_window(vol.cum_sum())
    return pl.when(in_session & (den > 0)).then(num / den)


_S, _N = "series", "int"

FUNCTIONS: dict[str, Func] = {f.name: f for f in [
    Func("sma", (Arg("x", _S), Arg("n", _N, minimum=1)),
         lambda s, c: ind.sma(s[0], _int(c[0]), by=BY), lambda c: _int(c[0]) - 1,
         doc="simple moving average"),
    Func("ema", (Arg("x", _S), Arg("n", _N, minimum=1)),
         lambda s, c: ind.ema(s[0], _int(c[0]), by=BY), lambda c: _int(c[0]) - 1,
         doc="exponential moving average (seeded with the SMA)"),
    Func("rsi", (Arg("x", _S), Arg("n", _N, 14, 1)),
         lambda s, c: ind.rsi(s[0], _int(c[0]), by=BY), lambda c: _int(c[0]),
         doc="relative strength index, 0..100 (Wilder)"),
    Func("macd", (Arg("x", _S), Arg("fast", _N, 12, 1), Arg("slow", _N, 26, 1),
                  Arg("signal", _N, 9, 1)),
         lambda s, c: ind.macd(s[0], _int(c[0]), _int(c[1]), _int(c[2]), by=BY),
         lambda c: max(_int(c[0]), _int(c[1])) + _int(c[2]) - 2,
         fields=("macd", "signal", "hist"), doc="MACD line, signal line and histogram"),
    Func("bollinger", (Arg("x", _S), Arg("n", _N, 20, 1), Arg("k", "num", 2.0, 0.0)),
         lambda s, c: ind.bollinger(s[0], _int(c[0]), c[1], by=BY), lambda c: _int(c[0]) - 1,
         fields=("upper", "middle", "lower"), doc="Bollinger bands (population std)"),
    Func("atr", (Arg("n", _N, 14, 1),),
         lambda s, c: ind.atr(s[0], s[1], s[2], _int(c[0]), by=BY), lambda c: _int(c[0]),
         ohlc=True,
         doc="average true range (Wilder)"),
    Func("adx", (Arg("n", _N, 14, 2),),
         lambda s, c: ind.adx(s[0], s[1], s[2], _int(c[0]), by=BY),
         lambda c: 2 * _int(c[0]) - 1, ohlc=True,
         doc="average directional index, 0..100"),
    Func("true_range", (), lambda s, c: ind.true_range(s[0], s[1], s[2], by=BY), lambda c: 1,
         ohlc=True,
         doc="true range"),
    Func("roc", (Arg("x", _S), Arg("n", _N, 10, 1)),
         lambda s, c: ind.roc(s[0], _int(c[0]), by=BY), lambda c: _int(c[0]),
         doc="rate of change in percent over n bars"),
    Func("highest", (Arg("x", _S), Arg("n", _N, minimum=1)),
         lambda s, c: ind.highest(s[0], _int(c[0]), by=BY), lambda c: _int(c[0]) - 1,
         doc="highest value of the last n bars, this one included (use [1] to exclude it)"),
    Func("lowest", (Arg("x", _S), Arg("n", _N, minimum=1)),
         lambda s, c: ind.lowest(s[0], _int(c[0]), by=BY), lambda c: _int(c[0]) - 1,
         doc="lowest value of the last n bars, this one included"),
    Func("relative_volume", (Arg("n", _N, 20, 1),),
         lambda s, c: ind.relative_volume("volume", _int(c[0]), by=BY), lambda c: _int(c[0]),
         doc="volume over the average volume of the n previous bars"),
    Func("avg_dollar_volume", (Arg("n", _N, 20, 1),),
         lambda s, c: ind.avg_dollar_volume("close", "volume", _int(c[0]), by=BY),
         lambda c: _int(c[0]) - 1, doc="average of close * volume over n bars"),
    Func("gap", (), lambda s, c: ind.gap("open", "close", by=BY), lambda c: 1,
         doc="open versus the previous close, in percent"),
    Func("abs", (Arg("x", _S),), lambda s, c: s[0].abs(), doc="absolute value"),
    Func("min", (Arg("a", _S), Arg("b", _S)), lambda s, c: pl.min_horizontal(s[0], s[1]),
         doc="smaller of two values"),
    Func("max", (Arg("a", _S), Arg("b", _S)), lambda s, c: pl.max_horizontal(s[0], s[1]),
         doc="larger of two values"),
    Func("minutes_since_open", (), lambda s, c: pl.col(MSO), minute_only=True,
         doc="minutes from 09:30 America/New_York to the bar's start (negative before)"),
    Func("opening_range_high", (Arg("minutes", _N, 30, 1),), _opening_range("high", "max"),
         minute_only=True,
         doc="high of the session's first `minutes` minutes; null until that range is over"),
    Func("opening_range_low", (Arg("minutes", _N, 30, 1),), _opening_range("low", "min"),
         minute_only=True,
         doc="low of the session's first `minutes` minutes; null until that range is over"),
    Func("vwap", (), _vwap, minute_only=True,
         doc="the session's volume-weighted average price since 09:30"),
]}


@dataclass
class Analysis:
    """What ``analyze`` learnt about an expression."""

    kind: str  # "num", "bool" or "struct"
    lookback: int = 0
    fields: tuple[str, ...] = ()
    params: set[str] = field(default_factory=set)
    session: bool = False  # uses the minute-session columns


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def constant(node: Node, params: dict[str, float]) -> float:
    """The value of a constant argument: a number, ``$param`` or a negated one."""
    if isinstance(node, Num):
        return float(node.value)
    if isinstance(node, Param):
        if node.name not in params:
            raise ExprError(f"unknown parameter ${node.name}{_suggest(node.name, list(params))}")
        return float(params[node.name])
    if isinstance(node, Neg):
        return -constant(node.operand, params)
    raise ExprError("expected a number or a $parameter here")


def call_parts(node: Call, params: dict[str, float]) -> tuple[Func, list[Node], list[float]]:
    """The function, its series arguments and its constant arguments (defaults filled in)."""
    func = FUNCTIONS.get(node.name)
    if func is None:
        names = list(FUNCTIONS) + list(FIELDS)
        raise ExprError(f"unknown function {node.name!r}{_suggest(node.name, names)}")
    args = list(node.args)
    series: list[Node] = []
    if func.ohlc:
        if len(args) >= 3:
            series, args = args[:3], args[3:]
        else:
            series = [Field("high"), Field("low"), Field("close")]
    consts: list[float] = []
    spec = list(func.args)
    if len(args) > len(spec):
        raise ExprError(f"{func.name}() takes at most {len(spec)} arguments, got {len(args)}")
    for i, arg in enumerate(spec):
        if i >= len(args):
            if arg.default is None:
                raise ExprError(f"{func.name}() needs its {arg.name!r} argument")
            consts.append(arg.default)
            continue
        if arg.kind == "series":
            series.append(args[i])
            continue
        value = constant(args[i], params)
        if arg.kind == "int" and value != int(value):
            raise ExprError(f"{func.name}(): {arg.name} must be a whole number, got {value:g}")
        if arg.minimum is not None and value < arg.minimum:
            raise ExprError(f"{func.name}(): {arg.name} must be >= {arg.minimum:g}, got {value:g}")
        consts.append(value)
    return func, series, consts


def analyze(node: Node, params: dict[str, float], timeframe: str = "day") -> Analysis:
    """Type-check ``node`` against the whitelist and compute its look-back in bars.

    Raises :class:`ExprError` on an unknown name, a wrong argument, a type mismatch, or a
    minute-only function in a daily strategy.
    """
    if isinstance(node, Num):
        return Analysis("num")
    if isinstance(node, Param):
        constant(node, params)
        return Analysis("num", params={node.name})
    if isinstance(node, Field):
        if node.name not in FIELDS:
            known = list(FIELDS) + list(FUNCTIONS)
            hint = _suggest(node.name, known)
            if node.name in FUNCTIONS:
                hint = f" (it is a function: write {node.name}(...))"
            raise ExprError(f"unknown name {node.name!r}{hint}; fields are {', '.join(FIELDS)}")
        return Analysis("num")
    if isinstance(node, Call):
        func, series, consts = call_parts(node, params)
        if func.minute_only and timeframe != "minute":
            raise ExprError(f"{func.name}() needs minute bars (timeframe: minute)")
        out = Analysis("struct" if func.fields else "num", fields=func.fields or (),
                       session=func.minute_only)
        inner = 0
        for arg in series:
            sub = _merge(out, analyze(arg, params, timeframe))
            if sub.kind != "num":
                raise ExprError(f"{func.name}(): expected a number series, got a {_kind(sub)}")
            inner = max(inner, sub.lookback)
        for arg in node.args:
            if isinstance(arg, Param):
                out.params.add(arg.name)
        out.lookback = func.lookback(consts) + inner
        return out
    if isinstance(node, Attr):
        sub = analyze(node.target, params, timeframe)
        if sub.kind != "struct":
            raise ExprError(f"'.{node.name}': only macd() and bollinger() results have fields")
        if node.name not in sub.fields:
            raise ExprError(f"unknown field '.{node.name}'; choose one of {', '.join(sub.fields)}")
        return Analysis("num", sub.lookback, params=sub.params, session=sub.session)
    if isinstance(node, Shift):
        sub = analyze(node.target, params, timeframe)
        _need(sub, ("num", "bool"), "[k]")
        bars = node.bars if isinstance(node.bars, int) else constant(node.bars, params)
        if bars < 0 or bars != int(bars):
            raise ExprError(f"bars ago must be a whole number >= 0, got {bars:g}")
        if isinstance(node.bars, Param):
            sub.params.add(node.bars.name)
        sub.lookback += int(bars)
        return sub
    if isinstance(node, Neg):
        sub = analyze(node.operand, params, timeframe)
        _need(sub, ("num",), "-")
        return sub
    if isinstance(node, Not):
        sub = analyze(node.operand, params, timeframe)
        _need(sub, ("bool",), "not")
        return sub
    left = analyze(node.left, params, timeframe)
    right = analyze(node.right, params, timeframe)
    if node.op in ("and", "or"):
        want, result = "bool", "bool"
    elif node.op in ("+", "-", "*", "/"):
        want, result = "num", "num"
    else:
        want, result = "num", "bool"
    _need(left, (want,), node.op)
    _need(right, (want,), node.op)
    out = Analysis(result, max(left.lookback, right.lookback))
    _merge(out, left)
    _merge(out, right)
    if node.op.startswith("crosses_"):
        out.lookback += 1
    return out


def _merge(into: Analysis, sub: Analysis) -> Analysis:
    into.params |= sub.params
    into.session = into.session or sub.session
    return sub


def _kind(a: Analysis) -> str:
    if a.kind == "struct":
        return f"multi-valued result (pick a field: {', '.join('.' + f for f in a.fields)})"
    return {"num": "number", "bool": "true/false condition"}[a.kind]


def _need(a: Analysis, kinds: tuple[str, ...], where: str) -> None:
    if a.kind not in kinds:
        want = " or ".join({"num": "a number", "bool": "a condition"}[k] for k in kinds)
        raise ExprError(f"{where!r} needs {want}, got a {_kind(a)}")
