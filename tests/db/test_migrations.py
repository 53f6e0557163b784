"""Migrations: the same revisions build the same schema on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from falcon.cli import main
from falcon.db.engine import make_engine
from falcon.db.migrate import current_revision, head_revision, is_current, upgrade
from falcon.db.models import Base, Fill, Order, PaperAccount, ScreenPick, ScreenRun, User

from ..conftest import new_pg_database


def test_schema_matches_models(engine: Engine) -> None:
    """After `upgrade head` the database has exactly what the models declare."""
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diffs == []
    assert is_current(engine)
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())


def test_upgrade_from_empty_on_postgres(pg_server) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(new_pg_database(pg_server, migrated=False))
    try:
        assert current_revision(engine) is None
        upgrade(engine)
        assert current_revision(engine) == head_revision(engine)
        upgrade(engine)  # idempotent
        assert current_revision(engine) == head_revision(engine)
    finally:
        engine.dispose()


def test_sqlite_uses_wal(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


def test_times_come_back_aware_utc_and_money_exact(sessions: sessionmaker[Session]) -> None:
    ny = timezone(timedelta(hours=-5))
    with sessions.begin() as s:
        acct = PaperAccount(
            name="main",
            starting_cash=Decimal("10000.10"),
            cash=Decimal("0.000001") + Decimal("9999.1"),
        )
        s.add(acct)
        s.flush()
        order = Order(
            account_id=acct.id,
            client_order_id="k1",
            ticker="AAPL",
            side="buy",
            type="market",
            qty=3,
        )
        s.add(order)
        s.flush()
        s.add(
            Fill(
                order_id=order.id,
                account_id=acct.id,
                ticker="AAPL",
                side="buy",
                qty=3,
                price=101.25,
                fee=Decimal("0.61"),
                ts=datetime(2024, 3, 1, 9, 30, tzinfo=ny),
                idempotency_key="k1:1",
            )
        )
    with sessions() as s:
        fill = s.scalars(select(Fill)).one()
        assert fill.ts == datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
        assert fill.ts.tzinfo is not None
        assert fill.fee == Decimal("0.61")
        acct = s.scalars(select(PaperAccount)).one()
        assert acct.cash == Decimal("9999.100001")
        assert acct.starting_cash + acct.cash == Decimal("19999.200001")


def test_naive_datetimes_are_refused(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(StatementError, match="naive datetime"), sessions.begin() as s:
        s.add(User(username="a", password_hash="x", created_at=datetime(2024, 1, 1)))


def test_constraints_hold(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        s.add(User(username="ann", password_hash="h"))
    with pytest.raises(IntegrityError), sessions.begin() as s:
        s.add(User(username="ann", password_hash="h2"))
    # foreign keys are enforced on SQLite too (PRAGMA foreign_keys)
    with pytest.raises(IntegrityError), sessions.begin() as s:
        s.add(ScreenPick(run_id=999, ticker="X", rank=1, score=1.0, close=1.0))


def test_cascade_delete_picks(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        run = ScreenRun(profile="p", as_of=datetime(2024, 1, 2, tzinfo=UTC).date())
        run.picks.append(
            ScreenPick(
                ticker="AAPL",
                rank=1,
                score=2.0,
                close=10.0,
                factors={"rvol": 2.1},
                reasons=["close above 20-day high"],
            )
        )
        s.add(run)
    with sessions.begin() as s:
        run = s.scalars(select(ScreenRun)).one()
        assert run.picks[0].factors == {"rvol": 2.1}
        s.delete(run)
    with sessions() as s:
        assert s.scalars(select(ScreenPick)).all() == []


def test_cli_upgrade_and_current_on_postgres(pg_server, runner: CliRunner) -> None:  # type: ignore[no-untyped-def]
    url = new_pg_database(pg_server, migrated=False)
    result = runner.invoke(main, ["--database-url", url, "db", "current", "--json"])
    assert result.exit_code == 0, result.output
    assert '"up_to_date": false' in result.output
    result = runner.invoke(main, ["--database-url", url, "db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "upgraded empty -> " in result.output
    assert "postgres@" in result.output  # the URL is shown, the password never (none here)
    result = runner.invoke(main, ["--database-url", url, "db", "current"])
    assert "up to date" in result.output


def test_unreachable_database_is_one_clear_line(runner: CliRunner) -> None:
    url = "postgresql://falcon:s3cret@127.0.0.1:1/falcon"
    result = runner.invoke(main, ["--database-url", url, "db", "current"])
    assert result.exit_code == 69
    assert result.output.startswith("error: database postgresql")
    assert "falcon:***@127.0.0.1:1/falcon unreachable" in result.output
    assert result.output.count("\n") == 1
    assert "s3cret" not in result.output
    assert "Traceback" not in result.output


def test_jobstore_table_apscheduler_made_before_0004_is_kept(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0003")
    # An install from before 0004: APScheduler created its table itself and stored a job.
    scheduler = BackgroundScheduler(jobstores={"default": SQLAlchemyJobStore(engine=engine)})
    scheduler.add_job(print, "interval", hours=1, id="kept")
    scheduler.start(paused=True)
    scheduler.shutdown(wait=False)
    upgrade(engine)
    assert is_current(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id FROM apscheduler_jobs")).scalars().all() == ["kept"]
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diffs == []
    engine.dispose()
