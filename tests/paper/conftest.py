"""Fixtures of the paper trader's tests: the bundled sample in a store shared by the session."""

from __future__ import annotations

from pathlib import Path

import pytest

from falcon.config import load_settings
from falcon.db.engine import make_engine, session_factory
from falcon.db.migrate import upgrade


@pytest.fixture(scope="session")
def sample_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FALCON_HOME whose Parquet store holds the bundled sample (real day and minute bars)."""
    from falcon.data.sample import load_sample

    home = tmp_path_factory.mktemp("paper-home")
    url = f"sqlite:///{home / 'import.db'}"
    engine = make_engine(url)
    upgrade(engine)
    settings = load_settings({"home": str(home), "database_url": url}, environ={})
    load_sample(settings, session_factory(engine))
    engine.dispose()
    return home
