"""Benchmark: the overview page under load, against the same stack serving a static file.

A temporary FALCON_HOME gets the bundled sample (so the equity chart has its I:SPX benchmark), a
user, and one paper account with 10,000 fills over 2016-2018 and 100 open positions, written
directly through the models. gunicorn then serves the dashboard exactly as on a web node: with the
``GUNICORN_CMD_ARGS`` of systemd/falcon-web.service (read from the unit, so the bench measures
what production runs: gthread, 2 workers x 8 threads), on 127.0.0.1 instead of the unix socket,
and 32 concurrent clients, logged in with the session cookie, request:

- overview: ``GET /`` (accounts, the equity curve rebuilt from the 10,000 fills and marked at day
  closes, the latest screen, recent fills and events);
- ceiling:  ``GET /static/falcon.css`` through the same gunicorn and Flask (Flask's static file
  view: no database, no template). /healthz is not static (it reads the database), so it is not
  the ceiling.

The load generator is wrk (Debian's ``wrk``) when installed, else a Python asyncio/httpx client.
Goals: the overview at >= 30 % of the ceiling's requests/s, with p99 under 200 ms. The first
(cold) request of the overview, which rebuilds the equity curve, is timed on its own; after it
each worker serves the page's content from its cache (views/overview.py) until the data change.

    .venv/bin/python bench/web.py                 # 10 s per target
    .venv/bin/python bench/web.py --duration 20 --clients 32
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

USERNAME, PASSWORD = "bench", "bench password 123"
UNIT = REPO / "systemd" / "falcon-web.service"
START = datetime(2016, 1, 4, 14, 30, tzinfo=UTC)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(home: Path, *, fills: int, positions: int) -> None:
    """Migrate, load the sample, and write the user, account, orders, fills and positions."""
    from sqlalchemy import insert

    from falcon.config import load_settings
    from falcon.data.sample import load_sample
    from falcon.db.engine import make_engine, session_factory
    from falcon.db.migrate import upgrade
    from falcon.db.models import Fill, Order, PaperAccount, Position
    from falcon.web import users

    settings = load_settings({"home": str(home)}, environ={}, config_file=home / "falcon.toml")
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    load_sample(settings, sessions)
    rng = random.Random(7)
    tickers = [f"T{i:03d}" for i in range(positions)]
    price = {t: rng.uniform(10, 300) for t in tickers}
    held = dict.fromkeys(tickers, 0)
    orders: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    with sessions.begin() as s:
        users.create_user(s, USERNAME, PASSWORD, is_admin=True)
        account = PaperAccount(name="main", starting_cash=Decimal(1_000_000),
                               cash=Decimal(1_000_000))
        s.add(account)
        s.flush()
        for n in range(fills):
            ticker = tickers[n % positions]
            price[ticker] *= 1 + rng.gauss(0, 0.01)
            # Buy, sell, buy, ... per ticker: an odd count of fills per ticker leaves it held.
            side = "buy" if held[ticker] == 0 else "sell"
            qty = rng.randint(1, 50) if side == "buy" else held[ticker]
            held[ticker] += qty if side == "buy" else -qty
            ts = START + timedelta(days=n * 1095 // fills, minutes=n % 390)
            orders.append({"id": n + 1, "account_id": account.id, "client_order_id": f"o{n}",
                           "ticker": ticker, "side": side, "type": "market", "qty": qty,
                           "status": "filled", "filled_qty": qty,
                           "avg_fill_price": price[ticker], "created_at": ts, "updated_at": ts})
            rows.append({"order_id": n + 1, "account_id": account.id, "ticker": ticker,
                         "side": side, "qty": qty, "price": price[ticker],
                         "fee": Decimal("1.00"), "ts": ts, "idempotency_key": f"f{n}"})
        s.execute(insert(Order), orders)
        s.execute(insert(Fill), rows)
        for ticker in tickers:
            qty = held[ticker] or 1
            s.add(Position(account_id=account.id, ticker=ticker, qty=qty,
                           avg_cost=Decimal(str(round(price[ticker], 4)))))
    engine.dispose()


def unit_gunicorn_args(unit: Path = UNIT) -> str:
    """The ``GUNICORN_CMD_ARGS`` that the production unit sets (workers, worker class, threads)."""
    m = re.search(r'^Environment="GUNICORN_CMD_ARGS=([^"]*)"', unit.read_text(), re.M)
    if m is None:
        raise SystemExit(f"no GUNICORN_CMD_ARGS in {unit}")
    return m.group(1)


def start_gunicorn(home: Path, port: int, gunicorn_args: str) -> subprocess.Popen[bytes]:
    """gunicorn as on a web node, on loopback; returns once it answers /healthz."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FALCON_", "AWS_"))}
    env |= {"FALCON_HOME": str(home), "FALCON_CONFIG": str(home / "falcon.toml"),
            "GUNICORN_CMD_ARGS": gunicorn_args}
    gunicorn = Path(sys.executable).parent / "gunicorn"
    proc = subprocess.Popen(
        [str(gunicorn), "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
         "falcon.web.wsgi:app"],
        env=env, cwd=REPO, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("gunicorn did not start")


def login(base: str) -> str:
    """The ``falcon_session`` cookie of a logged-in session (through the real login form)."""
    with httpx.Client(base_url=base) as client:
        page = client.get("/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        if token is None:
            raise SystemExit("no CSRF token on /login")
        r = client.post("/login", data={"username": USERNAME, "password": PASSWORD,
                                        "csrf_token": token.group(1)})
        if r.status_code != 302:
            raise SystemExit(f"login failed: HTTP {r.status_code}")
        return str(client.cookies["falcon_session"])


def _wrk(url: str, cookie: str, clients: int, duration: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", str(clients), "-d", f"{duration}s", "--latency",
         "-H", f"Cookie: falcon_session={cookie}", url],
        capture_output=True, text=True, check=True,
    ).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\b", out, re.M)
        if m is None:
            raise SystemExit(f"wrk output without {label}:\n{out}")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"rps": float(rps.group(1)) if rps else 0.0, "p50": ms("50%"), "p99": ms("99%"),
            "bad": float(non2xx.group(1)) if non2xx else 0.0,
            "socket_errors": 1.0 if errors else 0.0}


async def _python_load(url: str, cookie: str, clients: int, duration: int) -> dict[str, float]:
    latencies: list[float] = []
    bad = 0
    stop = time.monotonic() + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(cookies={"falcon_session": cookie}, limits=limits) as client:

        async def one() -> None:
            nonlocal bad
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                r = await client.get(url)
                latencies.append((time.perf_counter() - t0) * 1000)
                bad += r.status_code != 200

        t0 = time.monotonic()
        await asyncio.gather(*(one() for _ in range(clients)))
        elapsed = time.monotonic() - t0
    q = statistics.quantiles(latencies, n=100)
    return {"rps": len(latencies) / elapsed, "p50": q[49], "p99": q[98], "bad": float(bad),
            "socket_errors": 0.0}


def load(url: str, cookie: str, clients: int, duration: int) -> dict[str, float]:
    """Requests/s and p50/p99 latency (ms) of ``url`` under ``clients`` concurrent clients."""
    if shutil.which("wrk"):
        return _wrk(url, cookie, clients, duration)
    return asyncio.run(_python_load(url, cookie, clients, duration))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fills", type=int, default=10_000)
    parser.add_argument("--positions", type=int, default=100)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=int, default=10, help="seconds per target")
    parser.add_argument("--gunicorn-args", default=None,
                        help="instead of the unit's GUNICORN_CMD_ARGS (for experiments only)")
    args = parser.parse_args()
    gunicorn_args = args.gunicorn_args or unit_gunicorn_args()
    workers_arg = re.search(r"--workers[= ](\d+)", gunicorn_args)
    workers = int(workers_arg.group(1)) if workers_arg else 1

    with tempfile.TemporaryDirectory(prefix="falcon-bench-web-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        # Plain http on loopback: the cookie must not be Secure, or httpx would not send it back.
        (home / "falcon.toml").write_text("[web]\nsecure_cookies = false\n")
        t0 = time.perf_counter()
        prepare(home, fills=args.fills, positions=args.positions)
        print(f"prepared {args.fills:,} fills, {args.positions} positions and the sample "
              f"in {time.perf_counter() - t0:.1f}s")
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        proc = start_gunicorn(home, port, gunicorn_args)
        try:
            cookie = login(base)
            with httpx.Client(cookies={"falcon_session": cookie}) as client:
                for worker in range(workers * 2):  # each worker rebuilds once (its cache)
                    t0 = time.perf_counter()
                    r = client.get(f"{base}/", headers={"Connection": "close"})
                    cold = (time.perf_counter() - t0) * 1000
                    if r.status_code != 200 or "Paper account main" not in r.text:
                        raise SystemExit(f"overview: HTTP {r.status_code} without the chart")
                    if worker == 0:
                        print(f"overview: first request (rebuilds the equity curve) {cold:.0f} ms,"
                              f" page {len(r.content) / 1024:.0f} KiB")
            tool = "wrk" if shutil.which("wrk") else "python asyncio/httpx"
            print(f"load: {tool}, {args.clients} clients, {args.duration}s each, gunicorn "
                  f"{gunicorn_args}\n")
            results = {
                "ceiling (/static/falcon.css)": load(f"{base}/static/falcon.css", cookie,
                                                     args.clients, args.duration),
                "overview (/)": load(f"{base}/", cookie, args.clients, args.duration),
            }
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    ceiling = results["ceiling (/static/falcon.css)"]["rps"]
    print(f"{'target':<30} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'of ceiling':>11}")
    for name, got in results.items():
        flag = "  (non-2xx: {:.0f})".format(got["bad"]) if got["bad"] else ""
        print(f"{name:<30} {got['rps']:>9.0f} {got['p50']:>8.1f} {got['p99']:>8.1f} "
              f"{got['rps'] / ceiling:>10.0%}{flag}")
    overview = results["overview (/)"]
    ratio = overview["rps"] / ceiling if ceiling else 0.0
    fast = overview["p99"] < 200
    share = ratio >= 0.3
    print(f"\noverview / ceiling: {overview['rps']:.0f} / {ceiling:.0f} req/s = {ratio:.0%} "
          f"(goal >= 30 %: {'met' if share else 'NOT met'}); overview p99 {overview['p99']:.0f} ms "
          f"(goal < 200 ms: {'met' if fast else 'NOT met'})")
    ok = share and fast and not overview["bad"]
    print(f"goal (>= 30 % of the ceiling, p99 < 200 ms): {'met' if ok else 'NOT met'}")
    with contextlib.suppress(OSError):  # not Linux: no load average to show
        print(f"load average: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
