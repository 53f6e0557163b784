"""Alerts are evaluated in the trader's own bar stream: bars, fills, with their latency."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from falcon.alerts import add_rule
from falcon.cli import main
from falcon.db.engine import make_engine, session_factory
from falcon.db.migrate import upgrade
from falcon.db.models import AlertDelivery, AlertEvent, AlertRule, Fill


def test_replay_fires_bar_and_fill_alerts(
    sample_home: Path, tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'alerts.db'}"
    monkeypatch.setenv("FALCON_HOME", str(sample_home))
    monkeypatch.setenv("FALCON_DATABASE_URL", url)
    engine = make_engine(url)
    upgrade(engine)
    sessions = session_factory(engine)
    with sessions.begin() as s:
        # AAPL (split-adjusted) closed below 40 at the start of 2019 and above 70 by December.
        cross = add_rule(s, kind="price_cross", params={"ticker": "AAPL", "above": 50},
                         channels=["dashboard"], cooldown=0)
        fill = add_rule(s, kind="fill", params={"ticker": "AAPL"}, channels=["dashboard"],
                        cooldown=0)
        cross_id, fill_id = cross.id, fill.id
    result = runner.invoke(main, [
        "-q", "paper", "replay", "--start", str(date(2019, 1, 2)), "--end", str(date(2019, 12, 31)),
        "--strategy", "sma_cross", "--tickers", "AAPL", "--account", "alerts", "--no-picks",
    ])
    assert result.exit_code == 0, result.output
    with sessions() as s:
        events = list(s.scalars(select(AlertEvent).order_by(AlertEvent.id)))
        fills = s.scalars(select(Fill)).all()
        by_rule = {r: [e for e in events if e.rule_id == r] for r in (cross_id, fill_id)}
        assert by_rule[cross_id], "the close crossed 50 during 2019"
        assert "AAPL" in by_rule[cross_id][0].message
        assert len(by_rule[fill_id]) == len(fills) > 0  # one alert per fill
        assert all(e.latency_ms is not None and e.latency_ms >= 0 for e in by_rule[cross_id])
        # dashboard alerts are delivered as Event rows; nothing is left pending for them
        assert s.scalar(select(AlertRule).where(AlertRule.id == cross_id)).last_fired_at
        assert not s.scalars(select(AlertDelivery).where(AlertDelivery.status == "dead")).all()
    engine.dispose()
