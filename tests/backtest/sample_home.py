"""One FALCON_HOME holding the bundled sample, shared by the backtest CLI, store, optimiser,
walk-forward and job tests of a test session (loading it takes a second or two)."""

from __future__ import annotations

from pathlib import Path

import pytest

_HOMES: dict[str, Path] = {}


def sample_home(factory: pytest.TempPathFactory) -> Path:
    """The shared home (its Parquet store holds the sample's day and minute bars)."""
    if "home" not in _HOMES:
        from falcon.config import load_settings
        from falcon.data.sample import load_sample
        from falcon.db.engine import make_engine, session_factory
        from falcon.db.migrate import upgrade

        home = factory.mktemp("backtest-home")
        url = f"sqlite:///{home / 'import.db'}"
        engine = make_engine(url)
        upgrade(engine)
        load_sample(load_settings({"home": str(home), "database_url": url}, environ={}),
                    session_factory(engine))
        engine.dispose()
        _HOMES["home"] = home
    return _HOMES["home"]
