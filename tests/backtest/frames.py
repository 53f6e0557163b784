"""Signal frames for tests: hand-built bars, and SMA cross signals computed with polars."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import polars as pl

Bar = tuple[float, float, float, float]  # open, high, low, close


def bars(
    ohlc: Sequence[Bar],
    *,
    ticker: str = "T",
    entry_long: Iterable[int] = (),
    exit_long: Iterable[int] = (),
    entry_short: Iterable[int] = (),
    exit_short: Iterable[int] = (),
    atr: Sequence[float | None] | None = None,
    start: datetime = datetime(2024, 1, 1),
    days: Sequence[int] | None = None,
) -> pl.DataFrame:
    """One ticker's daily bars with signals set on the given bar indexes."""
    n = len(ohlc)
    offsets = list(days) if days is not None else list(range(n))

    def flags(idx: Iterable[int]) -> list[bool]:
        marked = set(idx)
        return [i in marked for i in range(n)]

    data: dict[str, object] = {
        "ticker": [ticker] * n,
        "ts": [start + timedelta(days=d) for d in offsets],
        "open": [b[0] for b in ohlc],
        "high": [b[1] for b in ohlc],
        "low": [b[2] for b in ohlc],
        "close": [b[3] for b in ohlc],
        "volume": [1000.0] * n,
        "entry_long": flags(entry_long),
        "exit_long": flags(exit_long),
        "entry_short": flags(entry_short),
        "exit_short": flags(exit_short),
    }
    if atr is not None:
        data["atr"] = pl.Series(list(atr), dtype=pl.Float64)
    return pl.DataFrame(data)


def sma_cross(frame: pl.DataFrame, fast: int = 10, slow: int = 20) -> pl.DataFrame:
    """Crossover signals on each bar's close: fast SMA crossing above (below) the slow one."""
    f = pl.col("close").rolling_mean(fast).over("ticker")
    s = pl.col("close").rolling_mean(slow).over("ticker")
    f1, s1 = f.shift(1).over("ticker"), s.shift(1).over("ticker")
    up = ((f1 < s1) & (f > s)).fill_null(False)
    down = ((f1 > s1) & (f < s)).fill_null(False)
    return frame.with_columns(entry_long=up, exit_long=down, entry_short=down, exit_short=up)


def from_pandas_ohlc(df: object, ticker: str) -> pl.DataFrame:
    """A backtesting.py-style pandas frame (DatetimeIndex, Open/High/Low/Close/Volume)."""
    frame = pl.from_pandas(df.reset_index())  # type: ignore[attr-defined]
    first = frame.columns[0]
    frame = frame.rename({first: "ts", **{c: c.lower() for c in frame.columns[1:]}})
    return frame.with_columns(pl.lit(ticker).alias("ticker"), pl.col("ts").cast(pl.Datetime("us")))
