"""Performance figures of a backtest (or of any equity curve and list of trades).

Conventions, chosen to be checkable against backtesting.py where it is sane:

* ``return_pct``, ``max_drawdown_pct`` (a positive number: 25.0 means a 25 % fall from the
  peak) and ``final_equity`` are computed exactly as backtesting.py does;
* ``cagr_pct`` uses calendar time: ``(final / initial) ** (365.25 / days) - 1``;
* ``sharpe`` is the classic one: mean / std (ddof=1) of *daily* returns × √252, without a risk-free
  rate; intraday equity is first sampled at each day's last bar (days in America/New_York for
  time-zone-aware timestamps, the plain date otherwise). ``sortino`` uses the downside deviation
  sqrt(mean(min(r, 0)²)) in the denominator; ``calmar`` is cagr / max drawdown;
* trade statistics cover closed trades only; ``win_rate_pct`` counts pnl > 0; ``profit_factor``
  is gross profit / gross loss in money; ``expectancy`` is the mean pnl per trade in money;
  ``avg_trade_pct`` the mean of the trades' ``return_pct``;
* ``exposure_pct``: share of bars during which at least one position was open (entry bar to exit
  bar, inclusive; an open position counts until the end);
* ``buy_and_hold_return_pct``: first close to last close, averaged over tickers.

A figure that does not exist (no trades, a zero standard deviation, no losing trade for the
profit factor, no drawdown for calmar, a single day for sharpe) is None, never NaN or infinity,
so the dict can be stored as JSON as it is.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

TRADING_DAYS = 252
NEW_YORK = "America/New_York"


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _day_keys(ts: pl.Series) -> np.ndarray:
    """A day number per timestamp: the New York date for zoned times, the plain date otherwise."""
    dtype = ts.dtype
    if isinstance(dtype, pl.Date):
        return ts.to_physical().to_numpy()
    if not isinstance(dtype, pl.Datetime) or dtype.time_zone is None:
        return ts.cast(pl.Date).to_physical().to_numpy()
    # Converting a million minute stamps to New York time is slow; every UTC hour lies within one
    # New York date (the offsets are whole hours), so convert one stamp per distinct hour.
    per_hour = {"ns": 3_600_000_000_000, "us": 3_600_000_000, "ms": 3_600_000}[
        dtype.time_unit or "us"
    ]
    hours = ts.to_physical().to_numpy() // per_hour
    starts = np.flatnonzero(np.r_[True, hours[1:] != hours[:-1]])
    firsts = ts.gather(starts).dt.convert_time_zone(NEW_YORK).dt.date().to_physical().to_numpy()
    return np.repeat(firsts, np.diff(np.r_[starts, len(hours)]))


def daily_returns(equity: pl.DataFrame) -> np.ndarray:
    """Simple returns of the equity at each day's last bar (``equity`` sorted by ``ts``)."""
    if equity.height < 2:
        return np.empty(0)
    days = _day_keys(equity["ts"])
    last_of_day = np.flatnonzero(np.r_[days[1:] != days[:-1], True])
    closes = equity["equity"].to_numpy()[last_of_day]
    if len(closes) < 2:
        return np.empty(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = closes[1:] / closes[:-1] - 1.0
    return returns[np.isfinite(returns)]


def compute_metrics(
    *,
    equity: pl.DataFrame,
    trades: pl.DataFrame,
    starting_cash: float,
    buy_and_hold_return_pct: float | None = None,
    exposure_pct: float | None = None,
) -> dict[str, Any]:
    """Figures of an equity curve (``ts``, ``equity``) and its closed trades.

    ``trades`` needs the columns ``pnl`` and ``return_pct``.
    """
    values = equity["equity"].to_numpy()
    final = float(values[-1]) if len(values) else starting_cash
    peaks = np.maximum.accumulate(values) if len(values) else values
    drawdown = float(np.max(1.0 - values / peaks)) if len(values) else 0.0
    max_dd_pct = drawdown * 100.0

    cagr = None
    if len(values) > 1:
        span = equity["ts"][-1] - equity["ts"][0]
        days = span.total_seconds() / 86400.0 if hasattr(span, "total_seconds") else float(span)
        if days > 0 and final > 0:
            cagr = ((final / starting_cash) ** (365.25 / days) - 1.0) * 100.0

    rets = daily_returns(equity)
    sharpe = sortino = None
    if len(rets) >= 2:
        mean, std = float(np.mean(rets)), float(np.std(rets, ddof=1))
        if std > 0:
            sharpe = _finite(mean / std * math.sqrt(TRADING_DAYS))
        downside = math.sqrt(float(np.mean(np.minimum(rets, 0.0) ** 2)))
        if downside > 0:
            sortino = _finite(mean / downside * math.sqrt(TRADING_DAYS))
    calmar = _finite(cagr / max_dd_pct) if cagr is not None and max_dd_pct > 0 else None

    n = trades.height
    pnl = trades["pnl"].to_numpy() if n else np.empty(0)
    rpct = trades["return_pct"].to_numpy() if n else np.empty(0)
    gross_win = float(pnl[pnl > 0].sum())
    gross_loss = float(-pnl[pnl < 0].sum())
    return {
        "final_equity": final,
        "return_pct": (final - starting_cash) / starting_cash * 100.0,
        "cagr_pct": cagr,
        "max_drawdown_pct": max_dd_pct,
        "sharpe": sharpe,
        "sortino": sortino,
        "calmar": calmar,
        "trades": n,
        "win_rate_pct": float((pnl > 0).mean() * 100.0) if n else None,
        "profit_factor": gross_win / gross_loss if gross_loss > 0 else None,
        "expectancy": float(pnl.mean()) if n else None,
        "avg_trade_pct": float(rpct.mean()) if n else None,
        "exposure_pct": exposure_pct,
        "buy_and_hold_return_pct": buy_and_hold_return_pct,
    }
