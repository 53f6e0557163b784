"""The trader as a service: READY, WATCHDOG and STOPPING; SIGTERM commits the bar and exits 0."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from falcon.db.engine import make_engine, session_factory
from falcon.db.migrate import upgrade
from falcon.db.models import Fill, PaperAccount

from .helpers import snapshot

FALCON = str(Path(sys.executable).with_name("falcon"))


def test_sigterm_finishes_the_bar_commits_and_exits_zero(sample_home: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    engine = make_engine(url)
    upgrade(engine)
    sessions = session_factory(engine)
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(0.05)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FALCON_")}
    env.update(FALCON_HOME=str(sample_home), FALCON_DATABASE_URL=url,
               FALCON_CONFIG=os.environ["FALCON_CONFIG"], NOTIFY_SOCKET=sock_path,
               WATCHDOG_USEC="100000")
    proc = subprocess.Popen(
        [FALCON, "paper", "replay", "--start", "2014-01-02", "--end", "2023-09-01",
         "--strategy", "sma_cross", "--param", "fast=3", "--param", "slow=6",
         "--tickers", "AAPL,NVDA", "--account", "svc", "--max-position-pct", "0.5",
         "--daily-loss-pct", "1", "--max-drawdown-pct", "1", "--no-picks"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    messages: list[str] = []
    deadline = time.monotonic() + 120
    progressed = False
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(TimeoutError):
                messages.append(sock.recv(4096).decode())
            if any("READY=1" in m for m in messages) and not progressed:
                with sessions() as s:
                    fills = s.scalar(select(Fill.id).limit(1))
                progressed = fills is not None
                if progressed:
                    proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        try:
            while True:
                messages.append(sock.recv(4096).decode())
        except (TimeoutError, BlockingIOError):
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    assert progressed, err.decode()
    assert proc.returncode == 0, err.decode()
    assert any("READY=1" in m for m in messages)
    assert any("WATCHDOG=1" in m for m in messages)
    assert any("STOPPING=1" in m for m in messages)
    assert b"stopped early" in err
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert lines and all("event" in line and "bar_ts" in line for line in lines)
    with sessions() as s:
        account = s.scalar(select(PaperAccount).where(PaperAccount.name == "svc"))
        assert account is not None and account.last_bar_ts is not None
        last = account.last_bar_ts
        assert last.year < 2023  # it stopped well before the end
        # Whatever was decided by the last committed bar is all there: no half-written batch.
        filled_after = s.scalars(select(Fill).where(Fill.ts > last)).all()
        assert filled_after == []
        before = snapshot(sessions, account.id)
    assert before["last_bar_ts"] == last
    engine.dispose()
