"""Backtester benchmark: falcon against backtesting.py and vectorbt, measured in the same run.

(a) sma_cross 10/20, all-in, long-only, on one synthetic random-walk symbol of ``--bars`` bars
    (1,000,000 by default): bars per second of falcon (cold and warm), vectorbt (first call with
    its numba compilation, then warm) and backtesting.py (on ``--bt-bars`` bars, 100,000 by
    default, because it needs minutes for a million; its bars/s is what is compared). The runs
    are checked to make the same trades and final equity.
(b) a portfolio: ``--symbols`` symbols x ``--years`` years of daily bars, a 20/50 SMA cross with
    a 5 % stop loss, a 15 % take profit, an 8 % trailing stop, 20 positions of 5 % of equity,
    commission 5 bp. The signals are written to Parquet first; a fresh subprocess reads them
    (as the worker reads the store) and backtests: its wall time and peak RSS are reported.

Usage: .venv/bin/python bench/backtest.py [--bars N] [--bt-bars N] [--no-vectorbt] [--no-portfolio]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from falcon.backtest.engine import run_backtest
from falcon.backtest.results import BacktestConfig
from falcon.domain.rules import Level, RiskRules, Sizing, SizingKind, StopKind


def random_walk(n: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]] * (1 + rng.normal(0, 0.001, n))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.002, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.002, n)))
    ts = pl.datetime_range(
        datetime(2000, 1, 1),
        datetime(2000, 1, 1) + timedelta(minutes=n - 1),
        "1m",
        eager=True,
        time_zone="UTC",
    )
    return pl.DataFrame(
        {
            "ticker": "X",
            "ts": ts,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": 1000.0,
        }
    )


def sma_signals(frame: pl.DataFrame, fast: int, slow: int) -> pl.DataFrame:
    f = pl.col("close").rolling_mean(fast).over("ticker")
    s = pl.col("close").rolling_mean(slow).over("ticker")
    f1, s1 = f.shift(1).over("ticker"), s.shift(1).over("ticker")
    up = ((f1 < s1) & (f > s)).fill_null(False)
    down = ((f1 > s1) & (f < s)).fill_null(False)
    return frame.with_columns(entry_long=up, exit_long=down, entry_short=down, exit_short=up)


def timed(fn, *args, **kw):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - start


def run_falcon(signals: pl.DataFrame) -> tuple[float, int]:
    result = run_backtest(signals, risk=RiskRules(), config=BacktestConfig())
    return result.final_equity, result.metrics["trades"]


def run_vectorbt(signals: pl.DataFrame) -> tuple[float, int]:
    import vectorbt as vbt

    pdf = signals.select("ts", "open", "close", "entry_long", "exit_long").to_pandas()
    # A tz-naive index: vectorbt is ~100x slower on a tz-aware one, which would be unfair to it.
    pdf = pdf.set_index(pdf["ts"].dt.tz_localize(None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pf = vbt.Portfolio.from_signals(
            pdf["close"],
            entries=pdf["entry_long"].shift(1, fill_value=False),
            exits=pdf["exit_long"].shift(1, fill_value=False),
            price=pdf["open"],
            size=np.inf,
            size_granularity=1,
            init_cash=10_000,
            fees=0.0,
            freq="1min",
        )
        # The equity curve and the trade records: what falcon's result holds too.
        final = float(pf.value().iloc[-1])
        closed = int((pf.trades.values["status"] == 1).sum())
        return final, closed


def run_backtesting_py(signals: pl.DataFrame) -> tuple[float, int]:
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover
    from backtesting.test import SMA

    class SmaCross(Strategy):
        def init(self) -> None:
            self.fast = self.I(SMA, self.data.Close, 10)
            self.slow = self.I(SMA, self.data.Close, 20)

        def next(self) -> None:
            if crossover(self.fast, self.slow):
                self.buy()
            elif crossover(self.slow, self.fast):
                self.position.close()

    pdf = signals.select("ts", "open", "high", "low", "close", "volume").to_pandas().set_index("ts")
    pdf.index = pdf.index.tz_localize(None)
    pdf.columns = ["Open", "High", "Low", "Close", "Volume"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = Backtest(pdf, SmaCross, cash=10_000).run()
    return float(stats["Equity Final [$]"]), int(stats["# Trades"])


def single_symbol(n_bars: int, bt_bars: int, with_vectorbt: bool) -> None:
    print(f"(a) sma_cross 10/20 long-only all-in, one symbol, {n_bars:,} bars")
    frame = random_walk(n_bars)
    signals, sig_s = timed(sma_signals, frame, 10, 20)
    rows: list[tuple[str, int, float, str]] = []
    (eq_cold, n_cold), cold = timed(run_falcon, signals)
    warm = min(timed(run_falcon, signals)[1] for _ in range(3))
    rows += [
        ("falcon (first call)", n_bars, cold, ""),
        ("falcon (warm, best of 3)", n_bars, warm, ""),
    ]
    falcon_bps = n_bars / warm
    if with_vectorbt:
        try:
            (eq_v, n_v), compile_s = timed(run_vectorbt, signals)
        except ImportError:
            print("   vectorbt not installed: skipped")
        else:
            vbt_warm = min(timed(run_vectorbt, signals)[1] for _ in range(3))
            same = abs(eq_v / eq_cold - 1) < 1e-6 and n_v == n_cold
            rows += [
                ("vectorbt (first call, compiles)", n_bars, compile_s, ""),
                (
                    "vectorbt (warm, best of 3)",
                    n_bars,
                    vbt_warm,
                    "same trades+equity" if same else "DIFFERENT",
                ),
            ]
    small = signals.head(bt_bars)
    (eq_b, n_b), bt_s = timed(run_backtesting_py, small)
    eq_f, n_f = run_falcon(small)
    same = abs(eq_b / eq_f - 1) < 1e-6 and n_b == n_f
    rows.append(
        (
            f"backtesting.py (on the first {bt_bars:,} bars)",
            bt_bars,
            bt_s,
            "same trades+equity" if same else "DIFFERENT",
        )
    )
    print(
        f"   signals computed by polars in {sig_s:.2f} s (not in the figures below);"
        f" {n_cold:,} trades"
    )
    header = f"{'engine':<44}{'bars':>11}{'seconds':>10}{'bars/s':>14}{'falcon warm is':>17}"
    print(f"   {header}  check")
    for name, bars, seconds, note in rows:
        bps = bars / seconds
        print(
            f"   {name:<44}{bars:>11,}{seconds:>10.3f}{bps:>14,.0f}"
            f"{falcon_bps / bps:>16.1f}x  {note}"
        )


def make_portfolio(symbols: int, years: int, path: str) -> None:
    """Write the synthetic daily bars with their SMA-cross signals to a Parquet file."""
    days = 252 * years
    rng = np.random.default_rng(1)
    close = 50 * np.exp(np.cumsum(rng.normal(0.0003, 0.02, (symbols, days)), axis=1))
    gap = np.exp(rng.normal(0, 0.005, (symbols, days)))
    open_ = np.concatenate([close[:, :1], close[:, :-1]], axis=1) * gap
    wick = 1 + np.abs(rng.normal(0, 0.01, (symbols, days)))
    high, low = np.maximum(open_, close) * wick, np.minimum(open_, close) / wick
    stamps = pl.datetime_range(
        datetime(2010, 1, 4),
        datetime(2010, 1, 4) + timedelta(days=days - 1),
        "1d",
        eager=True,
        time_zone="UTC",
    )
    frame = pl.DataFrame(
        {
            "ticker": pl.Series([f"S{i:04d}" for i in range(symbols)]).gather(
                np.repeat(np.arange(symbols), days)
            ),
            "ts": pl.concat([stamps] * symbols),
            "open": open_.ravel(),
            "high": high.ravel(),
            "low": low.ravel(),
            "close": close.ravel(),
            "volume": 1e6,
        }
    )
    sma_signals(frame, 20, 50).write_parquet(path)


def portfolio_child(path: str) -> None:
    """Read the signals (as from the Parquet store) and backtest them; print figures as JSON."""

    def rss() -> float:
        # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork and exec, so a
        # child would report its parent's peak.
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    baseline = rss()  # the interpreter with polars, numpy and falcon imported
    signals = pl.read_parquet(path)
    risk = RiskRules(
        stop_loss=Level(kind=StopKind.PERCENT, value=0.05),
        take_profit=Level(kind=StopKind.PERCENT, value=0.15),
        trailing_stop=Level(kind=StopKind.PERCENT, value=0.08),
        max_positions=20,
        sizing=Sizing(kind=SizingKind.FRACTION, value=0.05),
    )
    config = BacktestConfig(cash=1_000_000, commission=0.0005)
    result, seconds = timed(run_backtest, signals, risk=risk, config=config)
    reasons = dict(result.trades.group_by("exit_reason").len().iter_rows())
    print(
        json.dumps(
            {
                "rows": signals.height,
                "seconds": seconds,
                "baseline_mb": baseline,
                "peak_rss_mb": rss(),
                "trades": result.metrics["trades"],
                "exits": reasons,
                "rejected": result.rejections.height,
            }
        )
    )


def portfolio(symbols: int, years: int) -> None:
    print(f"(b) portfolio: {symbols} symbols x {years} years daily, stops, targets, trailing stops")
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "signals.parquet")
        make_portfolio(symbols, years, path)
        out = subprocess.run(
            [sys.executable, __file__, "--portfolio-child", path],
            capture_output=True,
            text=True,
            check=True,
        )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"   {r['rows']:,} bars, {r['trades']:,} closed trades {r['exits']},"
        f" {r['rejected']:,} entries refused (max_positions)"
    )
    print(
        f"   run_backtest wall time {r['seconds']:.2f} s (target < 10 s); peak RSS of a fresh"
        f" process that reads the Parquet file and runs it: {r['peak_rss_mb']:.0f} MB"
        f" (target < 1024 MB; {r['baseline_mb']:.0f} MB of it is the interpreter and imports)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--bt-bars", type=int, default=100_000)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--no-vectorbt", action="store_true")
    parser.add_argument("--no-portfolio", action="store_true")
    parser.add_argument("--portfolio-child", metavar="PARQUET", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.portfolio_child:
        portfolio_child(args.portfolio_child)
        return
    single_symbol(args.bars, args.bt_bars, not args.no_vectorbt)
    if not args.no_portfolio:
        portfolio(args.symbols, args.years)


if __name__ == "__main__":
    main()
