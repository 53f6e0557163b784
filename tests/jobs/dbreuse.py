"""Faster databases for the queue and audit tests.

Creating a PostgreSQL database per test costs about a second; these tests only touch the ``jobs``
and ``audit_log`` tables, so they share one database per module and empty those tables (and reset
their id sequences) before each test. SQLite stays one fresh file per test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from falcon.db.engine import make_engine
from falcon.db.migrate import upgrade

TABLES = "jobs, audit_log"


def reusable_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """For a ``db_url`` fixture parametrised over sqlite/postgres; needs ``module_pg_url``."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'falcon.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        return url
    pg_url: str = request.getfixturevalue("module_pg_url")
    engine = make_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY"))
    engine.dispose()
    return pg_url
