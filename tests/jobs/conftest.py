"""Queue tests share one PostgreSQL database per module (see tests/jobs/dbreuse.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import new_pg_database
from tests.pgserver import PostgresServer

from .dbreuse import reusable_db_url


@pytest.fixture(scope="module")
def module_pg_url(pg_server: PostgresServer) -> str:
    """One migrated PostgreSQL database for the whole test module."""
    return new_pg_database(pg_server)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database with empty jobs and audit_log tables, on SQLite and PostgreSQL."""
    return reusable_db_url(request, tmp_path)
