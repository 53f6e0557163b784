"""An empirical look-ahead check: do a strategy's signals change when later bars are removed?

Signals on bar t must be a function of bars up to t. Recomputing them on the data cut after many
points in time and comparing with the run on all the data finds any rule (or compiler bug) that
peeks at the future: a bar whose signal differs between the two runs saw later data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl

from falcon.strategy.compile import SIGNAL_COLUMNS, compile_signals
from falcon.strategy.spec import StrategySpec

__all__ = ["lookahead_check"]

SignalFn = Callable[[pl.DataFrame], pl.LazyFrame | pl.DataFrame]


def lookahead_check(
    spec: StrategySpec | SignalFn,
    bars: pl.LazyFrame | pl.DataFrame,
    cut_points: int = 20,
    *,
    columns: tuple[str, ...] = SIGNAL_COLUMNS,
) -> list[dict[str, Any]]:
    """Signals that differ between the full-data run and a run on data cut at a time.

    ``spec`` is a strategy, or any function from bars to a frame with the signal ``columns``
    (to check hand-written signal code). ``cut_points`` times are spread evenly over the bars'
    distinct ``ts`` values. Returns one dict per differing (ticker, ts, column), the earliest cut
    that shows it first: ``{"ticker", "ts", "column", "full", "truncated", "cut"}``. Empty means
    no look-ahead was found.
    """
    signals: SignalFn
    if isinstance(spec, StrategySpec):
        def signals(frame: pl.DataFrame) -> pl.LazyFrame:
            return compile_signals(spec, frame)
    else:
        signals = spec
    data = bars.lazy().collect()
    full = signals(data).lazy().select("ticker", "ts", *columns).collect()
    times = data.get_column("ts").unique().sort()
    if len(times) < 2 or cut_points < 1:
        return []
    step = max(1, (len(times) - 1) // cut_points)
    cuts = times[: len(times) - 1 : step].to_list()[-cut_points:]
    found: dict[tuple[Any, Any, str], dict[str, Any]] = {}
    for cut in cuts:
        part = signals(data.filter(pl.col("ts") <= cut)).lazy()
        part_df = part.select("ticker", "ts", *columns).collect()
        joined = part_df.join(full, on=["ticker", "ts"], how="left", suffix="__full")
        for column in columns:
            differ = joined.filter(
                pl.col(column).ne_missing(pl.col(f"{column}__full"))
            ).select("ticker", "ts", pl.col(column).alias("truncated"),
                     pl.col(f"{column}__full").alias("full"))
            for row in differ.iter_rows(named=True):
                key = (row["ticker"], row["ts"], column)
                found.setdefault(key, {"ticker": row["ticker"], "ts": row["ts"], "column": column,
                                       "full": row["full"], "truncated": row["truncated"],
                                       "cut": cut})
    return sorted(found.values(), key=lambda d: (str(d["ticker"]), d["ts"], d["column"]))
