"""The signal frame as flat numpy arrays, checked once, for the engine's tight loop."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from falcon.errors import ValidationError

PRICE_COLUMNS = ("open", "high", "low", "close")
SIGNAL_COLUMNS = ("entry_long", "exit_long", "entry_short", "exit_short")
REQUIRED = ("ticker", "ts", *PRICE_COLUMNS, *SIGNAL_COLUMNS)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Arrays:
    """Rows sorted by (ticker, ts); ``tix`` maps each row to its index in ``times``."""

    tickers: list[str]
    tick: I64
    first_row: I64  # per row: the first row of its ticker
    last_row: I64  # per row: the last row of its ticker
    tix: I64
    times: pl.Series  # every distinct ts, ascending, with the input's dtype
    open: F64
    high: F64
    low: F64
    close: F64
    entry_long: B
    exit_long: B
    entry_short: B
    exit_short: B
    atr: F64 | None

    @property
    def n(self) -> int:
        """Number of rows."""
        return len(self.open)


def _is_sorted(tick_codes: pl.Series, ts: I64, ticker: pl.Series) -> bool:
    if not ticker.is_sorted():
        return False
    same = tick_codes.to_numpy()[1:] == tick_codes.to_numpy()[:-1]
    return bool(np.all(ts[1:][same] > ts[:-1][same]))


def prepare(signals: pl.DataFrame | pl.LazyFrame) -> Arrays:
    """Check the compiler's frame (columns, nulls, prices, order) and flatten it."""
    df = signals.collect() if isinstance(signals, pl.LazyFrame) else signals
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValidationError(f"signal frame lacks column(s): {', '.join(missing)}")
    if df.height == 0:
        raise ValidationError("signal frame is empty")
    if not isinstance(df.schema["ts"], pl.Datetime | pl.Date):
        raise ValidationError(f"ts must be a Datetime or Date column, got {df.schema['ts']}")
    keep = [*REQUIRED, *(["atr"] if "atr" in df.columns else [])]
    df = df.select(keep).with_columns(pl.col("ticker").cast(pl.String))
    nulls = [c for c in REQUIRED if df[c].null_count()]
    if nulls:
        raise ValidationError(f"signal frame has nulls in: {', '.join(nulls)}")
    ts = df["ts"].to_physical().cast(pl.Int64).to_numpy()
    codes = df["ticker"].rle_id()
    if not _is_sorted(codes, ts, df["ticker"]):
        df = df.sort(["ticker", "ts"])
        ts = df["ts"].to_physical().cast(pl.Int64).to_numpy()
        codes = df["ticker"].rle_id()
        if not _is_sorted(codes, ts, df["ticker"]):
            raise ValidationError("signal frame has duplicate (ticker, ts) rows")
    tick = codes.cast(pl.Int64).to_numpy()
    prices = {c: df[c].cast(pl.Float64).to_numpy() for c in PRICE_COLUMNS}
    stacked = np.stack(list(prices.values()))
    if not np.all(np.isfinite(stacked)) or np.any(stacked <= 0):
        raise ValidationError("prices must be finite and > 0")
    if np.any(prices["high"] < np.maximum(prices["open"], prices["close"])) or np.any(
        prices["low"] > np.minimum(prices["open"], prices["close"])
    ):
        raise ValidationError("a bar has open/close outside its low..high range")

    n = len(tick)
    change = np.flatnonzero(np.diff(tick)) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [n])) - 1
    counts = ends - starts + 1
    first_row = np.repeat(starts, counts)
    last_row = np.repeat(ends, counts)
    tickers = df["ticker"].gather(starts).to_list()

    if len(starts) == 1:
        tix = np.arange(n, dtype=np.int64)  # one ticker, already strictly increasing
        uniq = ts
    else:
        uniq, inverse = np.unique(ts, return_inverse=True)
        tix = inverse.astype(np.int64)
    times = pl.Series("ts", uniq).cast(df.schema["ts"]) if uniq is not ts else df["ts"]

    atr = None
    if "atr" in df.columns:
        atr = df["atr"].cast(pl.Float64).fill_null(float("nan")).to_numpy()

    def flag(name: str) -> B:
        return df[name].cast(pl.Boolean).to_numpy()

    return Arrays(
        tickers=tickers,
        tick=tick,
        first_row=first_row,
        last_row=last_row,
        tix=tix,
        times=times,
        atr=atr,
        entry_long=flag("entry_long"),
        exit_long=flag("exit_long"),
        entry_short=flag("entry_short"),
        exit_short=flag("exit_short"),
        **prices,
    )


def next_true(flags: B, last_row: I64) -> I64:
    """For each row, the first row at or after it (same ticker) where ``flags`` is set, else -1."""
    n = len(flags)
    rows = np.where(flags, np.arange(n, dtype=np.int64), n)
    nxt = np.minimum.accumulate(rows[::-1])[::-1]
    # A hit beyond the row's own ticker belongs to a later ticker: none for this one.
    return np.where(nxt <= last_row, nxt, -1)
