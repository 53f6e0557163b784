"""The delivery worker against real loopback servers: retries, breaker, dead letters, secrets."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from falcon.alerts.channels import EmailChannel, WebhookChannel
from falcon.alerts.delivery import DeliveryWorker
from falcon.alerts.outbox import queue_alert
from falcon.alerts.settings import AlertSettings, RetryPolicy
from falcon.db.engine import transaction
from falcon.db.models import AlertDelivery

from .servers import SmtpSink, WebhookReceiver, closed_port

SECRET = "T000/B000/SECRETTOKEN"


class FakeClock:
    """Monotonic time the test moves by hand (the breaker's cool-off)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settings(url: str, **kw: Any) -> AlertSettings:
    base: dict[str, Any] = {"slack_webhook_url": url, "http_timeout_s": 0.5,
                            "backoff_base_s": 0.0, "backoff_cap_s": 0.0, "max_attempts": 10,
                            "breaker_threshold": 100, "claim_lease_s": 60.0}
    base.update(kw)
    return AlertSettings(**base)


def worker(engine: Engine, s: AlertSettings, clock: FakeClock | None = None) -> DeliveryWorker:
    channels: dict[str, Any] = {
        "slack": WebhookChannel("slack", s.slack_webhook_url, key="text",
                                timeout_s=s.http_timeout_s),
        "email": EmailChannel(s),
    }
    return DeliveryWorker(engine, s, channels=channels, clock=clock or FakeClock())


def queue(sessions: sessionmaker[Session], channel: str = "slack", n: int = 1) -> list[int]:
    ids = []
    with transaction(sessions) as s:
        for i in range(n):
            ids.append(queue_alert(s, rule_id=None, channels=[channel],
                                   message=f"AAPL crossed above 200 #{i}", ticker="AAPL").id)
    return ids


def rows(sessions: sessionmaker[Session]) -> list[AlertDelivery]:
    with sessions() as s:
        return list(s.scalars(select(AlertDelivery).order_by(AlertDelivery.id)))


def test_delivers_with_the_event_id(engine: Engine, sessions: sessionmaker[Session],
                                    receiver: WebhookReceiver) -> None:
    [eid] = queue(sessions)
    w = worker(engine, settings(receiver.url(SECRET)))
    assert w.run_once() == 1
    assert w.run_once() == 0
    w.close()
    [got] = receiver.received
    assert got.body["text"].endswith(f"(alert #{eid})")
    assert got.headers["X-Falcon-Event-Id"] == str(eid)
    assert got.headers["Idempotency-Key"] == f"falcon-alert-{eid}"
    [row] = rows(sessions)
    assert (row.status, row.attempts, row.last_error) == ("sent", 1, None)
    assert row.delivered_at is not None


def test_500_then_retry_then_sent(engine: Engine, sessions: sessionmaker[Session],
                                  receiver: WebhookReceiver) -> None:
    queue(sessions)
    receiver.script.extend([500, 503])
    w = worker(engine, settings(receiver.url(SECRET)))
    for _ in range(3):
        w.run_once()
    w.close()
    [row] = rows(sessions)
    assert (row.status, row.attempts) == ("sent", 3)
    assert len(receiver.received) == 3


def test_dead_letter_after_max_attempts_without_secrets(
    engine: Engine, sessions: sessionmaker[Session], receiver: WebhookReceiver
) -> None:
    queue(sessions)
    receiver.default = 500
    w = worker(engine, settings(receiver.url(SECRET), max_attempts=3))
    for _ in range(5):
        w.run_once()
    w.close()
    [row] = rows(sessions)
    assert (row.status, row.attempts) == ("dead", 3)
    assert row.last_error == f"slack http://127.0.0.1:{receiver.port}: HTTP 500"
    assert len(receiver.received) == 3


def test_permanent_4xx_is_dead_at_once(engine: Engine, sessions: sessionmaker[Session],
                                       receiver: WebhookReceiver) -> None:
    queue(sessions)
    receiver.default = 404
    w = worker(engine, settings(receiver.url(SECRET)))
    w.run_once()
    w.close()
    [row] = rows(sessions)
    assert (row.status, row.attempts) == ("dead", 1)
    assert "HTTP 404" in (row.last_error or "")


def test_timeout_and_refused_are_retried_and_masked(
    engine: Engine, sessions: sessionmaker[Session], receiver: WebhookReceiver
) -> None:
    queue(sessions)
    receiver.script.append("hang")
    w = worker(engine, settings(receiver.url(SECRET)))
    w.run_once()
    [row] = rows(sessions)
    assert row.status == "pending" and "timed out after 0.5s" in (row.last_error or "")
    w.close()
    receiver.release()
    refused = f"http://127.0.0.1:{closed_port()}/services/{SECRET}"
    w = worker(engine, settings(refused))
    w.run_once()
    w.close()
    [row] = rows(sessions)
    assert row.status == "pending" and row.attempts == 2
    assert "ConnectError" in (row.last_error or "")
    for r in rows(sessions):
        assert SECRET not in (r.last_error or "") and "SECRETTOKEN" not in (r.last_error or "")


def test_breaker_opens_waits_and_closes(engine: Engine, sessions: sessionmaker[Session],
                                        receiver: WebhookReceiver) -> None:
    queue(sessions, n=2)
    receiver.default = 500
    clock = FakeClock()
    s = settings(receiver.url(SECRET), breaker_threshold=3, breaker_cooloff_s=30.0,
                 batch_size=1)
    w = worker(engine, s, clock)
    for _ in range(3):
        assert w.run_once() == 1
    assert w.breakers["slack"].state == "open"
    # Open: nothing is claimed, tries are not spent, nothing is lost.
    assert w.run_once() == 0
    tried = sum(r.attempts for r in rows(sessions))
    assert tried == 3 and all(r.status == "pending" for r in rows(sessions))
    # After the cool-off one probe goes; it fails: open again.
    clock.now += 31
    assert w.breakers["slack"].state == "half_open"
    assert w.run_once() == 1
    assert w.breakers["slack"].state == "open"
    assert w.run_once() == 0
    # The receiver recovers; the next probe closes the breaker and the rest flows.
    receiver.default = 200
    clock.now += 31
    assert w.run_once() == 1
    assert w.breakers["slack"].state == "closed"
    while w.run_once():
        pass
    w.close()
    assert [r.status for r in rows(sessions)] == ["sent", "sent"]


def test_email_over_smtp(engine: Engine, sessions: sessionmaker[Session]) -> None:
    sink = SmtpSink(auth=("falcon", "hunter2-smtp"))
    try:
        [eid] = queue(sessions, channel="email")
        s = AlertSettings(smtp_host="127.0.0.1", smtp_port=sink.port, smtp_tls="none",
                          smtp_user="falcon", smtp_password="hunter2-smtp",
                          smtp_from="falcon@example.org", smtp_to="a@example.org, b@example.org",
                          smtp_timeout_s=5.0, backoff_base_s=0.0, backoff_cap_s=0.0)
        w = worker(engine, s)
        assert w.run_once() == 1
        [env] = sink.messages
        assert sorted(env.rcpt_tos) == ["a@example.org", "b@example.org"]
        text = env.content.decode()
        assert f"Message-ID: <falcon-alert-{eid}@falcon.invalid>" in text
        assert f"(alert #{eid})" in text
        # A 4xx answer is retried, a 5xx one is dead at once.
        queue(sessions, channel="email")
        sink.reply = "451 try later"
        w.run_once()
        assert rows(sessions)[-1].status == "pending"
        sink.reply = "550 no such user"
        w.run_once()
        last = rows(sessions)[-1]
        assert last.status == "dead" and "550" in (last.last_error or "")
        w.close()
        assert all("hunter2-smtp" not in (r.last_error or "") for r in rows(sessions))
    finally:
        sink.close()


def test_email_refused_is_retried(engine: Engine, sessions: sessionmaker[Session]) -> None:
    queue(sessions, channel="email")
    s = AlertSettings(smtp_host="127.0.0.1", smtp_port=closed_port(), smtp_tls="starttls",
                      smtp_from="f@example.org", smtp_to="a@example.org", smtp_timeout_s=2.0,
                      smtp_password="pw-secret")
    w = worker(engine, s)
    w.run_once()
    w.close()
    [row] = rows(sessions)
    assert row.status == "pending" and "ConnectionRefusedError" in (row.last_error or "")


def test_retry_policy_is_per_channel() -> None:
    s = AlertSettings(max_attempts=4, retry={"email": RetryPolicy(2, 1.0, 5.0)})
    assert s.policy("email").max_attempts == 2
    assert s.policy("slack").max_attempts == 4
    assert "hooks" not in repr(AlertSettings(slack_webhook_url="https://hooks.slack.com/x"))
