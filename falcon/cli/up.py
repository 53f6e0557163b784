"""``falcon up``: the single-node main job.

On first run with an empty ``FALCON_HOME`` it creates the database, loads the bundled sample of
real market data, creates an admin user (its generated password is printed once) and runs the
screens; then it serves the dashboard with the scheduler, the job worker, the alert sender and
a paper account replaying the last year of sample data (sma_cross), all in the same process.
Every step is idempotent, so running it again just starts the services.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import signal
import socket
import threading
from datetime import date
from typing import Any

import click
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from falcon.cli.context import AppContext, app
from falcon.config import Settings

log = logging.getLogger(__name__)

DEMO_ACCOUNT = "default"
DEMO_STRATEGY = "sma_cross"
REPLAY_SESSIONS = 250


def _say(text: str) -> None:
    click.echo(click.style("==> ", fg="cyan") + text, err=True)


def _day_status(settings: Settings) -> Any:
    from falcon.data.status import store_status
    from falcon.data.store import Store

    return next((k for k in store_status(Store.of(settings)) if k.kind == "day"), None)


def _ensure_sample(settings: Settings, sessions: sessionmaker[Session]) -> date:
    """Load the sample when the store has no day bars; the last day in the store."""
    status = _day_status(settings)
    if status is None or not status.tickers:
        from falcon.data.sample import load_sample

        _say("loading the bundled sample of real market data")
        load_sample(settings, sessions)
        status = _day_status(settings)
    if status is None or status.last_date is None:
        raise click.ClickException("the market-data store is still empty after loading the sample")
    _say(f"market data: {status.tickers} tickers, {status.first_date} .. {status.last_date}")
    last: date = status.last_date
    return last


def _ensure_admin(sessions: sessionmaker[Session]) -> None:
    from falcon.db.models import User
    from falcon.web.users import create_user

    with sessions.begin() as s:
        if s.scalar(select(func.count()).select_from(User)):
            return
        password = secrets.token_urlsafe(12)
        create_user(s, "admin", password, is_admin=True)
    # Printed once, to the terminal only: it is not stored anywhere but as an argon2 hash.
    click.echo(
        click.style("admin user created: ", bold=True)
        + f"username admin, password {password}\n"
        + "  (shown once; change it with `falcon user passwd admin`)",
        err=True,
    )


def _run_screens(settings: Settings, sessions: sessionmaker[Session], as_of: date) -> None:
    from falcon.db.models import ScreenRun
    from falcon.screener.engine import run_screens
    from falcon.screener.profiles import load_profiles

    with sessions() as s:
        if s.scalar(select(func.count()).select_from(ScreenRun).where(ScreenRun.as_of == as_of)):
            return
    profiles = list(load_profiles(settings).values())
    _say(f"screening {as_of} with {len(profiles)} profiles")
    for result in run_screens(settings, sessions, profiles, as_of=as_of, use_llm=False):
        _say(f"  {result.profile.name}: {len(result.picks)} picks")


def _replay(settings: Settings, sessions: sessionmaker[Session], end: date,
            stop: threading.Event) -> None:
    """Replay the last sessions of the sample through the demo account (resumes if interrupted)."""
    from falcon import calendar
    from falcon.paper.runner import replay

    start = end
    for _ in range(REPLAY_SESSIONS):
        start = calendar.previous_trading_day(start)

    class _Control:
        @property
        def stopping(self) -> bool:
            return stop.is_set()

        def ping(self, *, force: bool = False) -> None:
            pass

    try:
        stats = replay(settings, sessions, account=DEMO_ACCOUNT, start=start, end=end,
                       strategies=[DEMO_STRATEGY], tickers=None, quiet=True, control=_Control())
        log.info("demo replay done: %s", stats)
    except Exception:  # the dashboard stays up; the failure is in the log
        log.exception("demo replay failed")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


@click.command("up")
@click.option("--host", default=None, help="Address to serve on (default web.host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default web.port, 8080).")
@click.option("--no-serve", is_flag=True, help="Prepare everything, replay, then exit.")
@click.option("--no-replay", is_flag=True, help="Do not replay sample data into the demo account.")
def cli(host: str | None, port: int | None, no_serve: bool, no_replay: bool) -> None:
    """Run Falcon on one machine: database, sample data, screens, trader and dashboard.

    The first run prepares an empty FALCON_HOME (SQLite database, the bundled sample data, an
    admin user whose password is printed once, the screens, a demo paper account replaying recent
    sample data); later runs just start the services. Stop with Ctrl-C.

    \b
    Examples:
      falcon up                      # http://127.0.0.1:8080
      falcon up --host 0.0.0.0 --port 9000
      falcon --home /tmp/falcon-try up --no-serve
    """
    ctx: AppContext = app()
    settings = ctx.settings
    _say(f"home {settings.home}")
    engine = ctx.ready_engine()
    ctx.export_to_environment()  # the in-process worker's job handlers load settings themselves
    sessions = ctx.sessions
    last = _ensure_sample(settings, sessions)
    _ensure_admin(sessions)
    _run_screens(settings, sessions, last)

    stop = threading.Event()
    if no_serve:
        if not no_replay:
            _say(f"replaying the {REPLAY_SESSIONS} sessions up to {last} into account "
                 f"{DEMO_ACCOUNT!r}")
            _replay(settings, sessions, last, stop)
        _say("ready (not serving: --no-serve)")
        return

    from werkzeug.serving import make_server

    from falcon.jobs.worker import start_in_thread
    from falcon.services.scheduler import SchedulerService
    from falcon.web import create_app

    host = host or settings.web.host
    port = settings.web.port if port is None else port
    overrides: dict[str, Any] = {}
    if _is_loopback(host):
        # Browsers keep Secure cookies on http://127.0.0.1 inconsistently; on loopback the
        # cookie never crosses a network, so plain HTTP is safe.
        overrides["SESSION_COOKIE_SECURE"] = False
    else:
        _say("serving plain HTTP beyond this machine: put nginx with TLS in front "
             "(the three-node install does), or set web.secure_cookies = false to log in")
    web = create_app(settings, test_config=overrides or None)
    server = make_server(host, port, web, threaded=True)

    from falcon.alerts.delivery import DeliveryWorker
    from falcon.alerts.settings import AlertSettings

    worker = start_in_thread(engine, stop)
    scheduler = SchedulerService(settings, engine)
    scheduler.start()
    delivery = DeliveryWorker(engine, AlertSettings.from_settings(settings))
    sender = threading.Thread(target=delivery.run, args=(stop,), name="falcon-alerts",
                              daemon=True)
    sender.start()
    threads = [worker, sender]
    if not no_replay:
        replayer = threading.Thread(target=_replay, args=(settings, sessions, last, stop),
                                    name="falcon-demo-replay", daemon=True)
        replayer.start()
        threads.append(replayer)
    def _on_signal(signum: int, _frame: Any) -> None:
        # Our own handler instead of KeyboardInterrupt: that exception lands in whichever
        # thread checks signals first (polars does, in the replay thread) and the server would
        # keep running. shutdown() must come from another thread than serve_forever().
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    _say(f"dashboard on http://{host}:{server.server_port}/  (Ctrl-C to stop)")
    try:
        server.serve_forever()
    finally:
        _say("stopping")
        stop.set()
        server.server_close()
        scheduler.shutdown(wait=False)
        for thread in threads:
            thread.join(timeout=30)
