"""Engines and sessions for SQLite (single node) and PostgreSQL (cluster)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, configure_mappers, sessionmaker

from falcon.config import Settings
from falcon.errors import DatabaseError


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the web process read while the trader writes; a busy timeout instead of
    # "database is locked" when two writers meet.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and foreign keys, its folder is created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.drivername == "postgresql":
        url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False))
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def engine_for(settings: Settings) -> Engine:
    """The engine the settings point at."""
    return make_engine(settings.effective_database_url)


def safe_url(url: str) -> str:
    """``url`` with its password masked, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def check_reachable(engine: Engine) -> None:
    """Raise :class:`DatabaseError` (without the password) when the database cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "connection failed"
        raise DatabaseError(f"database {safe_url(str(engine.url))} unreachable: {reason}") from None


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A sessionmaker that keeps objects usable after commit.

    The ORM's mappers are configured here, at start-up, instead of lazily inside the first
    request, screen or trade that creates an object (about 40 ms on a small machine).
    """
    from falcon.db import models  # noqa: F401 - every mapper must be registered first

    configure_mappers()
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any error."""
    with factory() as session, session.begin():
        yield session
