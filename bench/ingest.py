"""Flat-file ingest speed: Falcon's import against polars' own read_csv of the same file.

Generates (synthetic) a day file of 10,000 tickers and a minute file of 1,000,000 rows in Massive's
flat-file format (.csv.gz), imports each through the real import path (parse, checks, Parquet
store, DataImport records) into a temporary FALCON_HOME, and prints rows/s beside
``polars.read_csv`` of the same file in the same run. Goal: ratio >= 0.5.

    .venv/bin/python bench/ingest.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
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


def _falcon_import(path: Path, home: Path) -> float:
    from falcon.config import load_settings
    from falcon.data.importer import import_files
    from falcon.db.engine import make_engine, session_factory
    from falcon.db.migrate import upgrade

    if home.exists():
        import shutil

        shutil.rmtree(home)
    os.environ["FALCON_HOME"] = str(home)
    settings = load_settings()
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    started = time.perf_counter()
    report = import_files([path], store=settings, sessions=sessions)
    took = time.perf_counter() - started
    engine.dispose()
    if report.files[0].status != "imported":
        raise SystemExit(f"bench import did not import: {report.files[0].line()}")
    return took


def _polars_read(path: Path) -> float:
    started = time.perf_counter()
    pl.read_csv(path)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="Runs per case (median is shown).")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cases = [
            ("day, 10,000 tickers", _frame(10_000, 1, minute=False, seed=1),
             root / "day_aggs_v1" / f"{DAY}.csv.gz"),
            ("minute, 1,000,000 rows", _frame(2_500, 400, minute=True, seed=2),
             root / "minute_aggs_v1" / f"{DAY}.csv.gz"),
        ]
        for label, frame, path in cases:
            _write(frame, path)
            falcon_s, polars_s = [], []
            for i in range(args.repeat):
                # Alternate the order so that neither side always gets a warm cache.
                if i % 2:
                    polars_s.append(_polars_read(path))
                    falcon_s.append(_falcon_import(path, root / "home"))
                else:
                    falcon_s.append(_falcon_import(path, root / "home"))
                    polars_s.append(_polars_read(path))
            f, p = statistics.median(falcon_s), statistics.median(polars_s)
            n = frame.height
            rows.append((label, n, path.stat().st_size, n / f, n / p, p / f))
    print(f"{'case':<24}{'rows':>11}{'gz MB':>8}{'falcon rows/s':>16}{'polars rows/s':>16}"
          f"{'ratio':>8}")
    for label, n, size, fr, pr, ratio in rows:
        print(f"{label:<24}{n:>11,}{size / 1e6:>8.1f}{fr:>16,.0f}{pr:>16,.0f}{ratio:>8.2f}")
    print("ratio = falcon import rows/s / polars read_csv rows/s (goal >= 0.5)")


if __name__ == "__main__":
    main()
