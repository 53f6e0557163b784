"""Turn a finished simulation into frames: trades, open trades, equity curve, metrics."""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from falcon.backtest.metrics import compute_metrics
from falcon.backtest.results import BacktestResult

if TYPE_CHECKING:
    from falcon.backtest.engine import _Simulation


_SIDES = {True: "long", False: "short"}


def _columns(sim: _Simulation, closed: bool) -> dict[str, np.ndarray]:
    if closed:
        names = (
            "tick",
            "long",
            "qty",
            "entry_row",
            "entry_price",
            "entry_fee",
            "exit_row",
            "exit_price",
            "exit_fee",
            "reason",
        )
        dtypes: tuple[Any, ...] = (
            np.int64,
            bool,
            np.int64,
            np.int64,
            float,
            float,
            np.int64,
            float,
            float,
            object,
        )
        columns = list(zip(*sim.closed, strict=True)) if sim.closed else [()] * len(names)
        return {n: np.asarray(c, dtype=d) for n, c, d in zip(names, columns, dtypes, strict=True)}
    opened = list(sim.open.values())
    return {
        "tick": np.array([p.tick for p in opened], dtype=np.int64),
        "long": np.array([p.long for p in opened], dtype=bool),
        "qty": np.array([p.qty for p in opened], dtype=np.int64),
        "entry_row": np.array([p.row for p in opened], dtype=np.int64),
        "entry_price": np.array([p.price for p in opened], dtype=float),
        "entry_fee": np.array([p.fee for p in opened], dtype=float),
    }


def _trade_frame(sim: _Simulation, closed: bool) -> pl.DataFrame:
    a = sim.a
    c = _columns(sim, closed)
    order = np.lexsort((c["tick"], a.tix[c["entry_row"]]))  # by entry time, then ticker
    c = {k: v[order] for k, v in c.items()}
    qty, entry_row, entry_px = c["qty"], c["entry_row"], c["entry_price"]
    sign = np.where(c["long"], 1.0, -1.0)
    if closed:
        fees = c["entry_fee"] + c["exit_fee"]
        mark = c["exit_price"]
        held = c["exit_row"] - entry_row
    else:
        fees = c["entry_fee"]
        last = a.last_row[entry_row]
        mark = a.close[last]
        held = last - entry_row
    pnl = sign * qty * (mark - entry_px) - fees
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = (sign * (mark / entry_px - 1.0) - fees / (qty * entry_px)) * 100.0
    count = len(qty)
    names = pl.Series("ticker", a.tickers, dtype=pl.String)
    frame = pl.DataFrame(
        {
            "ticker": names.gather(c["tick"]),
            "side": pl.Series(c["long"]).replace_strict(_SIDES, return_dtype=pl.String),
            "qty": qty,
            "entry_ts": a.times.gather(a.tix[entry_row]).alias("entry_ts"),
            "entry_price": entry_px,
            "exit_ts": (
                a.times.gather(a.tix[c["exit_row"]])
                if closed
                else pl.Series([None] * count, dtype=a.times.dtype)
            ).alias("exit_ts"),
            "exit_price": pl.Series(mark if closed else [None] * count, dtype=pl.Float64),
            "pnl": pnl,
            "return_pct": ret,
            "exit_reason": pl.Series(
                c["reason"].tolist() if closed else [None] * count, dtype=pl.String
            ),
            "bars_held": held.astype(np.int64),
            "fees": fees,
        }
    )
    return frame


def _equity(sim: _Simulation) -> tuple[pl.DataFrame, float]:
    """Equity at every timestamp: cash steps plus the positions' marked value; and exposure."""
    a = sim.a
    n_t = len(a.times)
    cash = np.full(n_t, sim.config.cash)
    if sim.cash_t:
        # Cash at a close is the cash after the last event at or before it (events are in
        # time order): index each timestamp's last event, then carry it forward.
        ev_t = np.asarray(sim.cash_t, dtype=np.int64)
        last_at_t = np.r_[ev_t[1:] != ev_t[:-1], True]
        idx = np.full(n_t, -1, dtype=np.int64)
        idx[ev_t[last_at_t]] = np.flatnonzero(last_at_t)
        idx = np.maximum.accumulate(idx)
        cash = np.where(idx >= 0, np.asarray(sim.cash_v)[np.maximum(idx, 0)], sim.config.cash)

    closed = list(zip(*sim.closed, strict=True)) if sim.closed else [()] * 10
    opened = list(sim.open.values())
    start = np.concatenate(
        (np.asarray(closed[3], dtype=np.int64), np.array([p.row for p in opened], dtype=np.int64))
    )
    # An open position is held through its ticker's last bar.
    stop = np.concatenate(
        (
            np.asarray(closed[6], dtype=np.int64),
            np.array([a.last_row[p.row] + 1 for p in opened], dtype=np.int64),
        )
    )
    qty = np.concatenate(
        (
            np.where(np.asarray(closed[1], dtype=bool), 1.0, -1.0) * np.asarray(closed[2]),
            np.array([p.qty if p.long else -p.qty for p in opened], dtype=float),
        )
    )
    value = np.zeros(n_t)
    cover = np.zeros(n_t + 1, dtype=np.int64)
    if len(start):
        # Held at the close of rows start..stop-1; the value moves by qty * (close change) on
        # each of them, which carries the last close over timestamps a ticker has no bar at.
        length = stop - start
        rows = np.repeat(start - np.cumsum(length) + length, length) + np.arange(int(length.sum()))
        q = np.repeat(qty, length)
        first = np.repeat(start, length) == rows
        prev = a.close[np.maximum(rows - 1, 0)]
        delta = q * (a.close[rows] - np.where(first, 0.0, prev))
        weights = np.bincount(a.tix[rows], weights=delta, minlength=n_t)
        gone = (length > 0) & (stop <= a.last_row[start])
        np.add.at(weights, a.tix[stop[gone]], -qty[gone] * a.close[stop[gone] - 1])
        value = np.cumsum(weights)
        end_t = np.where(stop <= a.last_row[start], a.tix[np.minimum(stop, a.n - 1)], n_t - 1)
        np.add.at(cover, a.tix[start], 1)
        np.add.at(cover, end_t + 1, -1)
    exposure = float((np.cumsum(cover[:-1]) > 0).mean() * 100.0)
    frame = pl.DataFrame({"ts": a.times, "equity": cash + value, "cash": cash})
    return frame, exposure


def _buy_and_hold(sim: _Simulation) -> float:
    a = sim.a
    starts = a.first_row[np.r_[0, np.flatnonzero(np.diff(a.tick)) + 1]]
    ends = a.last_row[starts]
    return float(np.mean(a.close[ends] / a.close[starts] - 1.0) * 100.0)


def build_result(sim: _Simulation) -> BacktestResult:
    """The read-only result of a finished simulation."""
    a = sim.a
    trades = _trade_frame(sim, closed=True)
    open_trades = _trade_frame(sim, closed=False)
    equity, exposure = _equity(sim)
    rej = sim.rejected
    rejections = pl.DataFrame(
        {
            "ticker": pl.Series([a.tickers[r[0]] for r in rej], dtype=pl.String),
            "ts": a.times.gather(a.tix[np.array([r[1] for r in rej], dtype=np.int64)]),
            "side": pl.Series(["long" if r[2] else "short" for r in rej], dtype=pl.String),
            "reason": pl.Series([r[3] for r in rej], dtype=pl.String),
        }
    )
    metrics = compute_metrics(
        equity=equity,
        trades=trades,
        starting_cash=sim.config.cash,
        buy_and_hold_return_pct=_buy_and_hold(sim),
        exposure_pct=exposure,
    )
    return BacktestResult(
        trades=trades,
        open_trades=open_trades,
        equity=equity,
        rejections=rejections,
        metrics=MappingProxyType(metrics),
        risk=sim.risk,
        config=sim.config,
    )
