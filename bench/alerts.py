"""Alert benchmark: 1,000 rules over 500 tickers' minute bars, bar -> queued and bar -> delivered.

Usage::

    .venv/bin/python bench/alerts.py [--minutes 60] [--pace 0.2] [--database-url URL]

Rules: 400 price crosses, 300 % moves (bars and minutes windows) and 300 indicator conditions
(RSI, SMA, EMA crosses) on 500 synthetic random-walk tickers; every rule sends to the dashboard and
a Slack-style webhook served on 127.0.0.1, with a delivery worker running in a thread.

Figures:
* bar -> queued: from a bar's arrival to its alert committed to the outbox (``on_bar`` returns
  after the commit), for every alert fired while measuring; two feeds: bar by bar (``on_bar``, how
  the trader calls it) and a minute at a time (``on_bars``);
* bar -> delivered: from the bar's arrival to the loopback webhook receiving the alert;
* evaluation per bar over all bars, and the peer: the same rules scanned without the index
  (every price rule tested on every bar, as a naive loop would).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import update

from falcon.alerts import AlertEngine, add_rule
from falcon.alerts.delivery import DeliveryWorker
from falcon.alerts.settings import AlertSettings
from falcon.db.engine import make_engine, session_factory, transaction
from falcon.db.migrate import upgrade
from falcon.db.models import AlertDelivery
from falcon.db.types import utcnow
from falcon.domain.market import Bar

START = datetime(2024, 3, 5, 14, 30, tzinfo=UTC)
CONDITIONS = ["rsi(close, 14) < 35", "close > sma(close, 20)",
              "ema(close, 9) crosses_above ema(close, 21)"]


class Receiver:
    """The loopback webhook: records perf_counter() at receipt per event id."""

    def __init__(self) -> None:
        self.got: dict[int, float] = {}
        recv = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                recv.got.setdefault(int(self.headers["X-Falcon-Event-Id"]), time.perf_counter())
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T/B/SECRET"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def make_rules(sessions: Any, tickers: list[str], prices: dict[str, float],
               rng: random.Random, indicators: bool = True) -> None:
    with transaction(sessions) as s:
        for i in range(1000):
            t = tickers[i % len(tickers)]
            ch = ["dashboard", "slack"]
            if i < 400 or (not indicators and i >= 700):
                side = "above" if i % 2 else "below"
                level = prices[t] * (1 + rng.uniform(-0.01, 0.01))
                add_rule(s, kind="price_cross", params={"ticker": t, side: level},
                         channels=ch, cooldown="5m")
            elif i < 700:
                window = {"bars": 5} if i % 2 else {"minutes": 10}
                add_rule(s, kind="pct_move", params={"ticker": t, "pct": 0.6, **window},
                         channels=ch, cooldown="5m")
            else:
                add_rule(s, kind="indicator", channels=ch, cooldown="5m",
                         params={"ticker": t, "condition": CONDITIONS[i % 3]})


def walk(tickers: list[str], prices: dict[str, float], minute: int,
         rng: random.Random) -> list[Bar]:
    out = []
    for t in tickers:
        p = prices[t] = prices[t] * (1 + rng.gauss(0, 0.002))
        out.append(Bar(ticker=t, ts=START + timedelta(minutes=minute), open=p, high=p * 1.001,
                       low=p * 0.999, close=p, volume=1000.0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=int, default=60, help="measured minutes")
    ap.add_argument("--warmup", type=int, default=200, help="minutes before measuring")
    ap.add_argument("--pace", type=float, default=0.2, help="seconds between minutes")
    ap.add_argument("--database-url", help="default: a temporary SQLite file")
    ap.add_argument("--no-indicators", action="store_true",
                    help="make the 300 indicator rules price crosses (the pure-Python path)")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="falcon-bench-alerts-")
    url = args.database_url or f"sqlite:///{tmp}/falcon.db"
    engine = make_engine(url)
    upgrade(engine)
    sessions = session_factory(engine)
    rng = random.Random(7)
    tickers = [f"T{i:03d}" for i in range(500)]
    prices = {t: rng.uniform(20, 400) for t in tickers}
    make_rules(sessions, tickers, prices, rng, indicators=not args.no_indicators)
    receiver = Receiver()
    settings = AlertSettings(slack_webhook_url=receiver.url, poll_interval_s=0.02,
                             send_concurrency=8, batch_size=100)
    alerts = AlertEngine(engine, settings, auto_reload=False)

    t0 = time.perf_counter()
    for m in range(args.warmup):
        alerts.on_bars(walk(tickers, prices, m, rng))
    warm_s = time.perf_counter() - t0
    with transaction(sessions) as s:  # the warm-up's alerts are not part of the measurement
        s.execute(update(AlertDelivery).where(AlertDelivery.status == "pending")
                  .values(status="sent"))

    stop = threading.Event()
    worker = DeliveryWorker(engine, settings)
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()

    queued: list[float] = []
    arrival: dict[int, float] = {}
    per_bar: list[float] = []
    batch_queued: list[float] = []
    half = args.minutes // 2
    load_before = os.getloadavg()
    for k in range(args.minutes):
        bars = walk(tickers, prices, args.warmup + k, rng)
        if k < half:  # bar by bar, as the trader calls it
            for b in bars:
                arrived_at, start = utcnow(), time.perf_counter()
                fired = alerts.on_bar(b, arrived_at)
                done = time.perf_counter()
                per_bar.append((done - start) * 1000)
                for f in fired:
                    queued.append((done - start) * 1000)
                    arrival[f.event_id] = start
        else:  # a minute at a time
            arrived_at, start = utcnow(), time.perf_counter()
            fired = alerts.on_bars(bars, arrived_at)
            done = time.perf_counter()
            for f in fired:
                batch_queued.append((done - start) * 1000)
                arrival[f.event_id] = start
        time.sleep(args.pace)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not set(arrival) <= set(receiver.got):
        time.sleep(0.05)
    stop.set()
    thread.join(30)
    delivered = [(receiver.got[e] - a) * 1000 for e, a in arrival.items() if e in receiver.got]

    # The peer: no index, every price rule checked against every bar.
    price_rules = [r for rules in alerts._index.price.values() for r in rules]
    prev = dict(prices)
    bars = walk(tickers, prices, 10_000, rng)
    t1 = time.perf_counter()
    for b in bars:
        for r in price_rules:
            if r.params["ticker"] == b.ticker:
                lvl = r.params["level"]
                _ = prev[b.ticker] <= lvl < b.close
    naive_ms = (time.perf_counter() - t1) * 1000 / len(bars)

    print(f"alerts bench: 1000 rules, 500 tickers, {args.warmup} warm-up + {args.minutes} "
          f"measured minutes, pace {args.pace}s/minute, db {url.split(':')[0]}, "
          f"indicator rules: {'no' if args.no_indicators else 300}")
    print(f"machine: {os.cpu_count()} cpus, load avg before {load_before[0]:.2f}, "
          f"after {os.getloadavg()[0]:.2f}; warm-up {warm_s:.1f}s")
    print(f"bar -> queued (on_bar):  n={len(queued)}  p50={pct(queued, .5):.2f} ms  "
          f"p99={pct(queued, .99):.2f} ms  max={max(queued, default=0):.2f} ms  (target < 10)")
    print(f"minute -> queued (on_bars, 500 bars): n={len(batch_queued)}  "
          f"p50={pct(batch_queued, .5):.2f} ms  p99={pct(batch_queued, .99):.2f} ms")
    print(f"bar -> webhook delivered: n={len(delivered)}/{len(arrival)}  "
          f"p50={pct(delivered, .5):.1f} ms  p99={pct(delivered, .99):.1f} ms  (target < 500)")
    print(f"evaluation per bar (all bars): p50={pct(per_bar, .5) * 1000:.0f} us  "
          f"p99={pct(per_bar, .99) * 1000:.0f} us")
    print(f"peer (unindexed scan of the 400 price rules): {naive_ms * 1000:.0f} us per bar "
          f"vs indexed p50 {pct(per_bar, .5) * 1000:.0f} us (all 1000 rules)")
    print(f"worker: {dict(worker.stats)}")


if __name__ == "__main__":
    main()
