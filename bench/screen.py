"""Benchmark: the whole-market screen against the way most screeners do it, and against the floor.

A synthetic universe (default 10,000 tickers x 300 sessions, seeded random walks with a realistic
spread of prices and volumes) is written as Massive day flat files and imported through the real
importer into a temporary store. Then, each in its own subprocess (wall time of the work and the
process's peak RSS):

- falcon: ``run_screens`` with every built-in profile (read the warm-up window, liquidity pass,
  indicators for every profile in one pass, ranking, storing runs and picks in SQLite);
- talib:  the peer: read the same window with pandas, loop over tickers and compute the same
  indicators with TA-Lib on each ticker's frame, then test the same conditions;
- floor:  polars reading just the needed columns of the window (no computation at all).

Goals: falcon at least 3x faster than talib, within 5x of floor, at most half of talib's peak.

    .venv/bin/python bench/screen.py                  # 10,000 x 300
    .venv/bin/python bench/screen.py --tickers 2000   # quicker
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

AS_OF = date(2024, 5, 1)
NY = ZoneInfo("America/New_York")


def _sessions(n: int) -> list[date]:
    from falcon import calendar as cal

    return cal.trading_days(date(AS_OF.year - 3, 1, 1), AS_OF)[-n:]


def make_store(home: Path, n_tickers: int, n_days: int, seed: int = 7) -> dict[str, float]:
    """Write the synthetic universe as flat files and import them; timings of each step."""
    import numpy as np
    import polars as pl

    from falcon.config import load_settings
    from falcon.data.importer import import_files
    from falcon.db.engine import make_engine, session_factory
    from falcon.db.migrate import upgrade

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    days = _sessions(n_days)
    n = n_tickers * n_days
    start = np.exp(rng.uniform(np.log(3), np.log(400), n_tickers))
    # Dollar volume spans $100k..$2B a day, so that the $5M floor keeps about half the market.
    dollar = np.exp(rng.uniform(np.log(1e5), np.log(2e9), n_tickers))
    returns = rng.normal(0.0003, 0.022, (n_tickers, n_days))
    close = start[:, None] * np.exp(np.cumsum(returns, axis=1))
    prev = np.concatenate([start[:, None], close[:, :-1]], axis=1)
    open_ = prev * np.exp(rng.normal(0, 0.006, (n_tickers, n_days)))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.008, (n_tickers, n_days))))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.008, (n_tickers, n_days))))
    volume = np.round(dollar[:, None] / close * rng.lognormal(0, 0.35, (n_tickers, n_days)))
    names = np.array([f"T{i:05d}" for i in range(n_tickers)])
    ns = np.array([int(datetime.combine(d, dtime(0), NY).timestamp()) * 1_000_000_000
                   for d in days], dtype=np.int64)
    frame = pl.DataFrame({
        "ticker": np.repeat(names, n_days), "volume": volume.ravel(),
        "open": open_.ravel().round(4), "close": close.ravel().round(4),
        "high": high.ravel().round(4), "low": low.ravel().round(4),
        "window_start": np.tile(ns, n_tickers), "transactions": np.full(n, 100, dtype=np.int64),
        "day": np.tile(np.arange(n_days), n_tickers),
    })
    folder = home / "flatfiles" / "day_aggs_v1"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for (i,), part in frame.group_by(["day"]):
        path = folder / f"{days[int(i)]:%Y-%m-%d}.csv.gz"
        with gzip.open(path, "wb", compresslevel=1) as fh:
            part.drop("day").write_csv(fh)  # type: ignore[call-overload]
        paths.append(path)
    t1 = time.perf_counter()
    settings = load_settings({"home": home})
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    import_files(sorted(paths), store=settings, sessions=session_factory(engine), kind="day")
    engine.dispose()
    t2 = time.perf_counter()
    return {"write_flat_files_s": t1 - t0, "import_s": t2 - t1}


# --- the three sides (each runs in a child process) -------------------------------------------


def side_falcon(home: Path) -> dict[str, object]:
    from falcon.config import load_settings
    from falcon.db.engine import make_engine, session_factory
    from falcon.screener.engine import run_screens
    from falcon.screener.profiles import load_profiles

    settings = load_settings({"home": home})
    sessions = session_factory(make_engine(settings.effective_database_url))
    profiles = list(load_profiles(settings).values())
    _sessions(1)  # the NYSE calendar is built once per process, as in the other sides
    t = time.perf_counter()
    results = run_screens(settings, sessions, profiles, as_of=AS_OF, use_llm=False)
    wall = time.perf_counter() - t
    # A scheduler process screens every day: the second run shows the warm figure.
    t = time.perf_counter()
    run_screens(settings, sessions, profiles, as_of=AS_OF, use_llm=False)
    warm = time.perf_counter() - t
    return {"wall_s": wall, "warm_s": warm, "universe": results[0].universe_size,
            "candidates": {r.profile.name: r.candidates for r in results}}


def _window_files(home: Path) -> tuple[list[Path], date]:
    from falcon.config import load_settings
    from falcon.data.store import Store
    from falcon.screener.profiles import load_profiles

    warmup = max(p.warmup_bars for p in load_profiles(load_settings({"home": home})).values())
    start = _sessions(warmup)[0]
    return Store(home / "market_data").partitions("day", start, AS_OF), start


def side_floor(home: Path) -> dict[str, object]:
    import polars as pl

    files, start = _window_files(home)
    t = time.perf_counter()
    frame = (pl.scan_parquet(files)
             .filter(pl.col("date").is_between(start, AS_OF))
             .select("ticker", "date", "open", "high", "low", "close", "volume").collect())
    return {"wall_s": time.perf_counter() - t, "rows": frame.height}


def side_talib(home: Path) -> dict[str, object]:
    import numpy as np
    import pandas as pd
    import talib

    files, start = _window_files(home)
    t = time.perf_counter()
    frame = pd.concat([pd.read_parquet(f, columns=["ticker", "date", "open", "high", "low",
                                                   "close", "volume"]) for f in files])
    frame = frame[(frame["date"] >= start) & (frame["date"] <= AS_OF)]
    frame = frame.sort_values(["ticker", "date"])
    hits = {k: 0 for k in ("momentum_breakout", "oversold_bounce", "trend_pullback",
                           "volatility_squeeze", "gap_and_go")}
    universe = 0
    for _ticker, g in frame.groupby("ticker", sort=False):
        if g["date"].iloc[-1] != AS_OF or len(g) < 20:
            continue
        o, h, lo = g["open"].to_numpy(), g["high"].to_numpy(), g["low"].to_numpy()
        c, v = g["close"].to_numpy(), g["volume"].to_numpy()
        if c[-1] < 5 or v[-20:].mean() < 200_000 or (c[-20:] * v[-20:]).mean() < 5e6:
            continue
        universe += 1
        sma_v = talib.SMA(v, 20)
        rel = v[-1] / sma_v[-2]
        high20 = talib.MAX(c, 20)
        rsi = talib.RSI(c, 14)
        upper, middle, lower = talib.BBANDS(c, 20, 2, 2, talib.MA_Type.SMA)
        width = (upper - lower) / middle
        min_width = talib.MIN(width, 120)
        sma20, sma50, sma200 = talib.SMA(c, 20), talib.SMA(c, 50), talib.SMA(c, 200)
        talib.ATR(h, lo, c, 14)
        talib.ROC(c, 20)
        gap = (o[-1] / c[-2] - 1) * 100
        if c[-1] > high20[-2] and rel >= 1.5:
            hits["momentum_breakout"] += 1
        if rsi[-1] < 30 and rsi[-1] > rsi[-2] and c[-1] <= lower[-1] * 1.02:
            hits["oversold_bounce"] += 1
        if (c[-1] > sma200[-1] and 40 <= rsi[-1] <= 50
                and (abs(c[-1] / sma20[-1] - 1) <= 0.02 or abs(c[-1] / sma50[-1] - 1) <= 0.02)):
            hits["trend_pullback"] += 1
        if not np.isnan(min_width[-1]) and width[-1] <= min_width[-1]:
            hits["volatility_squeeze"] += 1
        if gap >= 4 and rel >= 2 and c[-1] >= o[-1]:
            hits["gap_and_go"] += 1
    return {"wall_s": time.perf_counter() - t, "universe": universe, "candidates": hits}


SIDES = {"falcon": side_falcon, "talib": side_talib, "floor": side_floor}


def _peak_rss_mb() -> float:
    # VmHWM is this process image's high-water mark; ru_maxrss would also count the parent's
    # memory inherited at fork (Linux keeps it across exec).
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(side: str, home: Path) -> None:
    out = SIDES[side](home)
    out["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(out))


def _run_side(side: str, home: Path) -> dict[str, object]:
    proc = subprocess.run([sys.executable, __file__, "--child", side, "--home", str(home)],
                          capture_output=True, text=True, check=False, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side (best is kept)")
    parser.add_argument("--child")
    parser.add_argument("--home", type=Path)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.home)
        return
    with tempfile.TemporaryDirectory(prefix="falcon-bench-") as tmp:
        home = Path(tmp)
        print(f"universe: {args.tickers:,} tickers x {args.days} sessions "
              f"({args.tickers * args.days:,} rows), screened on {AS_OF}")
        setup = make_store(home, args.tickers, args.days)
        print(f"setup: flat files {setup['write_flat_files_s']:.1f}s, "
              f"real import {setup['import_s']:.1f}s")
        best: dict[str, dict[str, object]] = {}
        for _ in range(args.repeat):
            for side in ("floor", "talib", "falcon"):
                got = _run_side(side, home)
                if side not in best or float(got["wall_s"]) < float(best[side]["wall_s"]):  # type: ignore[arg-type]
                    best[side] = got
    f, a, b = best["falcon"], best["talib"], best["floor"]
    print(f"\n{'side':<8}{'wall s':>9}{'peak RSS MB':>13}   (falcon: cold, first screen)")
    for name in ("falcon", "talib", "floor"):
        r = best[name]
        print(f"{name:<8}{float(r['wall_s']):>9.3f}{float(r['peak_rss_mb']):>13.0f}")  # type: ignore[arg-type]
    fw, aw, bw = (float(x["wall_s"]) for x in (f, a, b))  # type: ignore[arg-type]
    fm, am = float(f["peak_rss_mb"]), float(a["peak_rss_mb"])  # type: ignore[arg-type]
    print(f"\nfalcon vs talib: {aw / fw:.1f}x faster (goal >= 3x)  "
          f"{'OK' if aw / fw >= 3 else 'MISSED'}")
    print(f"falcon vs floor: {fw / bw:.1f}x the floor (goal <= 5x)  "
          f"{'OK' if fw / bw <= 5 else 'MISSED'}")
    print(f"peak memory: {fm:.0f} MB vs talib {am:.0f} MB = {fm / am:.2f} (goal <= 0.5)  "
          f"{'OK' if fm / am <= 0.5 else 'MISSED'}")
    print(f"falcon warm (second screen in the same process): {float(f['warm_s']):.3f}s, "  # type: ignore[arg-type]
          f"{aw / float(f['warm_s']):.1f}x faster than talib, "  # type: ignore[arg-type]
          f"{float(f['warm_s']) / bw:.1f}x the floor")  # type: ignore[arg-type]
    print(f"universe after the liquidity floor: falcon {f['universe']}, talib {a['universe']}")
    print(f"candidates: falcon {f['candidates']}\n            talib  {a['candidates']}")
    # Wall times on a shared machine mean little without its load (1, 5, 15 minute averages).
    print(f"load average at the end: {Path('/proc/loadavg').read_text().split()[:3]}")
    os.environ.pop("FALCON_HOME", None)


if __name__ == "__main__":
    main()
