"""Crash safety: SIGKILL a replaying trader at random points; restart; nothing lost or doubled.

``falcon paper replay`` runs as a real subprocess against a SQLite file and a PostgreSQL database;
each run is killed (SIGKILL: no handler, no cleanup) once the account has advanced to a random
bar, plus a random few milliseconds so that kills land inside a batch's transaction too; then it
is started again. After the last, uninterrupted run the cash, positions, fills and ledger entries
(and the audit actions, and the orders) must equal those of a run that was never interrupted.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from falcon.db.engine import make_engine, session_factory
from falcon.db.models import AuditEntry, Order, PaperAccount

from .helpers import database_url, days, snapshot

START, END = date(2019, 1, 2), date(2019, 12, 31)
ARGS = [
    "-q", "paper", "replay", "--start", str(START), "--end", str(END), "--strategy", "sma_cross",
    "--param", "fast=5", "--param", "slow=12", "--tickers", "AAPL,MSFT,NVDA", "--account", "crash",
    "--cash", "30000", "--max-position-pct", "0.4", "--daily-loss-pct", "1",
    "--max-drawdown-pct", "1", "--no-picks",
]
KILLS = 8
FALCON = str(Path(sys.executable).with_name("falcon"))


def _env(home: Path, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FALCON_")}
    env.update(FALCON_HOME=str(home), FALCON_DATABASE_URL=url,
               FALCON_CONFIG=os.environ["FALCON_CONFIG"], FALCON_TRADING__COMMISSION="0.0005")
    env.pop("NOTIFY_SOCKET", None)
    return env


def _progress(sessions: sessionmaker[Session]) -> Any:
    with sessions() as s:
        return s.scalar(select(PaperAccount.last_bar_ts).where(PaperAccount.name == "crash"))


def _extra(sessions: sessionmaker[Session]) -> dict[str, Any]:
    with sessions() as s:
        account = s.scalar(select(PaperAccount).where(PaperAccount.name == "crash"))
        assert account is not None
        orders = sorted(
            (o.client_order_id, o.status, int(o.qty), int(o.filled_qty), o.reject_reason)
            for o in s.scalars(select(Order).where(Order.account_id == account.id))
        )
        actions = Counter(s.scalars(select(AuditEntry.action)))
        return {"account": account.id, "orders": orders, "audit": actions}


def _run(home: Path, url: str, *, kill_at: Any = None, sessions: Any = None,
         rng: random.Random | None = None) -> int | None:
    proc = subprocess.Popen([FALCON, *ARGS], env=_env(home, url), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    if kill_at is None:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        return proc.returncode
    assert rng is not None and sessions is not None
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        seen = _progress(sessions)
        if seen is not None and seen >= kill_at:
            time.sleep(rng.uniform(0, 0.04))  # somewhere inside a later batch
            break
        time.sleep(0.02)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()  # type: ignore[union-attr]
    return proc.returncode


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_sigkill_at_random_points_loses_and_duplicates_nothing(
    kind: str, sample_home: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    rng = random.Random(20240304 + (kind == "postgres"))
    reference_url = database_url(kind, tmp_path, request, "reference")
    crashed_url = database_url(kind, tmp_path, request, "crashed")
    _run(sample_home, reference_url)

    engine = make_engine(crashed_url)
    sessions = session_factory(engine)
    stamps = days(START, 250)
    targets = sorted(rng.sample(range(5, 240), KILLS))
    killed = 0
    for index in targets:
        code = _run(sample_home, crashed_url, kill_at=stamps[index], sessions=sessions, rng=rng)
        killed += code == -signal.SIGKILL
    _run(sample_home, crashed_url)

    ref_engine = make_engine(reference_url)
    ref_sessions = session_factory(ref_engine)
    want, got = _extra(ref_sessions), _extra(sessions)
    try:
        assert killed >= KILLS - 1, "the kills must land while the replay runs"
        assert snapshot(sessions, got["account"]) == snapshot(ref_sessions, want["account"])
        assert got["orders"] == want["orders"]
        assert got["audit"] == want["audit"]
        assert len(want["orders"]) > 10  # the replay traded
    finally:
        engine.dispose()
        ref_engine.dispose()
