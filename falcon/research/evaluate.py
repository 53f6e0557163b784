"""A researched spec backtested on a basket of tickers and checked for look-ahead.

The one place research touches the data reader, the signal compiler, the backtester and the
look-ahead check (imported when a strategy is evaluated: extraction does not need them).

Example::

    evaluation = evaluate_spec(settings, spec, tickers=["AAPL", "MSFT"], start=date(2018, 1, 1))
    evaluation.metrics["return_pct"], evaluation.lookahead["clean"]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import polars as pl

from falcon.config import Settings
from falcon.errors import DataError

__all__ = ["Evaluation", "default_basket", "evaluate_spec"]


@dataclass(frozen=True)
class Evaluation:
    """What the backtest and the look-ahead check said about a spec."""

    tickers: tuple[str, ...]
    start: date | None
    end: date | None
    metrics: dict[str, Any]
    lookahead: dict[str, Any]
    trades: list[dict[str, Any]] = field(default_factory=list)
    equity: list[dict[str, Any]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when the look-ahead check found nothing."""
        return self.lookahead.get("clean") is True

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary for provenance (trades and equity go to the backtest tables)."""
        return {"tickers": list(self.tickers),
                "start": self.start.isoformat() if self.start else None,
                "end": self.end.isoformat() if self.end else None,
                "metrics": self.metrics, "lookahead": self.lookahead,
                "trades": len(self.trades)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int | str | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None


def default_basket(settings: Settings) -> list[str]:
    """The sample universe's tickers (what ``falcon data sample`` loads)."""
    from falcon.data.reference import read_tickers_csv
    from falcon.data.sample import SAMPLE_DIR

    frame = read_tickers_csv(SAMPLE_DIR / "tickers.csv")
    # The sample also holds index levels (I:SPX) as benchmarks: they cannot be traded.
    stocks = frame.filter(pl.col("type").fill_null("CS") != "INDEX")
    return sorted(set(stocks.get_column("ticker").to_list()))


def _lookahead(parsed: Any, bars: Any) -> dict[str, Any]:
    from falcon.strategy import lookahead_check

    found = lookahead_check(parsed, bars)
    report = {"clean": not found, "differences": len(found), "examples": found[:10]}
    clean: dict[str, Any] = _jsonable(report)
    return clean


def evaluate_spec(
    settings: Settings,
    spec: dict[str, Any],
    *,
    tickers: Sequence[str],
    start: date | None = None,
    end: date | None = None,
) -> Evaluation:
    """Backtest ``spec`` on ``tickers`` over ``start..end`` (day bars) and check it for
    look-ahead. Raises :class:`~falcon.errors.DataError` when there are no bars.

    The backtest is :func:`falcon.backtest.service.backtest_spec` (indicators warm up on the
    bars before ``start``, costs from ``settings.trading``); the look-ahead check runs on the
    same bars, warm-up included.
    """
    from falcon.backtest.service import backtest_frame, config_from, load_bars, plan_window
    from falcon.errors import NotFound
    from falcon.research.spec import validate

    parsed = validate(spec)
    window = plan_window(parsed.timeframe, start, end, parsed.warmup_bars)
    try:
        bars = load_bars(settings, parsed.timeframe, list(tickers), window)
    except NotFound as exc:  # research reports every missing-data case as a data problem
        raise DataError(f"{exc} (run `falcon data sample` or `falcon data sync`)") from None
    except DataError as exc:
        raise DataError(f"{exc} (run `falcon data sample` or `falcon data sync`)") from None
    result, first, last = backtest_frame(parsed, bars, window, config_from(settings))
    lookahead = _lookahead(parsed, bars.drop("date"))
    return Evaluation(
        tickers=tuple(tickers),
        start=start or first,
        end=end or last,
        metrics=_jsonable(dict(result.metrics)),
        lookahead=lookahead,
        trades=[_jsonable(r) for r in result.trades.to_dicts()],
        equity=[_jsonable(r) for r in result.equity.to_dicts()],
    )
