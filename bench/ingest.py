"""Flat-file ingest speed: Falcon's import against polars' own read_csv of the same files.

Generates (synthetic) day files of 10,000 tickers and a minute file of 1,000,000 rows in Massive's
flat-file format (.csv.gz), imports them through the real import path (parse, checks, Parquet
store, DataImport records in SQLite) into a temporary FALCON_HOME, and prints rows/s beside
``polars.read_csv`` of the same files in the same run. Goal: ratio >= 0.5. Cases:

- day, 1 file: one session into an empty store (a first import);
- day, 21 calls: the sessions of a month imported one call each into the same store, the way
  the daily sync brings them (includes the compactions the store does on the way);
- day, 20 files in 1 call: a backlog imported at once, the way ``data sync`` catches up;
- minute, 1 file: one session of 1,000,000 minute bars into an empty store.

    .venv/bin/python bench/ingest.py [--repeat 3] [--fsync]

``--fsync`` imports with the setting ``data.fsync`` on (each Parquet file flushed to disk); the
default is the setting's default, off.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import io
import os
import shutil
import statistics
import tempfile
import time
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

DAY = date(2024, 3, 5)
NY = ZoneInfo("America/New_York")


def _frame(n_tickers: int, per_ticker: int, *, minute: bool, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_tickers * per_ticker
    names = np.array([f"T{i:05d}" for i in range(n_tickers)])
    start = datetime(DAY.year, DAY.month, DAY.day, 4 if minute else 0, tzinfo=NY)
    step = 60 if minute else 0
    ws = int(start.timestamp()) * 10**9 + np.tile(np.arange(per_ticker), n_tickers) * step * 10**9
    o = rng.uniform(1, 500, n).round(4)
    c = (o * rng.uniform(0.97, 1.03, n)).round(4)
    h = (np.maximum(o, c) * rng.uniform(1, 1.01, n)).round(4)
    low = (np.minimum(o, c) * rng.uniform(0.99, 1, n)).round(4)
    return pl.DataFrame({
        "ticker": np.repeat(names, per_ticker),
        "volume": rng.integers(1, 5_000_000, n).astype(float),
        "open": o, "close": c, "high": h, "low": low,
        "window_start": ws,
        "transactions": rng.integers(1, 50_000, n),
    })


def _write(frame: pl.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    frame.write_csv(buf)
    path.write_bytes(gzip.compress(buf.getvalue(), compresslevel=6))
    return path


class _Home:
    """A fresh FALCON_HOME with a migrated SQLite database."""

    def __init__(self, home: Path) -> None:
        from falcon.config import load_settings
        from falcon.db.engine import make_engine, session_factory
        from falcon.db.migrate import upgrade

        if home.exists():
            shutil.rmtree(home)
        os.environ["FALCON_HOME"] = str(home)
        self.settings = load_settings()
        self.engine = make_engine(self.settings.effective_database_url)
        upgrade(self.engine)
        self.sessions = session_factory(self.engine)
        # The set-up's garbage (migrations) is not the import's: without this, a full collection
        # it made due lands inside the timed import (~15 ms on one day file).
        gc.collect()

    def run(self, paths: list[Path]) -> float:
        """Seconds of one ``import_files`` call (what ``falcon data import`` runs)."""
        from falcon.data.importer import import_files

        started = time.perf_counter()
        report = import_files(paths, store=self.settings, sessions=self.sessions)
        took = time.perf_counter() - started
        bad = [f for f in report.files if f.status != "imported"]
        if bad:
            raise SystemExit(f"bench import did not import: {bad[0].line()}")
        return took


def _polars_read(paths: list[Path]) -> float:
    started = time.perf_counter()
    for path in paths:
        pl.read_csv(path)
    return time.perf_counter() - started


def _case_one_call(paths: list[Path], home: Path) -> tuple[float, float]:
    h = _Home(home)
    try:
        return h.run(paths), _polars_read(paths)
    finally:
        h.engine.dispose()


def _case_month(paths: list[Path], home: Path) -> tuple[float, float]:
    h = _Home(home)
    try:
        falcon = sum(h.run([p]) for p in paths)
    finally:
        h.engine.dispose()
    return falcon, _polars_read(paths)


def _sessions(n: int) -> list[date]:
    from falcon import calendar as cal

    return cal.trading_days(date(2024, 3, 1), date(2024, 4, 30))[:n]


def main() -> None:
    global DAY
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="Runs per case (median is shown).")
    parser.add_argument("--fsync", action="store_true",
                        help="Import with data.fsync on (flush each Parquet file to disk).")
    args = parser.parse_args()
    os.environ["FALCON_DATA__FSYNC"] = "true" if args.fsync else "false"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        month = _sessions(21)
        day_files = []
        for i, day in enumerate(month):
            DAY = day
            day_files.append(_write(_frame(10_000, 1, minute=False, seed=i),
                                    root / "day_aggs_v1" / f"{day}.csv.gz"))
        DAY = month[0]
        minute = _write(_frame(2_500, 400, minute=True, seed=99),
                        root / "minute_aggs_v1" / f"{DAY}.csv.gz")
        # Warm up once (imports, first queries): the figures are of a running process, as in
        # the scheduler's sync; a cold `falcon data import` adds Python's start-up to each.
        _case_one_call([day_files[-1]], root / "home")
        cases = [
            ("day, 1 file", [day_files[0]], _case_one_call),
            ("day, 21 calls (a month)", day_files, _case_month),
            ("day, 20 files in 1 call", day_files[:20], _case_one_call),
            ("minute, 1 file", [minute], _case_one_call),
        ]
        for label, paths, case in cases:
            falcon_s, polars_s = [], []
            for _ in range(args.repeat):
                f, p = case(paths, root / "home")
                falcon_s.append(f)
                polars_s.append(p)
            f, p = statistics.median(falcon_s), statistics.median(polars_s)
            n = sum(pl.scan_csv(path).select(pl.len()).collect().item() for path in paths)
            size = sum(path.stat().st_size for path in paths)
            rows.append((label, n, size, n / f, n / p, p / f))
    print(f"{'case':<26}{'rows':>11}{'gz MB':>8}{'falcon rows/s':>16}{'polars rows/s':>16}"
          f"{'ratio':>8}")
    for label, n, size, fr, pr, ratio in rows:
        print(f"{label:<26}{n:>11,}{size / 1e6:>8.1f}{fr:>16,.0f}{pr:>16,.0f}{ratio:>8.2f}")
    print("ratio = falcon import rows/s / polars read_csv rows/s of the same files (goal >= 0.5);"
          f" data.fsync = {'true' if args.fsync else 'false'}")
    with open("/proc/loadavg") as fh:
        print(f"load average: {fh.read().strip()}")


if __name__ == "__main__":
    main()
