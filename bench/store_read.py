"""Read speed of the day-bar store: the session-file layout against one file per month.

The store writes one file per imported session and compacts a month once it holds more than
``MAX_FILES_PER_MONTH`` files or is over (falcon/data/store.py). The peer is the layout it
replaced, where every import rewrote its month: a year of 12 month files. Both hold the same
synthetic year (``--tickers`` x 252 sessions); the new one at its worst, the running month with
the most files it can have. Each query goes through ``read_bars`` (what every engine calls).

    .venv/bin/python bench/store_read.py [--tickers 11000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

if TYPE_CHECKING:
    from falcon.data.store import Store


def _frame(day: date, names: list[str], rng: np.random.Generator) -> pl.DataFrame:
    from falcon.data.store import STORE_SCHEMA

    n = len(names)
    close = rng.uniform(1, 500, n)
    ts = pl.Series([day] * n).cast(pl.Datetime("ns")).dt.replace_time_zone("UTC")
    return pl.DataFrame({
        "ticker": names, "ts": ts, "open": close, "high": close * 1.01, "low": close * 0.99,
        "close": close, "volume": rng.uniform(0, 1e6, n), "transactions": rng.integers(0, 999, n),
        "date": [day] * n,
    }).cast(STORE_SCHEMA)  # type: ignore[arg-type]


def build(root: Path, n_tickers: int) -> tuple[Store, Store, list[date]]:
    """(month-file store, session-file store, sessions)."""
    from falcon import calendar as cal
    from falcon.data.store import MAX_FILES_PER_MONTH, Store

    sessions = cal.trading_days(date(2023, 1, 1), date(2023, 12, 31))
    running = [d for d in sessions if d.month == 12]
    # The running month with the most files the store lets it have.
    sessions = [d for d in sessions if d.month < 12] + running[: 2 * MAX_FILES_PER_MONTH]
    names = [f"T{i:05d}" for i in range(n_tickers)]
    rng = np.random.default_rng(7)
    frames = {d: _frame(d, names, rng) for d in sessions}
    monthly = Store(root / "monthly")
    for month in sorted({d.month for d in sessions}):
        rows = pl.concat([f for d, f in frames.items() if d.month == month]).sort("ticker", "ts")
        path = monthly.root / "day" / "2023" / f"2023-{month:02d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows.write_parquet(path, compression="zstd", compression_level=1, statistics=True,
                           row_group_size=65_536)
    daily = Store(root / "daily")
    daily.replace_dates("day", pl.concat([f for d, f in frames.items() if d.month < 12]))
    for d in sessions:
        if d.month == 12:
            daily.replace_dates("day", frames[d])  # one import per session, as they arrive
    return monthly, daily, sessions


def main() -> None:
    from falcon.data.reader import read_bars

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickers", type=int, default=11_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        monthly, daily, sessions = build(Path(tmp), args.tickers)
        few = ["T00001", f"T{args.tickers // 2:05d}", f"T{args.tickers - 1:05d}"]
        queries: list[tuple[str, Callable[[Store], object]]] = [
            ("a year, every ticker", lambda s: read_bars(s).collect()),
            ("a year, 3 tickers", lambda s: read_bars(s, tickers=few).collect()),
            ("60 sessions, every ticker", lambda s: read_bars(s, start=sessions[-60]).collect()),
            ("the session dates", lambda s: s.dates("day")),
        ]
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.repeat):
            for label, query in queries:
                for name, store in (("month files", monthly), ("session files", daily)):
                    started = time.perf_counter()
                    query(store)
                    times.setdefault((label, name), []).append(time.perf_counter() - started)
        n_month = len(monthly.partitions("day"))
        n_daily = len(daily.partitions("day"))
    print(f"files: {n_month} month files; {n_daily} with session files")
    print(f"{'query':<28}{'session ms':>12}{'month ms':>10}{'ratio':>8}")
    for label, _ in queries:
        new = statistics.median(times[(label, "session files")]) * 1000
        old = statistics.median(times[(label, "month files")]) * 1000
        print(f"{label:<28}{new:>12.1f}{old:>10.1f}{old / new:>8.2f}")
    print("ratio = month-file time / session-file time (>= 1: the new layout is as fast or faster)")
    with open("/proc/loadavg") as fh:
        print(f"load average: {fh.read().strip()}")


if __name__ == "__main__":
    main()
