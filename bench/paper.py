"""Benchmark: one trading day of minute bars for 500 tickers through the paper trader.

Synthetic random-walk bars (seeded), three minute strategies active (SMA cross, RSI reversion,
Bollinger reversion, all long-only with brackets where the spec has them). The bars of one minute
arrive together and are committed as one transaction (a *batch*); a bar's latency is the time
from its arrival (with its batch) to the commit of that batch, which makes its decisions durable;
p50/p99 are over bars (every bar of a batch has its batch's latency). Strategy evaluation is
streaming (``falcon.strategy.SignalStream``); its share of the time is reported separately.

Peer, in the same run: the vectorised backtester over the same bars and strategies (what a
whole-day decision costs when nothing has to be decided bar by bar, persisted or crash-safe).

Usage::

    .venv/bin/python bench/paper.py                    # SQLite, and PostgreSQL if it can start one
    .venv/bin/python bench/paper.py --db sqlite --tickers 100
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from falcon import calendar  # noqa: E402
from falcon.backtest.engine import run_backtest  # noqa: E402
from falcon.backtest.results import BacktestConfig  # noqa: E402
from falcon.db.engine import make_engine, session_factory, transaction  # noqa: E402
from falcon.db.migrate import upgrade  # noqa: E402
from falcon.domain.market import Bar  # noqa: E402
from falcon.paper import batch_writes  # noqa: E402
from falcon.paper.decisions import DecisionLog  # noqa: E402
from falcon.paper.limits import RiskLimits  # noqa: E402
from falcon.paper.persist import create_account  # noqa: E402
from falcon.paper.signals import StrategySlot  # noqa: E402
from falcon.paper.trader import Trader  # noqa: E402
from falcon.services.heap import settle_heap  # noqa: E402
from falcon.strategy import builtin_document, compile_signals, load_spec  # noqa: E402

DAY = date(2024, 3, 4)
STRATEGIES: dict[str, dict[str, float]] = {
    "sma_cross": {"fast": 5, "slow": 20}, "rsi_reversion": {}, "bollinger_reversion": {},
}


def synthetic_bars(n_tickers: int, n_minutes: int, seed: int = 7) -> list[list[Bar]]:
    """One batch of bars per minute, random walks from 20..200."""
    rng = np.random.default_rng(seed)
    open_, _ = calendar.session_open_close(DAY)
    start = rng.uniform(20, 200, n_tickers)
    steps = rng.standard_normal((n_minutes, n_tickers)) * 0.002
    close = start * np.exp(np.cumsum(steps, axis=0))
    prev = np.vstack([start, close[:-1]])
    high = np.maximum(prev, close) * (1 + rng.uniform(0, 0.001, close.shape))
    low = np.minimum(prev, close) * (1 - rng.uniform(0, 0.001, close.shape))
    names = [f"T{i:03d}" for i in range(n_tickers)]
    batches = []
    for m in range(n_minutes):
        ts = open_ + timedelta(minutes=m)
        batches.append([
            Bar(ticker=names[i], ts=ts, open=float(prev[m, i]), high=float(high[m, i]),
                low=float(low[m, i]), close=float(close[m, i]), volume=1000.0)
            for i in range(n_tickers)
        ])
    return batches


def slots() -> list[StrategySlot]:
    out = []
    for name, params in STRATEGIES.items():
        doc = builtin_document(name)
        doc["timeframe"] = "minute"
        doc["max_positions"] = 200
        doc["sizing"] = {"kind": "fraction", "value": 0.01}
        out.append(StrategySlot(name=name, spec=load_spec(doc, params or None), margin=10))
    return out


def run_paper(url: str, batches: list[list[Bar]]) -> dict[str, Any]:
    engine = make_engine(url)
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as s:
        create_account(s, "bench", 1_000_000.0)
    limits = RiskLimits(max_open_positions=1000, max_position_pct=0.05, max_sector_pct=1.0,
                        max_strategy_pct=1.0, daily_loss_pct=1.0, max_drawdown_pct=1.0)
    trader = Trader(sessions, account="bench", slots=slots(), kind="minute", limits=limits,
                    picks=False, log_sink=DecisionLog(None))
    settle_heap()  # as falcon.paper.service.run_batches does before the first bar
    latencies: list[float] = []
    sizes: list[int] = []
    per_batch_events: list[int] = []
    events = 0
    signal_s = [0.0]
    for stream in trader.streams:  # time the strategies' evaluation apart from the rest
        push = stream.push

        def timed(*args: Any, _push: Any = push) -> Any:
            t = time.perf_counter()
            try:
                return _push(*args)
            finally:
                signal_s[0] += time.perf_counter() - t

        stream.push = timed  # type: ignore[method-assign,assignment]
    t0 = time.perf_counter()
    for batch in batches:
        arrived = time.perf_counter()
        result = trader.process(batch)
        committed = time.perf_counter()
        latencies.append(committed - arrived)
        sizes.append(len(batch))
        per_batch_events.append(len(result.events))
        events += len(result.events)
    total = time.perf_counter() - t0
    engine.dispose()
    bars = sum(len(b) for b in batches)
    lat = np.repeat(np.array(latencies) * 1000, sizes)  # per bar
    # What a batch costs: a fixed part (bars, strategies, the commit) and a part per order event
    # (its rows, ledger legs, audit entry, live event, log line), fitted over the day's batches.
    slope, fixed = np.polyfit(per_batch_events, np.array(latencies) * 1000, 1)
    return {"bars": bars, "seconds": total, "bars_per_s": bars / total,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "per_bar_us": total / bars * 1e6, "order_events": events,
            "decisions": trader.log.count, "signals_s": signal_s[0], "load": _loadavg(),
            "fixed_ms": float(fixed), "per_event_ms": float(slope),
            "events_p50": float(np.percentile(per_batch_events, 50)),
            "events_max": int(max(per_batch_events))}


@contextmanager
def writes_dropped() -> Iterator[None]:
    """Diagnostic (``--decisions-only``): the batch's rows are dropped instead of written (new
    orders get made-up ids), so that what is left is the decision logic with the account row's
    update and the commit: the floor under the per-bar latency that faster writes could reach."""
    ids = itertools.count(1)

    def drop(session: Any) -> None:
        b = batch_writes.active_batch(session)
        if b is None:
            return
        for cid in b.new_orders:
            oid = b.state.order_ids[cid] = next(ids)  # type: ignore[union-attr]
            pending = b.state.pending.get(cid)  # type: ignore[union-attr]
            if pending is not None:
                pending.id = oid
        for part in (b.new_orders, b.parent_of, b.updates, b.fills, b.positions, b.events,
                     b.audit):
            part.clear()

    real = batch_writes.flush_batch
    batch_writes.flush_batch = drop
    try:
        yield
    finally:
        batch_writes.flush_batch = real


def run_peer(batches: list[list[Bar]]) -> float:
    rows = [(b.ticker, b.ts, b.open, b.high, b.low, b.close, b.volume)
            for batch in batches for b in batch]
    frame = pl.DataFrame(rows, schema=["ticker", "ts", "open", "high", "low", "close", "volume"],
                         orient="row").sort("ticker", "ts")
    t0 = time.perf_counter()
    for slot in slots():
        run_backtest(compile_signals(slot.spec, frame), risk=slot.spec.risk,
                     config=BacktestConfig(cash=1_000_000.0))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--minutes", type=int, default=390)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--decisions-only", action="store_true",
                        help="diagnostic: drop the batch's rows instead of writing them (the "
                             "account row and the commit stay), to see the decision logic's cost")
    args = parser.parse_args()
    dropped = writes_dropped() if args.decisions_only else nullcontext()
    print(f"generating {args.tickers} tickers x {args.minutes} minutes ...", flush=True)
    batches = synthetic_bars(args.tickers, args.minutes)
    calendar.is_open(datetime(2024, 3, 4, 15, tzinfo=UTC))  # load the calendar outside the clock
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp, dropped:
        if args.db in ("sqlite", "both"):
            results["sqlite"] = run_paper(f"sqlite:///{tmp}/bench.db", batches)
            print(f"sqlite: {results['sqlite']}", flush=True)
        if args.db in ("postgres", "both"):
            try:
                sys.path.insert(0, str(ROOT / "tests"))
                from pgserver import PostgresServer

                server = PostgresServer().start()
            except Exception as exc:  # no server binaries: report and go on
                print(f"postgresql: not measured ({exc})")
            else:
                try:
                    from sqlalchemy import create_engine, text

                    admin = create_engine(server.url().replace("postgresql://",
                                                               "postgresql+psycopg://"),
                                          isolation_level="AUTOCOMMIT")
                    with admin.connect() as conn:
                        conn.execute(text("CREATE DATABASE bench"))
                        # The replay runs a day in seconds, about a thousand times faster than
                        # live bars come. Autovacuum, which wakes once a minute, would never
                        # analyze the tables it grows from empty: the plans psycopg prepares on
                        # the first batches (scans of what were tiny tables) would stay for the
                        # whole day, which never happens live. Woken every second it analyzes
                        # them as they grow, as it does over a live day.
                        conn.execute(text("ALTER SYSTEM SET autovacuum_naptime = 1"))
                        conn.execute(text("SELECT pg_reload_conf()"))
                    admin.dispose()
                    results["postgres"] = run_paper(server.url("bench"), batches)
                    print(f"postgres: {results['postgres']}", flush=True)
                finally:
                    server.stop()
    peer = run_peer(batches)
    print(f"\npaper trader, one day of minute bars ({args.tickers} tickers, "
          f"{len(STRATEGIES)} strategies; latency per bar = its arrival -> its batch's commit)"
          + ("\nDIAGNOSTIC --decisions-only: the batches' rows were dropped, not written"
             if args.decisions_only else ""))
    print(f"{'db':<10}{'bars':>8}{'total s':>10}{'bars/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'us/bar':>9}{'events':>8}{'signals s':>11}")
    for db, r in results.items():
        print(f"{db:<10}{r['bars']:>8}{r['seconds']:>10.2f}{r['bars_per_s']:>10.0f}"
              f"{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['per_bar_us']:>9.1f}"
              f"{r['order_events']:>8}{r['signals_s']:>11.2f}")
    for db, r in results.items():
        print(f"{db}: a batch costs about {r['fixed_ms']:.1f} ms + {r['per_event_ms']:.2f} ms per "
              f"order event (least squares over the day); order events per batch: median "
              f"{r['events_p50']:.0f}, max {r['events_max']}")
    print(f"peer: vectorised backtester, same bars and strategies: {peer:.2f} s "
          f"(no persistence, no bar-by-bar decisions)")
    for db, r in results.items():
        print(f"ratio {db} / peer: {r['seconds'] / peer:.1f}x;  goals: p99 < 5 ms "
              f"({'met' if r['p99_ms'] < 5 else 'not met'}), day < 30 s "
              f"({'met' if r['seconds'] < 30 else 'not met'})")
    for db, r in results.items():
        print(f"load average after {db}: {r['load']}")
    print(f"load average now: {_loadavg()}")


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
