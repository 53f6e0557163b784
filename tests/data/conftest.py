"""Fixtures of the data tests: settings and sessions on both databases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from falcon.config import Settings, load_settings
from falcon.data.store import Store
from falcon.db.engine import make_engine, session_factory


@pytest.fixture
def dsettings(db_url: str) -> Settings:
    """Settings whose database is the parametrised one (SQLite and PostgreSQL)."""
    return load_settings({"database_url": db_url})


@pytest.fixture
def dsessions(dsettings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(dsettings.effective_database_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def store(dsettings: Settings) -> Store:
    return Store.of(dsettings)
