"""Shared fixtures: settings in a temporary FALCON_HOME, databases on SQLite and real PostgreSQL.

The PostgreSQL server is started once per test session (tests/pgserver.py); each test that asks for
a database gets a fresh one cloned from a migrated template, so tests never see each other's rows.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from falcon.config import Settings, load_settings
from falcon.db.engine import make_engine, session_factory
from falcon.db.migrate import upgrade

from .pgserver import PostgresServer

_counter = itertools.count()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the machine's /etc/falcon, the developer's FALCON_* or real credentials."""
    for name in list(os.environ):
        if name.startswith(("FALCON_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FALCON_CONFIG", str(tmp_path / "no-config.toml"))
    (tmp_path / "no-config.toml").write_text("")
    monkeypatch.setenv("FALCON_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server, with a migrated template database."""
    server = PostgresServer().start()
    admin = create_engine(
        server.url().replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE falcon_template"))
    engine = make_engine(server.url("falcon_template"))
    upgrade(engine)
    engine.dispose()
    server.admin = admin  # type: ignore[attr-defined]
    yield server
    admin.dispose()
    server.stop()


def new_pg_database(server: PostgresServer, *, migrated: bool = True) -> str:
    """A fresh database on the session server; its URL."""
    name = f"falcon_t{os.getpid()}_{next(_counter)}"
    template = "falcon_template" if migrated else "template0"
    with server.admin.connect() as conn:  # type: ignore[attr-defined]
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE {template}'))
    return server.url(name)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database URL: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'falcon.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        return url
    return new_pg_database(request.getfixturevalue("pg_server"))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on :func:`db_url`."""
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    """A session factory on :func:`engine`."""
    return session_factory(engine)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with FALCON_HOME in the test's temporary folder (SQLite)."""
    return load_settings()


@pytest.fixture
def runner() -> CliRunner:
    """A click runner for the ``falcon`` command."""
    return CliRunner()
