"""Synthetic day bars with designed patterns, and writing them through the real import path.

Each scenario ticker is built so that exactly one built-in profile should pick it on the last
session; background tickers are seeded random walks. Bars go into the store as Massive flat files
(``ticker,volume,open,close,high,low,window_start,transactions``) through the real importer.
"""

from __future__ import annotations

import gzip
import math
import random
from collections.abc import Callable, Sequence
from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl

from falcon import calendar as cal

NY = ZoneInfo("America/New_York")

Row = tuple[float, float, float, float, float]  # open, high, low, close, volume


def sessions(end: date, n: int) -> list[date]:
    """The ``n`` sessions ending with ``end``."""
    days = cal.trading_days(date(end.year - 3, 1, 1), end)
    return days[-n:]


def _bar(prev: float, close: float, volume: float, wiggle: float = 0.004) -> Row:
    high = max(prev, close) * (1 + wiggle)
    low = min(prev, close) * (1 - wiggle)
    return prev, high, low, close, volume


def flat(n: int, level: float = 50.0, amp: float = 0.6, vol: float = 1e6) -> list[Row]:
    """A sideways series with a gentle wave (no trend, no extremes)."""
    out, prev = [], level
    for t in range(n):
        close = level + amp * math.sin(t / 3.0)
        out.append(_bar(prev, close, vol * (1 + 0.1 * math.sin(t / 5.0))))
        prev = close
    return out


def breakout(n: int, vol: float = 1e6) -> list[Row]:
    rows = flat(n - 1, vol=vol)
    prev = rows[-1][3]
    rows.append(_bar(prev, 55.0, 3 * vol))
    return rows


def oversold(n: int) -> list[Row]:
    rows = flat(n - 31, level=80.0)
    prev = rows[-1][3]
    for t in range(30):
        close = prev * (0.99 if t < 26 else 0.95)  # the fall speeds up: below the lower band
        rows.append(_bar(prev, close, 1.2e6))
        prev = close
    rows.append(_bar(prev, prev * 1.002, 1.5e6))
    return rows


def pullback(n: int) -> list[Row]:
    out, prev = [], 30.0
    for t in range(n - 6):
        close = 30.0 * math.exp(0.0025 * t) * (1 + 0.01 * math.sin(t / 2.0))
        out.append(_bar(prev, close, 1e6))
        prev = close
    for _ in range(6):  # a gentle pullback
        close = prev * 0.992
        out.append(_bar(prev, close, 0.9e6))
        prev = close
    return out


def squeeze(n: int) -> list[Row]:
    out, prev = [], 50.0
    for t in range(n):
        amp = 3.0 if t < n - 40 else 3.0 * 0.88 ** (t - (n - 40))
        close = 50.0 + amp * math.sin(t * 1.3)
        out.append(_bar(prev, close, 1e6, wiggle=0.001))
        prev = close
    return out


def gap(n: int) -> list[Row]:
    rows = flat(n - 1, level=40.0)
    prev = rows[-1][3]
    open_ = prev * 1.06
    close = open_ * 1.01
    rows.append((open_, close * 1.005, open_ * 0.998, close, 3.2e6))
    return rows


def random_walk(n: int, seed: int) -> list[Row]:
    rng = random.Random(seed)
    out, prev = [], rng.uniform(10, 200)
    vol = rng.uniform(2e5, 5e6)
    for _ in range(n):
        close = prev * math.exp(rng.gauss(0, 0.02))
        out.append(_bar(prev, close, vol * rng.uniform(0.5, 1.5), wiggle=rng.uniform(0, 0.02)))
        prev = close
    return out


SCENARIOS: dict[str, Callable[[int], list[Row]]] = {
    "BRKT": breakout,
    "OVSD": oversold,
    "TRPB": pullback,
    "SQZE": squeeze,
    "GAPG": gap,
    "ILLQ": lambda n: breakout(n, vol=5e4),  # a breakout nobody can trade: $2.7M a day
}
#: Which built-in profile each scenario is made for.
EXPECTED = {"BRKT": "momentum_breakout", "OVSD": "oversold_bounce", "TRPB": "trend_pullback",
            "SQZE": "volatility_squeeze", "GAPG": "gap_and_go"}


def frame(days: Sequence[date], series: dict[str, list[Row]]) -> pl.DataFrame:
    """Bars as the reader returns them (with ``date``), sorted by ticker and ts."""
    rows = []
    for ticker, bars in series.items():
        for day, (o, h, lo, c, v) in zip(days[-len(bars):], bars, strict=True):
            ts = datetime.combine(day, time(0), NY)
            rows.append((ticker, ts, o, h, lo, c, v, 100, day))
    out = pl.DataFrame(rows, orient="row", schema={
        "ticker": pl.String, "ts": pl.Datetime("us", "America/New_York"), "open": pl.Float64,
        "high": pl.Float64, "low": pl.Float64, "close": pl.Float64, "volume": pl.Float64,
        "transactions": pl.Int64, "date": pl.Date})
    return out.with_columns(pl.col("ts").dt.convert_time_zone("UTC").dt.cast_time_unit("ns")
                            ).sort("ticker", "ts")


def universe(end: date, n_days: int = 300, n_random: int = 30,
             extra_days: Sequence[date] = ()) -> pl.DataFrame:
    """Scenario tickers ending at ``end`` plus random walks (continuing into ``extra_days``)."""
    days = sessions(end, n_days)
    series = {name: make(n_days) for name, make in SCENARIOS.items()}
    for i in range(n_random):
        series[f"R{i:03d}"] = random_walk(n_days + len(extra_days), seed=i)
    all_days = [*days, *extra_days]
    out = frame(all_days, {k: v for k, v in series.items() if k.startswith("R")})
    scen = frame(days, {k: v for k, v in series.items() if not k.startswith("R")})
    if extra_days:  # scenarios go on sideways after the screened day
        later = {k: flat(len(extra_days), level=v[-1][3]) for k, v in series.items()
                 if not k.startswith("R")}
        scen = pl.concat([scen, frame(list(extra_days), later)])
    return pl.concat([out, scen]).sort("ticker", "ts")


def write_flat_files(bars: pl.DataFrame, folder: Path) -> list[Path]:
    """One Massive day flat file per session (gzip CSV in the flat-file column order)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    ns = pl.col("ts").dt.epoch("ns").alias("window_start")
    for (day,), part in bars.group_by(["date"], maintain_order=True):
        path = folder / f"{day:%Y-%m-%d}.csv.gz"
        out = part.select("ticker", "volume", "open", "close", "high", "low", ns, "transactions")
        with gzip.open(path, "wb", compresslevel=1) as fh:
            out.write_csv(fh)  # type: ignore[call-overload]  # a GzipFile is a binary IO
        paths.append(path)
    return paths


def import_bars(bars: pl.DataFrame, tmp: Path, settings: object, sessions_: object) -> None:
    """Write ``bars`` as flat files and import them with the real importer."""
    from falcon.data.importer import import_files

    files = write_flat_files(bars, tmp / "day_aggs_v1")
    import_files(files, store=settings, sessions=sessions_, kind="day")  # type: ignore[arg-type]
