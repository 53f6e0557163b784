"""Backtest a strategy spec on stored market data: the one path the CLI, jobs, research and the
dashboard share.

::

    outcome = backtest_spec(settings, spec, symbols=["AAPL", "MSFT"],
                            start=date(2018, 1, 2), end=date(2018, 12, 31),
                            config=BacktestConfig(cash=10_000, commission=0.001))
    outcome.result.metrics["sharpe"], outcome.window.warmup_from

Indicator warm-up: ``spec.warmup_bars`` bars of history *before* ``start`` are read as well, so
that every rule has a value on the first bar of the range; signals on those earlier bars are
dropped, so the backtest (its trades, equity curve and metrics) starts on ``start``. For day bars
the warm-up is counted in NYSE sessions (:mod:`falcon.calendar`); for minute bars in whole
sessions of 390 regular-hours bars, plus one, because the store's minute bars also cover the
extended hours and a thin ticker may lack some minutes. Without ``start`` the run begins with
the first stored bar and the rules simply have no value during their warm-up.

The same split is used by the optimiser and walk-forward: :func:`load_bars` reads once,
:func:`backtest_frame` runs one parameter set on any window of that frame, and a window run from
a preloaded frame gives exactly what :func:`backtest_spec` gives for that window (the warm-up
start is a function of the calendar, not of what happens to be loaded).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import polars as pl

from falcon.backtest.engine import run_backtest
from falcon.backtest.results import BacktestConfig, BacktestResult
from falcon.config import Settings
from falcon.errors import DataError, NotFound, ValidationError
from falcon.strategy import StrategySpec, builtin_names, builtin_spec, compile_signals, load_spec

__all__ = [
    "MINUTE_BARS_PER_SESSION",
    "Outcome",
    "ProgressFn",
    "Window",
    "backtest_frame",
    "backtest_spec",
    "config_from",
    "jsonable",
    "load_bars",
    "plan_window",
    "resolve_spec",
]

ProgressFn = Callable[[float, str], None]
MINUTE_BARS_PER_SESSION = 390


def _quiet(fraction: float, note: str) -> None:
    """The default progress callback."""


@dataclass(frozen=True)
class Window:
    """The dates of a run: signals and trades from ``start`` to ``end`` (inclusive session
    dates; None = open-ended), indicators computed from ``warmup_from``."""

    warmup_from: date | None
    start: date | None
    end: date | None


@dataclass(frozen=True)
class Outcome:
    """A finished backtest and what it was run on."""

    spec: StrategySpec
    symbols: tuple[str, ...]
    window: Window
    first: date | None  # the first and last session actually traded (the data's, in range)
    last: date | None
    result: BacktestResult

    @property
    def metrics(self) -> dict[str, Any]:
        """The result's metrics as a plain, JSON-safe dict."""
        found: dict[str, Any] = jsonable(dict(self.result.metrics))
        return found


def jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as None, dates as ISO text, numpy scalars as numbers."""
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):  # a numpy scalar
        return jsonable(value.item())
    return str(value)


def config_from(settings: Settings, **overrides: float | None) -> BacktestConfig:
    """The broker config: ``settings.trading`` defaults, with any non-None ``overrides``
    (``cash``, ``commission``, ``commission_per_share``, ``slippage_bps``)."""
    trading = settings.trading
    values: dict[str, float] = {
        "cash": trading.starting_cash,
        "commission": trading.commission,
        "commission_per_share": trading.commission_per_share,
        "slippage_bps": trading.slippage_bps,
    }
    for key, value in overrides.items():
        if key not in values:
            raise ValidationError(f"unknown backtest setting {key!r}")
        if value is not None:
            values[key] = float(value)
    try:
        return BacktestConfig(**values)
    except ValueError as exc:
        raise ValidationError(f"invalid backtest settings: {exc}") from None


def resolve_spec(
    *,
    name: str | None = None,
    document: dict[str, Any] | None = None,
    params: dict[str, float] | None = None,
    direction: str | None = None,
) -> StrategySpec:
    """A built-in strategy by ``name`` or a strategy ``document``, with ``params`` applied.

    Stored strategies (the ``strategies`` table) are documents: the caller reads the row.
    """
    if (name is None) == (document is None):
        raise ValidationError("give a strategy name or a strategy document (not both)")
    if name is not None:
        if name not in builtin_names():
            raise NotFound(f"no strategy {name!r} (built-in: {', '.join(builtin_names())})")
        return builtin_spec(name, params, direction=direction)
    doc = dict(document or {})
    if direction is not None:
        doc["direction"] = direction
    return load_spec(doc, params)


# --- dates -----------------------------------------------------------------------------------


def _sessions_before(day: date, count: int) -> date:
    """The session ``count`` NYSE sessions before ``day`` (``day`` itself when count is 0)."""
    from falcon import calendar

    if count <= 0:
        return day
    first, last = calendar.bounds()
    lo = max(first, day - timedelta(days=int(count * 1.5) + 14))  # > count sessions back
    hi = min(last, day - timedelta(days=1))
    days = calendar.trading_days(lo, hi) if lo <= hi else []
    return days[-count] if len(days) >= count else lo


def plan_window(
    timeframe: str, start: date | None, end: date | None, warmup_bars: int
) -> Window:
    """The :class:`Window` of a run (see the module docstring for how warm-up is counted)."""
    if start is not None and end is not None and start > end:
        raise ValidationError(f"empty date range: start {start} is after end {end}")
    if start is None:
        return Window(None, None, end)
    if timeframe == "minute":
        sessions = math.ceil(warmup_bars / MINUTE_BARS_PER_SESSION) + 1 if warmup_bars else 0
    else:
        sessions = warmup_bars
    return Window(_sessions_before(start, sessions), start, end)


# --- data ------------------------------------------------------------------------------------


def _clean_symbols(symbols: Sequence[str]) -> tuple[str, ...]:
    out = sorted({s.strip().upper() for s in symbols if s and s.strip()})
    if not out:
        raise ValidationError("no symbols: give --symbols or a strategy whose universe lists them")
    return tuple(out)


def _read(settings: Settings, timeframe: str, symbols: Sequence[str],
          start: date | None, end: date | None) -> pl.DataFrame:
    from falcon.data.reader import read_bars

    with warnings.catch_warnings():
        # polars cannot prove the reader's as-of join input sorted per ticker (it is): harmless.
        warnings.filterwarnings("ignore", "Sortedness of columns cannot be checked", UserWarning)
        return read_bars(settings, timeframe, list(symbols), start, end, with_date=True).collect()


def load_bars(
    settings: Settings,
    timeframe: str,
    symbols: Sequence[str],
    window: Window,
) -> pl.DataFrame:
    """Split-adjusted bars (with a ``date`` column) of ``symbols`` from ``window.warmup_from``
    (or ``window.start``) to ``window.end``.

    Raises :class:`~falcon.errors.NotFound` naming the symbols the store has no bars for at all,
    and :class:`~falcon.errors.DataError` when the range holds no bars.
    """
    tickers = _clean_symbols(symbols)
    bars = _read(settings, timeframe, tickers, window.warmup_from or window.start, window.end)
    present = set(bars.get_column("ticker").unique().to_list())
    if len(present) < len(tickers):
        # Only now look at the whole store: is the ticker unknown, or just absent in the range?
        anywhere = set(_read(settings, timeframe, tickers, None, None)
                       .get_column("ticker").unique().to_list())
        unknown = [t for t in tickers if t not in anywhere]
        if unknown:
            raise NotFound(f"unknown symbol(s) {', '.join(unknown)}: no {timeframe} bars in the "
                           "store (`falcon data status` lists what is there)")
    in_range = bars if window.start is None else bars.filter(pl.col("date") >= window.start)
    if in_range.is_empty():
        raise DataError(f"no {timeframe} bars for {', '.join(tickers[:5])} between "
                        f"{window.start or 'the first bar'} and {window.end or 'the last bar'}")
    return bars


def backtest_frame(
    spec: StrategySpec,
    bars: pl.DataFrame,
    window: Window,
    config: BacktestConfig,
) -> tuple[BacktestResult, date | None, date | None]:
    """Backtest ``spec`` on the part of ``bars`` (from :func:`load_bars`) that ``window`` covers.

    Returns the result and the first and last session traded.
    """
    frame = bars
    if window.warmup_from is not None:
        frame = frame.filter(pl.col("date") >= window.warmup_from)
    if window.end is not None:
        frame = frame.filter(pl.col("date") <= window.end)
    dates = frame.get_column("date")
    signals = compile_signals(spec, frame.drop("date")).collect()
    if window.start is not None:
        keep = dates >= window.start
        signals = signals.filter(keep)
        dates = dates.filter(keep)
    if signals.is_empty():
        raise DataError(f"no bars between {window.start or 'the first bar'} and "
                        f"{window.end or 'the last bar'}")
    result = run_backtest(signals, risk=spec.risk, config=config)
    return result, dates.min(), dates.max()  # type: ignore[return-value]


def backtest_spec(
    settings: Settings,
    spec: StrategySpec,
    *,
    symbols: Sequence[str] | None = None,
    start: date | None = None,
    end: date | None = None,
    config: BacktestConfig | None = None,
    progress: ProgressFn | None = None,
) -> Outcome:
    """Read bars (with warm-up), compile the signals and run the portfolio backtester.

    ``symbols`` default to the spec's universe tickers; ``config`` to ``settings.trading``.
    Raises ValidationError (no symbols, start after end), NotFound (a symbol not in the store)
    or DataError (no bars in the range).
    """
    report = progress or _quiet
    tickers = _clean_symbols(symbols or spec.universe.tickers or ())
    window = plan_window(spec.timeframe, start, end, spec.warmup_bars)
    report(0.0, f"reading {spec.timeframe} bars of {len(tickers)} symbol(s)")
    bars = load_bars(settings, spec.timeframe, tickers, window)
    report(0.4, f"backtesting {spec.name} on {bars.height} bars")
    result, first, last = backtest_frame(spec, bars, window, config or config_from(settings))
    report(1.0, f"{result.trades.height} trades")
    return Outcome(spec=spec, symbols=tickers, window=window, first=first, last=last,
                   result=result)
