"""A delivery process killed mid-send, and one stopped with SIGTERM: nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from falcon.alerts.outbox import queue_alert
from falcon.db.engine import transaction
from falcon.db.models import AlertDelivery

from ..jobs.procs import wait_until
from ..services.sdsocket import NotifySocket
from .servers import WebhookReceiver

REPO = Path(__file__).resolve().parents[2]


def start(db_url: str, url: str, tmp: Path, *, lease: float, timeout: float,
          notify: str | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env["PYTHONPATH"] = str(REPO)
    if notify:
        env["NOTIFY_SOCKET"] = notify
    log = open(tmp / "deliver.log", "ab")  # noqa: SIM115 - the child owns it
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.alerts.deliver_proc", db_url, url, str(lease),
             str(timeout)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def row(sessions: sessionmaker[Session]) -> AlertDelivery:
    with sessions() as s:
        return s.scalars(select(AlertDelivery)).one()


def test_killed_mid_delivery_is_delivered_after_restart(
    db_url: str, sessions: sessionmaker[Session], receiver: WebhookReceiver, tmp_path: Path
) -> None:
    with transaction(sessions) as s:
        eid = queue_alert(s, rule_id=None, channels=["slack"], message="AAPL crossed 200").id
    receiver.script.append("hang")
    first = start(db_url, receiver.url(), tmp_path, lease=2.0, timeout=30.0)
    try:
        wait_until(lambda: receiver.received, "the first try to reach the receiver")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    assert row(sessions).status == "pending"  # claimed, never finished
    second = start(db_url, receiver.url(), tmp_path, lease=2.0, timeout=5.0)
    try:
        wait_until(lambda: row(sessions).status == "sent", "the restarted worker to deliver")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0
    # At least once, and every copy carries the same event id.
    assert len(receiver.received) == 2
    assert receiver.event_ids() == [str(eid), str(eid)]
    assert row(sessions).attempts == 2


def test_sigterm_is_clean_and_speaks_sd_notify(
    db_url: str, sessions: sessionmaker[Session], receiver: WebhookReceiver, tmp_path: Path
) -> None:
    sock = NotifySocket()
    proc = start(db_url, receiver.url(), tmp_path, lease=60.0, timeout=5.0, notify=sock.address)
    try:
        wait_until(lambda: any("READY=1" in m for m in sock.messages), "READY=1")
        with transaction(sessions) as s:
            queue_alert(s, rule_id=None, channels=["slack"], message="MSFT moved 5%")
        wait_until(lambda: row(sessions).status == "sent", "delivery while running")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert any("STOPPING=1" in m for m in sock.messages)
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
