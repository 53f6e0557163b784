"""Compile a validated strategy's rules to polars: boolean signal columns per bar.

Each distinct function call in the rules becomes one temporary column, computed once per frame
(with ``by="ticker"``, in one pass over every ticker) and shared by every rule that uses it; the
rules themselves are then cheap element-wise expressions over those columns. A call whose
arguments contain another call is computed in a later stage than that call.

Every operation looks only at the current and earlier bars of the same ticker (shifts are masked at
ticker boundaries), so a row's signals never depend on later rows: ``falcon.strategy.lookahead``
checks that empirically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from falcon import indicators as ind
from falcon.errors import DataError
from falcon.strategy.expr import (
    Attr,
    BinOp,
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
from falcon.strategy.functions import BY, MSO, SESSION, analyze, call_parts, constant
from falcon.strategy.snap import CANCEL, compare

if TYPE_CHECKING:
    from falcon.strategy.spec import StrategySpec

__all__ = ["SIGNAL_COLUMNS", "StagedExpressions", "compile_signals", "compile_staged"]

SIGNAL_COLUMNS = ("entry_long", "exit_long", "entry_short", "exit_short")
REQUIRED_COLUMNS = ("ticker", "ts", "open", "high", "low", "close", "volume")
_POS = "__pos"
_EXCHANGE_TZ = "America/New_York"
_OPEN_MINUTE = 9 * 60 + 30


class _Compiler:
    def __init__(self, params: dict[str, float]) -> None:
        self.params = params
        self.columns: dict[str, str] = {}  # canonical call text -> temp column
        self.stages: dict[int, dict[str, pl.Expr]] = {}
        self.level: dict[str, int] = {}

    def hoist(self, node: Call) -> tuple[pl.Expr, int]:
        key = to_text(node, self.params)
        if key not in self.columns:
            func, series, consts = call_parts(node, self.params)
            compiled = [self.expr(s) for s in series]
            level = 1 + max((lvl for _, lvl in compiled), default=0)
            name = f"__f{len(self.columns)}"
            self.stages.setdefault(level, {})[name] = func.build([e for e, _ in compiled], consts)
            self.columns[key] = name
            self.level[name] = level
        name = self.columns[key]
        return pl.col(name), self.level[name]

    def expr(self, node: Node) -> tuple[pl.Expr, int]:
        """The polars expression of ``node`` and the stage it needs (0 = the bars themselves)."""
        if isinstance(node, Num):
            return pl.lit(float(node.value), dtype=pl.Float64), 0
        if isinstance(node, Param):
            return pl.lit(constant(node, self.params), dtype=pl.Float64), 0
        if isinstance(node, Field):
            return pl.col(node.name).cast(pl.Float64), 0
        if isinstance(node, Call):
            return self.hoist(node)
        if isinstance(node, Attr):
            target, level = self.expr(node.target)
            return target.struct.field(node.name), level
        if isinstance(node, Shift):
            target, level = self.expr(node.target)
            bars = node.bars
            if isinstance(bars, Param):
                bars = int(constant(bars, self.params))
            return _shift(target, bars), level
        if isinstance(node, Neg):
            operand, level = self.expr(node.operand)
            return -operand, level
        if isinstance(node, Not):
            operand, level = self.expr(node.operand)
            return ~operand, level
        return self.binop(node)

    def binop(self, node: BinOp) -> tuple[pl.Expr, int]:
        (a, la), (b, lb) = self.expr(node.left), self.expr(node.right)
        level = max(la, lb)
        op = node.op
        out: pl.Expr
        if op == "+":
            out = _subtract(a, -b)
        elif op == "-":
            out = _subtract(a, b)
        elif op == "*":
            out = a * b
        elif op == "/":
            # x/0 is no number: null (polars would give inf or NaN, and NaN compares as largest).
            out = pl.when(b != 0).then(a / b)
        elif op in ("<", "<=", ">", ">=", "==", "!="):
            out = _compared(op, a, b)
        # The previous bar's comparison is a column, shifted: shifting a bare literal
        # (``rsi(close, 14) crosses_above 30``) would give null and never fire.
        elif op == "crosses_above":
            out = _compared(">", a, b) & _shift(_compared("<=", a, b), 1)
        elif op == "crosses_below":
            out = _compared("<", a, b) & _shift(_compared(">=", a, b), 1)
        elif op == "and":
            out = a & b
        elif op == "or":
            out = a | b
        else:  # pragma: no cover - the parser produces no other operator
            raise ValueError(f"unknown operator {op!r}")
        return out, level


def _subtract(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    """``a - b`` as :func:`falcon.strategy.snap.subtract` computes it (the same correctly
    rounded operations): zero where it is within ``CANCEL`` of the larger operand."""
    diff = a - b
    tiny = diff.abs() <= CANCEL * pl.max_horizontal(a.abs(), b.abs())
    return pl.when(tiny).then(pl.lit(0.0)).otherwise(diff)


def _compared(op: str, a: pl.Expr, b: pl.Expr) -> pl.Expr:
    """``a op b`` by :func:`falcon.strategy.snap.compare` -- the stream's own function, so that
    both engines decide a comparison of (nearly) equal values alike: null where a side is."""

    def run(pair: pl.Series) -> pl.Series:
        x = pair.struct.field("a").to_numpy()  # a null is NaN here
        y = pair.struct.field("b").to_numpy()
        return pl.Series(pair.name, compare(op, x, y)).fill_nan(None).cast(pl.Boolean)

    pair = pl.struct(a.cast(pl.Float64).alias("a"), b.cast(pl.Float64).alias("b"))
    return pair.map_batches(run, return_dtype=pl.Boolean, is_elementwise=True)


def _shift(e: pl.Expr, bars: int) -> pl.Expr:
    """``e`` as of ``bars`` bars ago in the same ticker (null across a ticker boundary)."""
    if bars == 0:
        return e
    return pl.when(pl.col(_POS) >= bars).then(e.shift(bars))


def _session_columns(ts_dtype: pl.DataType) -> list[pl.Expr]:
    if not isinstance(ts_dtype, pl.Datetime):
        raise DataError(f"minute strategies need 'ts' as a datetime column, got {ts_dtype}")
    ts = pl.col("ts")
    # Stored times are UTC; a naive column is UTC by convention.
    utc = ts.dt.replace_time_zone("UTC") if ts_dtype.time_zone is None else ts
    local = utc.dt.convert_time_zone(_EXCHANGE_TZ)
    minutes = local.dt.hour().cast(pl.Int32) * 60 + local.dt.minute().cast(pl.Int32)
    return [(minutes - _OPEN_MINUTE).alias(MSO), local.dt.date().alias(SESSION)]


def compile_signals(spec: StrategySpec, bars: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """Signal columns for every bar of ``bars`` under ``spec``.

    ``bars`` has columns ticker, ts, open, high, low, close, volume, sorted by ticker then ts. The
    result has the same rows and columns plus boolean ``entry_long``, ``exit_long``,
    ``entry_short`` and ``exit_short`` (never null; short signals are all false for a long-only
    strategy), each computed on that bar's close from that bar and earlier ones only; and, when
    a stop, target or trailing stop is in ATR multiples, a float ``atr`` column (ATR of the
    level's ``atr_period`` on that bar).
    """
    lf = bars.lazy()
    schema = lf.collect_schema()
    missing = [c for c in REQUIRED_COLUMNS if c not in schema]
    if missing:
        raise DataError(f"bars lack column(s) {', '.join(missing)}")
    compiler = _Compiler(dict(spec.params))
    signals: dict[str, pl.Expr] = {}
    for column in SIGNAL_COLUMNS:
        node = spec.rules.get(column)
        if node is None:
            signals[column] = pl.lit(False)
        else:
            signals[column] = compiler.expr(node)[0].fill_null(False)

    row = pl.int_range(pl.len(), dtype=pl.Int64)
    first = pl.col(BY).ne_missing(pl.col(BY).shift(1))
    helpers = [(row - pl.when(first).then(row).forward_fill()).alias(_POS)]
    if spec.uses_session:
        helpers += _session_columns(schema["ts"])
    lf = lf.with_columns(helpers)
    for level in sorted(compiler.stages):
        lf = lf.with_columns(**compiler.stages[level])
    lf = lf.with_columns(**signals)
    keep = [*schema.names(), *(c for c in SIGNAL_COLUMNS if c not in schema)]
    if spec.atr_period is not None:
        lf = lf.with_columns(atr=ind.atr("high", "low", "close", spec.atr_period, by=BY))
        keep.append("atr")
    return lf.select(keep)


def compile_expressions(
    bars: pl.LazyFrame | pl.DataFrame,
    exprs: dict[str, str],
    *,
    params: dict[str, float] | None = None,
    timeframe: str = "day",
) -> pl.LazyFrame:
    """``bars`` plus one column per named expression of the rule language, per ticker.

    Used by the screener and the alert engine for loose expressions (factors, conditions) outside
    a whole strategy spec. Rows must be contiguous per ticker and in time order. A function call
    shared by several expressions is computed once. Raises ``ExprError`` for invalid text.
    """

    compiler = _Compiler(dict(params or {}))
    finals: dict[str, pl.Expr] = {}
    for name, text in exprs.items():
        node = parse(text)
        analyze(node, compiler.params, timeframe)
        finals[name] = compiler.expr(node)[0]
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    first = pl.col(BY).ne_missing(pl.col(BY).shift(1))
    lf = bars.lazy().with_columns((row - pl.when(first).then(row).forward_fill()).alias(_POS))
    for level in sorted(compiler.stages):
        lf = lf.with_columns(**compiler.stages[level])
    temps = [_POS, *(c for stage in compiler.stages.values() for c in stage)]
    return lf.with_columns(**finals).drop(temps)


def _position() -> pl.Expr:
    """Row number within the row's ticker (rows contiguous per ticker): what ``_shift`` masks on."""
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    first = pl.col(BY).ne_missing(pl.col(BY).shift(1))
    return (row - pl.when(first).then(row).forward_fill()).alias(_POS)


def _reach(node: Node, params: dict[str, float]) -> int:
    """How many rows before a row the expression ``node`` reads, apart from hoisted calls.

    A hoisted call is a column already computed over the whole history, so only the shifts (and
    the one-bar look back of a crossing) applied outside calls count.
    """
    if isinstance(node, Shift):
        bars = node.bars
        if isinstance(bars, Param):
            bars = int(constant(bars, params))
        return int(bars) + _reach(node.target, params)
    if isinstance(node, Attr):
        return _reach(node.target, params)
    if isinstance(node, Neg | Not):
        return _reach(node.operand, params)
    if isinstance(node, BinOp):
        inner = max(_reach(node.left, params), _reach(node.right, params))
        return inner + (1 if node.op in ("crosses_above", "crosses_below") else 0)
    return 0  # a number, a parameter, a bar field, or a hoisted call (a column)


@dataclass(frozen=True)
class StagedExpressions:
    """Named expressions compiled in two steps, so that the second can run on fewer rows.

    :meth:`with_calls` adds every function call of the expressions (indicators: they need the
    whole history) as temporary columns; :meth:`with_finals` then evaluates the expressions
    themselves (comparisons, arithmetic, shifts, over those columns) and drops the temporaries.
    The second step reads at most :attr:`reach` rows before each row, so a caller that wants
    only the last row of each ticker may keep just the last ``reach + 1`` rows of each ticker
    in between (a screen: the hoisted indicators over a year of history, the rules on a few
    rows). Chained directly, the two steps give the same values as
    :func:`compile_expressions`.
    """

    stages: tuple[dict[str, pl.Expr], ...]
    finals: dict[str, pl.Expr]
    reach: int

    @property
    def call_columns(self) -> list[str]:
        """The temporary columns :meth:`with_calls` adds (and :meth:`with_finals` drops)."""
        return [c for stage in self.stages for c in stage]

    def with_calls(self, bars: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
        """``bars`` (contiguous per ticker, in time order) plus the call columns."""
        lf = bars.lazy().with_columns(_position())
        for stage in self.stages:
            lf = lf.with_columns(**stage)
        return lf.drop(_POS)

    def with_finals(self, frame: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
        """``frame`` (from :meth:`with_calls`, maybe fewer rows) plus the named expressions.

        Positions are counted afresh, so a shift never reaches a row that is not in ``frame``:
        it gives null there, as it does before a ticker's first bar.
        """
        lf = frame.lazy().with_columns(_position()).with_columns(**self.finals)
        return lf.drop(_POS, *self.call_columns)


def compile_staged(
    exprs: dict[str, str],
    *,
    params: dict[str, float] | None = None,
    timeframe: str = "day",
) -> StagedExpressions:
    """Compile named expressions of the rule language into :class:`StagedExpressions`.

    The same compilation as :func:`compile_expressions` (calls shared by several expressions
    are computed once), split where the indicator columns end and the rules begin. Raises
    ``ExprError`` for invalid text.
    """
    compiler = _Compiler(dict(params or {}))
    finals: dict[str, pl.Expr] = {}
    reach = 0
    for name, text in exprs.items():
        node = parse(text)
        analyze(node, compiler.params, timeframe)
        finals[name] = compiler.expr(node)[0]
        reach = max(reach, _reach(node, compiler.params))
    stages = tuple(compiler.stages[level] for level in sorted(compiler.stages))
    return StagedExpressions(stages=stages, finals=finals, reach=reach)
