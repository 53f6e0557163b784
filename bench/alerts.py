"""Alert benchmark: 1,000 rules over 500 tickers' minute bars, bar -> queued and bar -> delivered.

Usage::

    .venv/bin/python bench/alerts.py [--minutes 60] [--pace 0.2] [--db sqlite,postgres]
                                     [--database-url URL] [--worker thread|process]
                                     [--no-indicators]

Rules: 400 price crosses, 300 % moves (bars and minutes windows) and 300 indicator conditions
(RSI, SMA, EMA crosses) on 500 synthetic random-walk tickers; every rule sends to the dashboard and
a Slack-style webhook. The webhook receiver is a separate process on 127.0.0.1 (as Slack is never
inside Falcon's process) and stamps each request with the system-wide monotonic clock; the
delivery worker runs in a thread of the engine's process, as in ``falcon up`` (woken in process),
or with ``--worker process`` in its own, as ``falcon alerts run`` on a cluster (woken by NOTIFY
on PostgreSQL, by the ``data_version`` poll on SQLite).

The run is repeated on SQLite and on PostgreSQL: a throwaway server started the way the tests
start theirs (tests/pgserver.py), or ``--database-url``.

Figures, per database:
* bar -> queued: from a bar's arrival to its alert committed to the outbox (``on_bar`` returns
  after the commit), for every alert fired while measuring; two feeds: bar by bar (``on_bar``, how
  the trader calls it) and a minute at a time (``on_bars``). Indicator conditions are evaluated by
  ``falcon.alerts.indicator`` (being replaced by an incremental evaluator): their time is shown
  apart, from the engine's own split (``AlertEngine.timing``), and bar -> queued is also shown
  without it, so that the queueing path and the indicator evaluator can be judged separately;
* bar -> webhook delivered: from the bar's arrival to the receiver getting the alert;
* alerts/s: a burst of alerts queued 100 to a transaction, from the first commit to the last one
  received by the webhook;
* the peer, measured in the same run: the naive scan (every price and % move rule tested against
  every bar, no index) against the engine's indexed scan of the same minute, as a ratio; and
  queueing alerts one ORM flush at a time against the engine's bulk outbox insert.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, select, update

from falcon.alerts import AlertEngine, add_rule
from falcon.alerts.delivery import DeliveryWorker
from falcon.alerts.outbox import NewAlert, queue_alerts
from falcon.alerts.settings import AlertSettings
from falcon.db.engine import make_engine, session_factory, transaction
from falcon.db.migrate import upgrade
from falcon.db.models import AlertDelivery, AlertEvent
from falcon.db.types import utcnow
from falcon.domain.market import Bar
from falcon.services.heap import settle_heap

START = datetime(2024, 3, 5, 14, 30, tzinfo=UTC)
CONDITIONS = ["rsi(close, 14) < 35", "close > sma(close, 20)",
              "ema(close, 9) crosses_above ema(close, 21)"]


def mono() -> float:
    """CLOCK_MONOTONIC: one clock for this process and the receiver's."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


# --- the webhook receiver, in its own process ----------------------------------------------------


def _serve(conn: Connection) -> None:
    got: dict[str, float] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real webhook host offers

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            got.setdefault(f"{self.path}|{self.headers['X-Falcon-Event-Id']}", mono())
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    conn.send(server.server_address[1])
    while True:
        request = conn.recv()
        if request == "stop":
            return
        conn.send(dict(got))


class Receiver:
    """The loopback webhook in a child process; :meth:`received` returns key -> arrival time."""

    def __init__(self) -> None:
        self._conn, child = multiprocessing.Pipe()
        self._proc = multiprocessing.Process(target=_serve, args=(child,), daemon=True)
        self._proc.start()
        self.port = int(self._conn.recv())

    def url(self, token: str) -> str:
        return f"http://127.0.0.1:{self.port}/services/{token}/SECRET"

    def received(self, token: str) -> dict[int, float]:
        self._conn.send("get")
        prefix = f"/services/{token}/SECRET|"
        return {int(k[len(prefix):]): v for k, v in self._conn.recv().items()
                if k.startswith(prefix)}

    def wait_for(self, token: str, ids: Iterable[int], timeout: float) -> dict[int, float]:
        """:meth:`received`, once it holds every one of ``ids`` or after ``timeout`` seconds."""
        want = set(ids)
        deadline = time.monotonic() + timeout
        got = self.received(token)
        while time.monotonic() < deadline and not want <= set(got):
            time.sleep(0.05)
            got = self.received(token)
        return got

    def close(self) -> None:
        self._conn.send("stop")
        self._proc.join(10)


# --- the delivery worker: a thread (falcon up) or its own process (falcon alerts run) -------------


def _deliver(url: str, settings: AlertSettings, stop: Any, conn: Connection) -> None:
    engine = make_engine(url)
    worker = DeliveryWorker(engine, settings)
    worker.run(stop)
    conn.send(dict(worker.stats))
    engine.dispose()


class Deliverer:
    """A :class:`DeliveryWorker` in a thread of this process, or in a child process."""

    def __init__(self, url: str, settings: AlertSettings, where: str, engine: Engine) -> None:
        self.where = where
        if where == "thread":
            self._stop: Any = threading.Event()
            self.worker = DeliveryWorker(engine, settings)
            self._runner: Any = threading.Thread(target=self.worker.run, args=(self._stop,),
                                                 daemon=True)
        else:
            self._stop = multiprocessing.Event()
            self._conn, child = multiprocessing.Pipe()
            self._runner = multiprocessing.Process(target=_deliver,
                                                   args=(url, settings, self._stop, child))
        self._runner.start()

    def stop(self) -> dict[str, int]:
        self._stop.set()
        if self.where == "thread":
            self.worker.wake()
            self._runner.join(30)
            return dict(self.worker.stats)
        stats = self._conn.recv() if self._conn.poll(30) else {}
        self._runner.join(30)
        return dict(stats)


# --- the workload --------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def make_rules(engine: Engine, tickers: list[str], prices: dict[str, float],
               rng: random.Random, indicators: bool = True) -> None:
    with transaction(session_factory(engine)) as s:
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


class NaiveScan:
    """The peer: no index, every price and % move rule tested against every bar."""

    def __init__(self, alerts: AlertEngine) -> None:
        idx = alerts._index  # the same rules the engine holds
        self.rules = [r for table in (idx.price, idx.pct) for rs in table.values() for r in rs]
        self.prev: dict[str, float] = {}
        self.closes: dict[str, deque[float]] = {}
        self.timed: dict[str, deque[tuple[datetime, float]]] = {}

    def scan(self, bars: list[Bar]) -> int:
        hits = 0
        for bar in bars:
            closes = self.closes.setdefault(bar.ticker, deque(maxlen=11))
            closes.append(bar.close)
            timed = self.timed.setdefault(bar.ticker, deque(maxlen=11))
            timed.append((bar.ts, bar.close))
            for r in self.rules:
                p = r.params
                if p["ticker"] != bar.ticker:
                    continue
                if r.kind == "price_cross":
                    prev = self.prev.get(bar.ticker)
                    if prev is not None and (prev <= p["level"] < bar.close
                                             or prev >= p["level"] > bar.close):
                        hits += 1
                else:
                    ref = None
                    if "bars" in p and len(closes) > p["bars"]:
                        ref = closes[-p["bars"] - 1]
                    elif "minutes" in p:
                        horizon = bar.ts - timedelta(minutes=p["minutes"])
                        ref = next((c for ts, c in reversed(timed) if ts <= horizon), None)
                    if ref and abs(bar.close / ref - 1) * 100 >= p["pct"]:
                        hits += 1
            self.prev[bar.ticker] = bar.close
        return hits


def orm_queue(engine: Engine, n: int) -> float:
    """The queueing peer: one ORM add + flush per alert (the old outbox path); seconds."""
    from falcon.db.models import Event

    t0 = time.perf_counter()
    with transaction(session_factory(engine)) as s:
        for i in range(n):
            now = utcnow()
            ev = AlertEvent(rule_id=None, ticker="PEER", message=f"peer {i}", latency_ms=0.0,
                            created_at=now)
            s.add(ev)
            s.flush()
            s.add(Event(kind="alert", ts=now, payload={"event_id": ev.id}))
            s.add(AlertDelivery(event_id=ev.id, channel="dashboard", status="sent", attempts=1,
                                next_attempt_at=now, delivered_at=now))
            s.add(AlertDelivery(event_id=ev.id, channel="slack", status="pending", attempts=0,
                                next_attempt_at=now))
        s.flush()
    return time.perf_counter() - t0


def bulk_queue(engine: Engine, n: int, channels: list[str]) -> tuple[float, list[int]]:
    t0 = time.perf_counter()
    with transaction(session_factory(engine)) as s:
        ids = queue_alerts(s, [NewAlert(None, channels, f"burst {i}", "BURST", 0.0)
                               for i in range(n)])
    return time.perf_counter() - t0, ids


# --- one database --------------------------------------------------------------------------------


def run(url: str, label: str, args: argparse.Namespace, receiver: Receiver) -> None:
    engine = make_engine(url)
    upgrade(engine)
    sessions = session_factory(engine)
    rng = random.Random(7)
    tickers = [f"T{i:03d}" for i in range(500)]
    prices = {t: rng.uniform(20, 400) for t in tickers}
    make_rules(engine, tickers, prices, rng, indicators=not args.no_indicators)
    settings = AlertSettings(slack_webhook_url=receiver.url(label), send_concurrency=8,
                             batch_size=100)
    alerts = AlertEngine(engine, settings, auto_reload=False)
    naive = NaiveScan(alerts)

    t0 = time.perf_counter()
    for m in range(args.warmup):
        bars = walk(tickers, prices, m, rng)
        alerts.on_bars(bars)
        naive.scan(bars)
    warm_s = time.perf_counter() - t0
    with transaction(sessions) as s:  # the warm-up's alerts are not part of the measurement
        s.execute(update(AlertDelivery).where(AlertDelivery.status == "pending")
                  .values(status="sent"))

    # Start-up is over, as the paper trader has it before its first bar (falcon.paper.runner):
    # its start-up state is frozen out of the garbage collector's way.
    settle_heap()
    worker = Deliverer(url, settings, args.worker, engine)

    queued: list[float] = []  # on_bar: per alert, ms
    queued_ex: list[float] = []  # the same without the indicator evaluation of that call
    batch_queued: list[float] = []
    batch_queued_ex: list[float] = []
    ind_bar: list[float] = []  # indicator evaluation per on_bar call that had any
    ind_batch: list[float] = []
    queue_ms: list[float] = []  # claim + outbox write + commit, per call that fired
    per_bar: list[float] = []
    scan_idx: list[float] = []
    scan_naive: list[float] = []
    arrival: dict[int, float] = {}
    half = args.minutes // 2
    load_before = os.getloadavg()

    def feed(call: Any, batch: Any, all_ms: list[float], ex_ms: list[float],
             ind_ms: list[float]) -> float:
        """One on_bar or on_bars call, timed from the bar's arrival; its alerts recorded."""
        arrived_at, start = utcnow(), mono()
        fired = call(batch, arrived_at)
        ms = (mono() - start) * 1000
        tm = alerts.timing
        if tm.indicator_queries:
            ind_ms.append(tm.indicator_ms)
        if fired:
            queue_ms.append(tm.queue_ms)
        for f in fired:
            all_ms.append(ms)
            ex_ms.append(ms - tm.indicator_ms)
            arrival[f.event_id] = start
        return ms

    for k in range(args.minutes):
        bars = walk(tickers, prices, args.warmup + k, rng)
        if k < half:  # bar by bar, as the trader calls it
            for b in bars:
                per_bar.append(feed(alerts.on_bar, b, queued, queued_ex, ind_bar))
        else:  # a minute at a time
            feed(alerts.on_bars, bars, batch_queued, batch_queued_ex, ind_batch)
            scan_idx.append(alerts.timing.scan_ms)
        t1 = time.perf_counter()
        naive.scan(bars)
        scan_naive.append((time.perf_counter() - t1) * 1000)
        time.sleep(args.pace)
    got = receiver.wait_for(label, arrival, 30)
    delivered = [(got[e] - a) * 1000 for e, a in arrival.items() if e in got]
    with sessions() as s:
        recorded = [v for v in s.scalars(select(AlertEvent.latency_ms)
                                         .where(AlertEvent.id.in_(list(arrival))))
                    if v is not None]

    # Burst: alerts queued as the engine does (100 to a transaction), until all are received.
    n_burst = args.burst
    first = mono()
    burst_ids: list[int] = []
    for _ in range(n_burst // 100):
        burst_ids += bulk_queue(engine, 100, ["dashboard", "slack"])[1]
    got = receiver.wait_for(label, burst_ids, 60)
    last = max((got[i] for i in burst_ids if i in got), default=first)
    burst_rate = sum(1 for i in burst_ids if i in got) / max(last - first, 1e-9)
    stats = worker.stop()
    # The queueing peer, same database, same alerts and rows, with nothing else running.
    orm_s = sum(orm_queue(engine, 100) for _ in range(n_burst // 100))
    bulk_s = sum(bulk_queue(engine, 100, ["dashboard", "slack"])[0]
                 for _ in range(n_burst // 100))
    alerts.close()
    engine.dispose()

    n_ind = 0 if args.no_indicators else 300
    print(f"\n== {label}: 1000 rules ({n_ind} indicator), 500 tickers, {args.warmup} warm-up + "
          f"{args.minutes} measured minutes, pace {args.pace}s/minute; warm-up {warm_s:.1f}s; "
          f"delivery worker in a {args.worker}")
    print(f"load avg before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} "
          f"({os.cpu_count()} cpus)")
    print(f"bar -> queued, on_bar:          n={len(queued)}  p50={pct(queued, .5):.2f} ms  "
          f"p99={pct(queued, .99):.2f} ms  (target p99 < 10)")
    print(f"   without indicator eval:      p50={pct(queued_ex, .5):.2f} ms  "
          f"p99={pct(queued_ex, .99):.2f} ms")
    print(f"bar -> queued, on_bars (500):   n={len(batch_queued)}  "
          f"p50={pct(batch_queued, .5):.2f} ms  p99={pct(batch_queued, .99):.2f} ms")
    print(f"   without indicator eval:      p50={pct(batch_queued_ex, .5):.2f} ms  "
          f"p99={pct(batch_queued_ex, .99):.2f} ms")
    print(f"indicator evaluation (indicator.py, apart): per on_bar call p50="
          f"{pct(ind_bar, .5):.2f} ms p99={pct(ind_bar, .99):.2f} ms; per on_bars call p50="
          f"{pct(ind_batch, .5):.2f} ms p99={pct(ind_batch, .99):.2f} ms")
    print(f"queueing (claim + outbox + commit) per call that fired: p50={pct(queue_ms, .5):.2f}"
          f" ms  p99={pct(queue_ms, .99):.2f} ms")
    print(f"latency_ms recorded on the alerts: p50={pct(recorded, .5):.2f} ms  "
          f"p99={pct(recorded, .99):.2f} ms")
    print(f"bar -> webhook delivered:       n={len(delivered)}/{len(arrival)}  "
          f"p50={pct(delivered, .5):.1f} ms  p99={pct(delivered, .99):.1f} ms  "
          f"(target p99 < 500)")
    print(f"alerts/s, burst of {n_burst} queued 100 per transaction -> received: "
          f"{burst_rate:.0f}/s")
    print(f"evaluation per bar (on_bar, all rules): p50={pct(per_bar, .5) * 1000:.0f} us  "
          f"p99={pct(per_bar, .99) * 1000:.0f} us")
    idx_ms, naive_ms = pct(scan_idx, .5), pct(scan_naive, .5)
    print(f"peer, naive scan of the 700 price/% rules per 500-bar minute: p50={naive_ms:.2f} ms"
          f" vs indexed {idx_ms:.2f} ms: {naive_ms / idx_ms:.1f}x")
    print(f"peer, queueing {n_burst} alerts one ORM flush each: {orm_s * 1000:.0f} ms vs bulk "
          f"{bulk_s * 1000:.0f} ms: {orm_s / bulk_s:.1f}x")
    print(f"worker ({args.worker}): {stats}")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--minutes", type=int, default=60, help="measured minutes")
    ap.add_argument("--warmup", type=int, default=200, help="minutes before measuring")
    ap.add_argument("--pace", type=float, default=0.2, help="seconds between minutes")
    ap.add_argument("--burst", type=int, default=2000, help="alerts in the throughput burst")
    ap.add_argument("--db", default="sqlite,postgres",
                    help="databases to run on (postgres: a throwaway server, or --database-url)")
    ap.add_argument("--database-url", help="the PostgreSQL database to use instead")
    ap.add_argument("--worker", choices=["thread", "process"], default="thread",
                    help="delivery worker in a thread (falcon up) or its own process (cluster)")
    ap.add_argument("--no-indicators", action="store_true",
                    help="make the 300 indicator rules price crosses (the pure-Python path)")
    args = ap.parse_args()

    receiver = Receiver()
    try:
        for db in args.db.split(","):
            if db == "sqlite":
                tmp = tempfile.mkdtemp(prefix="falcon-bench-alerts-")
                run(f"sqlite:///{tmp}/falcon.db", "sqlite", args, receiver)
            elif db == "postgres" and args.database_url:
                run(args.database_url, "postgres", args, receiver)
            elif db == "postgres":
                try:
                    from tests.pgserver import PostgresServer

                    server = PostgresServer().start()
                except (ImportError, RuntimeError, OSError, subprocess.CalledProcessError) as exc:
                    print(f"\n== postgres: skipped, cannot start a server ({exc}); "
                          f"give --database-url")
                    continue
                try:
                    run(server.url(), "postgres", args, receiver)
                finally:
                    server.stop()
    finally:
        receiver.close()


if __name__ == "__main__":
    main()
