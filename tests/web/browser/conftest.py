"""The real dashboard on loopback, with real data, for headless Chromium driven by Playwright.

One FALCON_HOME per module: migrated SQLite, the bundled sample loaded, a user, the built-in
sma_cross stored as a strategy, and a year of paper trading replayed through the real trader (so
the overview has fills to rebuild an equity curve from). The app runs in a werkzeug server thread;
workers run as ``falcon worker run --once`` subprocesses, as on a compute node.

Chromium is Debian's (``apt-get install chromium``; ``scripts/bootstrap.sh --dev`` installs it),
never a browser downloaded by Playwright. Without it the tests skip and say so.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from werkzeug.serving import BaseWSGIServer, make_server

from falcon.config import Settings, load_settings
from falcon.data.sample import load_sample
from falcon.db.engine import make_engine, session_factory
from falcon.db.migrate import upgrade
from falcon.db.models import Strategy
from falcon.strategy.library import builtin_document
from falcon.web import create_app, users

ARTIFACTS = Path(__file__).parents[3] / "test-artifacts"
USERNAME, PASSWORD = "alice", "correct horse battery"
# The flags this machine's Chromium needs (see the machine notes): no sandbox as root, no GPU,
# and nothing that phones home (the network is closed; those lookups only slow the start).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def chromium_path() -> str | None:
    """``$FALCON_CHROMIUM``, else Debian's chromium on PATH or in /usr/bin."""
    for candidate in (os.environ.get("FALCON_CHROMIUM"), shutil.which("chromium"),
                      "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass(frozen=True)
class Site:
    """A running dashboard: its address, its home and how to run a worker against it."""

    url: str
    home: Path
    settings: Settings
    strategy_id: int

    def worker_env(self) -> dict[str, str]:
        """The environment of a worker process on this site's FALCON_HOME (nothing inherited)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FALCON_", "AWS_"))}
        config = self.home / "falcon.toml"
        config.touch()
        return env | {"FALCON_HOME": str(self.home), "FALCON_CONFIG": str(config)}

    def worker_argv(self) -> list[str]:
        """``falcon worker run --once`` from this virtualenv."""
        falcon = Path(sys.executable).parent / "falcon"
        return [str(falcon), "-q", "worker", "run", "--once", "--poll", "0.2",
                "--heartbeat", "0.5"]


def _prepare_home(home: Path) -> tuple[Settings, int]:
    config = home / "falcon.toml"
    home.mkdir(parents=True, exist_ok=True)
    config.touch()
    settings = load_settings({"home": str(home)}, environ={}, config_file=config)
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    load_sample(settings, sessions)
    users.set_hasher(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    try:
        with sessions.begin() as s:
            users.create_user(s, USERNAME, PASSWORD, is_admin=True)
            strategy = Strategy(name="sma_cross", source="builtin", status="active",
                                spec=builtin_document("sma_cross"))
            s.add(strategy)
            s.flush()
            strategy_id = strategy.id
    finally:
        users.set_hasher(PasswordHasher())
    from falcon.paper.runner import replay

    # A year of one ticker: enough fills for a curve, quick enough (a few seconds) for a test.
    replay(settings, sessions, account="main", start=date(2017, 1, 3), end=date(2017, 12, 29),
           strategies=["sma_cross"], tickers=["NFLX"], cash=50_000.0, quiet=True,
           limits={"max_position_pct": 0.5})
    engine.dispose()
    return settings, strategy_id


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The dashboard serving a prepared FALCON_HOME on 127.0.0.1 (a free port)."""
    if chromium_path() is None:
        pytest.skip("Debian's chromium is not installed: apt-get install chromium "
                    "(scripts/bootstrap.sh --dev installs it), or set FALCON_CHROMIUM")
    home = tmp_path_factory.mktemp("browser") / "home"
    settings, strategy_id = _prepare_home(home)
    app = create_app(settings, test_config={
        "SECRET_KEY": "browser-test-secret",
        "SSE_MAX_SECONDS": 5.0,  # streams end soon, so the server stops promptly
    })
    server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="falcon-web", daemon=True)
    thread.start()
    try:
        yield Site(f"http://127.0.0.1:{server.server_port}", home, settings, strategy_id)
    finally:
        server.shutdown()
        thread.join(10)
        with app.app_context():
            from falcon.web.extensions import db

            db.engine.dispose()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    """Where screenshots go (ignored by git; CI keeps the folder)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
