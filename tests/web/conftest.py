"""Web fixtures in the Flask tutorial's shape: ``app``, ``client``, ``auth``; plus data helpers.

``app`` runs on SQLite and PostgreSQL (through ``db_url``); ``sqlite_app`` is for the sweeps over
every route, where the database makes no difference and doubling the count would only cost time.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from falcon.config import Settings, load_settings
from falcon.db.engine import make_engine
from falcon.db.migrate import upgrade
from falcon.web import create_app, users
from falcon.web.extensions import Database

from ..conftest import new_pg_database

PASSWORD = "correct horse battery"
TEST_CONFIG: dict[str, Any] = {
    "TESTING": True,
    "SECRET_KEY": "test-secret-key",
    "SSE_POLL_SECONDS": 0.01,
    "SSE_MAX_SECONDS": 5.0,
    "SSE_KEEPALIVE_SECONDS": 0.05,
}
# Cheap argon2 parameters: the tests check hashing behaviour, not its cost.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(autouse=True)
def _fast_hashes() -> Iterator[None]:
    users.set_hasher(FAST_HASHER)
    yield
    users.set_hasher(PasswordHasher())


def make_app(db_url: str, **config: Any) -> Flask:
    """An app on ``db_url`` with the test config (plus ``config``)."""
    settings = load_settings({"database_url": db_url})
    return create_app(settings, test_config=TEST_CONFIG | config)


def _dispose(app: Flask) -> None:
    with app.app_context():
        from falcon.web.extensions import db

        db.engine.dispose()


@pytest.fixture
def web_settings(db_url: str) -> Settings:
    """Settings pointing at the test database."""
    return load_settings({"database_url": db_url})


@pytest.fixture
def app(db_url: str) -> Iterator[Flask]:
    """The app on a fresh migrated database (SQLite and PostgreSQL)."""
    application = make_app(db_url)
    yield application
    _dispose(application)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("web-template") / "falcon.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


def _sqlite_copy(template: Path, folder: Path) -> str:
    db_file = folder / "web.db"
    shutil.copyfile(template, db_file)
    return f"sqlite:///{db_file}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, _sqlite_template: Path) -> str:
    """As the root ``db_url``, but SQLite copies one migrated file instead of migrating again."""
    if request.param == "sqlite":
        return _sqlite_copy(_sqlite_template, tmp_path)
    return new_pg_database(request.getfixturevalue("pg_server"))


# For tests where the database makes no difference: ``@SQLITE_ONLY`` narrows ``db_url``.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def sqlite_app(tmp_path: Path, _sqlite_template: Path) -> Iterator[Flask]:
    """The app on a fresh migrated SQLite database only (a copy of one migrated file)."""
    application = make_app(_sqlite_copy(_sqlite_template, tmp_path))
    yield application
    _dispose(application)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of ``app``."""
    return app.test_client()


def sessions_of(app: Flask) -> sessionmaker[Session]:
    """The app's own session factory, for arranging and checking rows."""
    return Database.sessions_for(app)


def csrf(client: FlaskClient) -> str:
    """The CSRF token of the client's session (created as a page would)."""
    with client.session_transaction() as sess:
        token: str = sess.setdefault("csrf", "csrf-" + "x" * 20)
    return token


class AuthActions:
    """Create users and log in or out through the real forms."""

    def __init__(self, app: Flask, client: FlaskClient) -> None:
        self._app = app
        self._client = client

    def create(
        self, username: str = "alice", password: str = PASSWORD, *, admin: bool = False
    ) -> None:
        with sessions_of(self._app).begin() as s:
            users.create_user(s, username, password, is_admin=admin)

    def login(
        self, username: str = "alice", password: str = PASSWORD, **extra: str
    ) -> TestResponse:
        data = {
            "username": username,
            "password": password,
            "csrf_token": csrf(self._client),
        } | extra
        return self._client.post("/login", data=data)

    def logout(self) -> TestResponse:
        return self._client.post("/logout", data={"csrf_token": csrf(self._client)})

    def token(self, username: str = "alice", name: str = "test") -> str:
        with sessions_of(self._app).begin() as s:
            return users.issue_token(s, username, name)


@pytest.fixture
def auth(app: Flask, client: FlaskClient) -> AuthActions:
    """Auth helper over ``app`` and ``client``; a user alice exists, an admin.

    Most tests exercise admin-only actions (halt, cancel, promote) as alice; the tests of the
    admin requirement create a user without it.
    """
    helper = AuthActions(app, client)
    helper.create(admin=True)
    return helper


@pytest.fixture
def logged_in(auth: AuthActions) -> AuthActions:
    """As ``auth``, with alice logged in."""
    response = auth.login()
    assert response.status_code == 302, response.get_data(as_text=True)
    return auth
