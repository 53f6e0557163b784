"""The scheduler: NYSE-calendar triggers, DB claims (exactly one node runs), runs recorded."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from falcon import calendar as cal
from falcon.config import Settings, load_settings
from falcon.db.engine import make_engine
from falcon.db.models import Event, ScreenRun, ServiceRun
from falcon.services.scheduler import (
    JobSpec,
    SchedulerService,
    claim,
    fire_times,
    job_specs,
    run_job,
    trigger_for,
)

from ..screener import synth
from .sdsocket import NotifySocket

NY = cal.NEW_YORK
REPO = Path(__file__).resolve().parents[2]


def test_trading_day_trigger_skips_weekends_and_holidays_across_dst() -> None:
    trigger = trigger_for("18:00")
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)
    times = fire_times(trigger, start, end)
    days = [t.astimezone(NY).date() for t in times]
    assert days == cal.trading_days(date(2024, 1, 1), date(2024, 12, 31))
    assert len(days) == 252
    for holiday in (date(2024, 3, 29), date(2024, 7, 4), date(2024, 11, 28), date(2024, 12, 25)):
        assert holiday not in days
    assert date(2024, 11, 29) in days  # an early close is still a session
    utc = {t.astimezone(NY).date(): t.astimezone(UTC).hour for t in times}
    assert utc[date(2024, 3, 8)] == 23 and utc[date(2024, 3, 11)] == 22  # 18:00 EST, then EDT
    assert all(t.astimezone(NY).strftime("%H:%M") == "18:00" for t in times)
    # After the Friday before Independence Day weekend... straight to the next session.
    after = trigger.get_next_fire_time(None, datetime(2024, 7, 3, 23, 0, tzinfo=UTC))
    assert after is not None and after.astimezone(NY).date() == date(2024, 7, 5)


def test_cron_entries_and_every_day_jobs() -> None:
    cron = fire_times(trigger_for("45 9 * * mon-fri"), datetime(2024, 12, 23, tzinfo=UTC),
                      datetime(2024, 12, 28, tzinfo=UTC))
    assert [t.astimezone(NY).date().day for t in cron] == [23, 24, 26, 27]  # not Christmas
    daily = fire_times(trigger_for("03:15", trading_days=False),
                       datetime(2024, 12, 23, tzinfo=UTC), datetime(2024, 12, 30, tzinfo=UTC))
    assert len(daily) == 7


def test_job_specs_cover_profiles_sync_reference_housekeeping() -> None:
    ids = {s.id for s in job_specs(load_settings())}
    assert {"screen:momentum_breakout", "screen:oversold_bounce", "screen:trend_pullback",
            "screen:volatility_squeeze", "screen:gap_and_go", "data:sync", "data:sync#2",
            "reference:refresh", "housekeeping"} <= ids


def test_claim_is_once_per_job_and_fire_time(engine: Engine) -> None:
    t = datetime(2024, 5, 1, 22, 0, tzinfo=UTC)
    first = claim(engine, "screen:x", t)
    assert first is not None
    assert claim(engine, "screen:x", t) is None
    assert claim(engine, "screen:x", t.astimezone(NY)) is None  # the same instant in New York
    assert claim(engine, "screen:x", t + timedelta(days=1)) is not None
    assert claim(engine, "screen:y", t) is not None


def test_two_nodes_claiming_the_same_run_one_wins(db_url: str) -> None:
    """Eight 'nodes' (own engine and connection each) race for one fire time, ten times over."""
    engines = [make_engine(db_url) for _ in range(8)]
    try:
        for round_ in range(10):
            when = datetime(2024, 5, 1, 22, round_, tzinfo=UTC)
            barrier = threading.Barrier(len(engines))
            wins: list[int] = []

            def node(eng: Engine, when: datetime = when, barrier: threading.Barrier = barrier,
                     wins: list[int] = wins) -> None:
                barrier.wait()
                got = claim(eng, "screen:race", when)
                if got is not None:
                    wins.append(got)

            threads = [threading.Thread(target=node, args=(e,)) for e in engines]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            assert len(wins) == 1, (round_, wins)
        with engines[0].connect() as conn:
            rows = conn.execute(select(ServiceRun.name)).all()
        assert len(rows) == 10
    finally:
        for e in engines:
            e.dispose()


def test_two_scheduler_instances_run_a_firing_once(
        tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two services (two nodes: own engine each) fire the same job at the same time: one runs."""
    from falcon.services import scheduler

    calls: list[tuple[str, datetime]] = []
    lock = threading.Lock()

    def counted(rt: object, spec: JobSpec, when: datetime) -> str:
        with lock:
            calls.append((spec.id, when))
        threading.Event().wait(0.2)  # still running when the other node tries
        return "counted"

    monkeypatch.setitem(scheduler.ACTIONS, "count", counted)
    settings = load_settings({"home": tmp_path / "home", "database_url": db_url})
    specs = [JobSpec("nightly", trigger_for("03:15", trading_days=False), "count",
                     trading_days=False, grace_s=3600)]
    engines = [make_engine(db_url) for _ in range(2)]
    nodes = [SchedulerService(settings, e, specs=specs) for e in engines]
    try:
        fires = [datetime(2024, 5, d, 7, 15, tzinfo=UTC) for d in (1, 2, 3)]
        for when in fires:
            barrier = threading.Barrier(len(nodes))
            outcomes: list[str] = []

            def fire(node: SchedulerService, when: datetime = when,
                     barrier: threading.Barrier = barrier, outcomes: list[str] = outcomes) -> None:
                barrier.wait()
                outcomes.append(node.run_job("nightly", fire_time=when))

            threads = [threading.Thread(target=fire, args=(n,)) for n in nodes]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            assert sorted(outcomes) == ["claimed-elsewhere", "ok"], (when, outcomes)
        assert calls == [("nightly", t) for t in fires]  # each firing ran exactly once
        with engines[0].connect() as conn:
            rows = conn.execute(select(ServiceRun.name, ServiceRun.scheduled_for,
                                       ServiceRun.outcome).order_by(ServiceRun.id)).all()
        assert [tuple(r) for r in rows] == [("nightly", t, "ok") for t in fires]
    finally:
        for e in engines:
            e.dispose()


@pytest.fixture
def stored(tmp_path: Path, db_url: str, sessions: sessionmaker[Session]) -> Settings:
    settings = load_settings({"home": tmp_path / "home", "database_url": db_url})
    bars = synth.universe(date(2024, 5, 1), n_random=5)
    synth.import_bars(bars, tmp_path, settings, sessions)
    return settings


def _runs(sessions: sessionmaker[Session]) -> list[tuple[str, str, str | None]]:
    with sessions() as s:
        return [(r.name, r.outcome, r.error) for r in
                s.scalars(select(ServiceRun).order_by(ServiceRun.id))]


def test_run_job_records_and_guards(stored: Settings, engine: Engine,
                                    sessions: sessionmaker[Session]) -> None:
    specs = job_specs(stored)
    service = SchedulerService(stored, engine, specs=specs)
    service.install_runtime()
    fire = datetime(2024, 5, 2, 22, 0, tzinfo=UTC)  # Thursday 18:00: screens Thursday's session
    assert run_job("screen:momentum_breakout", fire_time=fire) == "failed"  # no bars for 05-02
    fire = datetime(2024, 5, 1, 22, 0, tzinfo=UTC)  # Wednesday 18:00: screens Wednesday
    assert run_job("screen:momentum_breakout", fire_time=fire) == "ok"
    assert run_job("screen:momentum_breakout", fire_time=fire) == "claimed-elsewhere"
    holiday = datetime(2024, 7, 4, 22, 0, tzinfo=UTC)
    assert run_job("screen:gap_and_go", fire_time=holiday) == "skipped"
    assert run_job("data:sync", fire_time=fire) == "skipped"
    assert run_job("reference:refresh", fire_time=fire) == "skipped"
    assert run_job("no-such-job", fire_time=fire) == "unknown"

    runs = _runs(sessions)
    assert [(n, o) for n, o, _ in runs] == [
        ("screen:momentum_breakout", "failed"), ("screen:momentum_breakout", "ok"),
        ("screen:gap_and_go", "skipped"), ("data:sync", "skipped"),
        ("reference:refresh", "skipped")]
    assert "no day bars for 2024-05-02" in (runs[0][2] or "")
    assert runs[2][2] == "2024-07-04 is not an NYSE trading day"
    assert "no S3 credentials" in (runs[3][2] or "")
    assert "FALCON_MASSIVE_API_KEY" in (runs[4][2] or "")
    with sessions() as s:
        done = s.scalars(select(ScreenRun).where(ScreenRun.status == "done")).one()
        assert done.as_of == date(2024, 5, 1) and any(p.ticker == "BRKT" for p in done.picks)
        ok = s.scalars(select(ServiceRun).where(ServiceRun.outcome == "ok")).one()
        assert ok.scheduled_for == fire and ok.finished_at is not None
        assert ok.started_at > fire  # when it actually ran (now), not when it was due

    # Housekeeping removes finished runs past the retention (all of the 2024 ones above).
    with sessions.begin() as s:
        # As if the runs above had run when they were due, in 2024.
        s.execute(update(ServiceRun).values(started_at=datetime(2024, 7, 5, tzinfo=UTC)))
        s.add(ServiceRun(name="recent", outcome="ok", started_at=datetime.now(UTC)))
        # Live-update events past the retention ([web] events_retention_days, 7) go too.
        s.add(Event(kind="test", payload={"n": "old"}, ts=datetime.now(UTC) - timedelta(days=8)))
        s.add(Event(kind="test", payload={"n": "new"}, ts=datetime.now(UTC) - timedelta(days=6)))
    assert run_job("housekeeping", fire_time=datetime.now(UTC).replace(microsecond=0)) == "ok"
    assert sorted(n for n, _, _ in _runs(sessions)) == ["housekeeping", "recent"]
    with sessions() as s:
        left = [e.payload["n"] for e in s.scalars(select(Event).where(Event.kind == "test"))]
        assert left == ["new"]


def _wait_for(predicate: object, what: str, timeout: float = 30.0) -> object:
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()  # type: ignore[operator]
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_job_store_in_the_database_catches_up_missed_runs(
        tmp_path: Path, db_url: str, engine: Engine, sessions: sessionmaker[Session]) -> None:
    settings = load_settings({"home": tmp_path / "home", "database_url": db_url})
    specs = [JobSpec("housekeeping", trigger_for("03:15", trading_days=False), "housekeeping",
                     trading_days=False, grace_s=24 * 3600)]
    first = SchedulerService(settings, engine, specs=specs)
    first.install_runtime()
    first.scheduler.start(paused=True)
    first._sync_jobs()
    [(job_id, next_run)] = first.next_runs()
    assert job_id == "housekeeping" and next_run is not None and next_run > datetime.now(UTC)
    first.scheduler.shutdown(wait=False)
    # Every node was down when it should have fired an hour ago: rewrite the stored job so.
    missed = datetime.now(UTC) - timedelta(hours=1)
    with engine.begin() as conn:
        state = pickle.loads(conn.execute(text(
            "SELECT job_state FROM apscheduler_jobs WHERE id = 'housekeeping'")).scalar_one())
        state["next_run_time"] = missed
        conn.execute(text("UPDATE apscheduler_jobs SET next_run_time = :t, job_state = :s "
                          "WHERE id = 'housekeeping'"),
                     {"t": missed.timestamp(), "s": pickle.dumps(state, pickle.HIGHEST_PROTOCOL)})

    second = SchedulerService(settings, engine, specs=specs)  # a restart, same job store
    second.start()
    try:
        _wait_for(lambda: [r for r in _runs(sessions) if r[1] != "running"], "the catch-up run")
    finally:
        second.shutdown()
    [(name, outcome, _)] = _runs(sessions)
    assert (name, outcome) == ("housekeeping", "ok")
    third = SchedulerService(settings, engine, specs=specs)
    third.scheduler.start(paused=True)
    third._sync_jobs()
    [(_, next_run)] = third.next_runs()
    third.scheduler.shutdown(wait=False)
    assert next_run is not None and next_run > datetime.now(UTC)  # moved on, ran once


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


def test_scheduler_service_ready_and_clean_sigterm(tmp_path: Path, notify: NotifySocket) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "NOTIFY_SOCKET")}
    env.update({"NOTIFY_SOCKET": notify.address, "PYTHONPATH": str(REPO),
                "FALCON_HOME": str(tmp_path / "home")})
    log = tmp_path / "scheduler.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", "from falcon.cli import main; main()",
                                 "scheduler", "run"], env=env, cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        notify.wait_for("READY=1", timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "STOPPING=1" in notify.fields()
    engine = make_engine(f"sqlite:///{tmp_path / 'home' / 'falcon.db'}")
    with engine.connect() as conn:
        ids = {r[0] for r in conn.exec_driver_sql("SELECT id FROM apscheduler_jobs")}
    engine.dispose()
    assert {"screen:momentum_breakout", "data:sync", "housekeeping"} <= ids


def test_cli_jobs_lists_upcoming(runner: object) -> None:
    from click.testing import CliRunner

    from falcon.cli import main

    result = CliRunner().invoke(main, ["scheduler", "jobs", "--days", "7", "--json"])
    assert result.exit_code == 0, result.output
    assert "screen:momentum_breakout" in result.output and "housekeeping" in result.output
