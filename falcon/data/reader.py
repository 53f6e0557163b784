"""Reading bars from the store, split-adjusted by default.

The one call every engine uses::

    from falcon.data.reader import read_bars
    bars = read_bars(settings, kind="day", tickers=["AAPL", "MSFT"], start=date(2020, 1, 1))
    frame = bars.collect()

Flat-file bars are unadjusted. With ``adjusted=True`` (the default) every bar before a split's
execution date has its prices divided and its volume multiplied by the split's ratio
(``split_to / split_from``), compounded over later splits; this is one as-of join, no loop.
The splits come from ``splits=`` when given, else from ``market_data/reference/splits.parquet``
(a mirror of the ``splits`` table written by :func:`falcon.data.reference.export_splits`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import polars as pl

from falcon.config import Settings
from falcon.data.flatfile import BAR_COLUMNS, NEW_YORK, TS_TYPE
from falcon.data.store import Store
from falcon.errors import DataError

SPLITS_SCHEMA: dict[str, pl.DataType] = {
    "ticker": pl.String(),
    "execution_date": pl.Date(),
    "split_from": pl.Float64(),
    "split_to": pl.Float64(),
}


def _bound(value: date | datetime | None, *, end: bool) -> tuple[date | None, datetime | None]:
    """(session date for file pruning, exact UTC instant for filtering) of a range bound."""
    if value is None:
        return None, None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise DataError(f"{value.isoformat()} has no time zone (pass an aware datetime)")
        return value.astimezone(NEW_YORK).date(), value.astimezone(UTC)
    return value, None


def load_splits(source: Settings | Store | str) -> pl.DataFrame:
    """The store's splits mirror (empty when there is none)."""
    path = Store.of(source).splits_path
    if not path.exists():
        return pl.DataFrame(schema=SPLITS_SCHEMA)
    return pl.read_parquet(path).cast(SPLITS_SCHEMA)  # type: ignore[arg-type]


def adjust_for_splits(bars: pl.LazyFrame, splits: pl.DataFrame) -> pl.LazyFrame:
    """Split-adjust ``bars`` (with ``ticker`` and ``date`` columns) by ``splits``.

    A bar dated before a split's execution date is divided by that split's ratio (and by every
    later split's); volume is multiplied by the same factor.
    """
    splits = splits.cast(SPLITS_SCHEMA)  # type: ignore[arg-type]
    splits = splits.filter(
        (pl.col("split_from") > 0) & (pl.col("split_to") > 0)
        & (pl.col("split_from") != pl.col("split_to"))
    )
    if splits.is_empty():
        return bars
    # factor at a split = product of its ratio and every later split's ratio for the ticker.
    factors = (
        splits.lazy()
        .group_by("ticker", "execution_date")
        .agg((pl.col("split_to") / pl.col("split_from")).product().alias("ratio"))
        .sort("ticker", "execution_date", descending=[False, True])
        .with_columns(pl.col("ratio").cum_prod().over("ticker").alias("factor"))
        .select("ticker", "execution_date", "factor")
        .sort("execution_date")
    )
    joined = bars.sort("date").join_asof(
        factors,
        left_on="date",
        right_on="execution_date",
        by="ticker",
        strategy="forward",
        allow_exact_matches=False,  # the bar on the execution date is already post-split
        # Both sides are sorted just above; polars cannot prove per-ticker order to itself and
        # would warn on every read.
        check_sortedness=False,
    )
    factor = pl.col("factor").fill_null(1.0)
    return joined.with_columns(
        *[(pl.col(c) / factor).alias(c) for c in ("open", "high", "low", "close")],
        (pl.col("volume") * factor).alias("volume"),
    ).drop("factor", "execution_date", strict=False)


def read_bars(
    source: Settings | Store | str,
    kind: str = "day",
    tickers: Iterable[str] | None = None,
    start: date | datetime | None = None,
    end: date | datetime | None = None,
    *,
    adjusted: bool = True,
    splits: pl.DataFrame | None = None,
    with_date: bool = False,
) -> pl.LazyFrame:
    """Bars of ``kind`` as a lazy frame sorted by ``ticker, ts``.

    Columns: ticker, ts (Datetime ns UTC), open, high, low, close, volume (float64),
    transactions; plus ``date`` (the New York session date) with ``with_date=True``.

    ``start``/``end`` are inclusive session dates, or aware datetimes for an exact window
    (``start <= ts <= end``). Only the partition files that can hold the range are read.
    ``adjusted=False`` gives the raw flat-file bars.
    """
    store = Store.of(source)
    start_day, start_ts = _bound(start, end=False)
    end_day, end_ts = _bound(end, end=True)
    lf = store.scan(kind, start_day, end_day)
    if start_day is not None:
        lf = lf.filter(pl.col("date") >= start_day)
    if end_day is not None:
        lf = lf.filter(pl.col("date") <= end_day)
    if start_ts is not None:
        lf = lf.filter(pl.col("ts") >= pl.lit(start_ts).cast(TS_TYPE))
    if end_ts is not None:
        lf = lf.filter(pl.col("ts") <= pl.lit(end_ts).cast(TS_TYPE))
    if tickers is not None:
        wanted = sorted({t for t in ([tickers] if isinstance(tickers, str) else tickers)})
        lf = lf.filter(pl.col("ticker").is_in(wanted))
    if adjusted:
        table = load_splits(store) if splits is None else splits
        if tickers is not None and not table.is_empty():
            table = table.filter(pl.col("ticker").is_in(wanted))
        lf = adjust_for_splits(lf, table)
    columns = [*BAR_COLUMNS, "date"] if with_date else list(BAR_COLUMNS)
    return lf.select(columns).sort(["ticker", "ts"])


def session_bounds_utc(day: date) -> tuple[datetime, datetime]:
    """00:00 New York of ``day`` and of the next day, in UTC (a day bar's window)."""
    lo = datetime.combine(day, datetime.min.time(), NEW_YORK).astimezone(UTC)
    hi = datetime.combine(day + timedelta(days=1), datetime.min.time(), NEW_YORK).astimezone(UTC)
    return lo, hi
