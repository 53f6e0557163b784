"""``falcon alerts`` end to end on the single-node SQLite database."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from falcon.cli import main

from .servers import WebhookReceiver


def run(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(main, ["alerts", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_add_list_test_history_deliveries_remove(
    runner: CliRunner, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALCON_SLACK_WEBHOOK_URL", receiver.url("T1/B1/XYZSECRET"))
    out = run(runner, "add", "--kind", "price_cross", "--ticker", "aapl", "--above", "200",
              "--channel", "slack", "--channel", "dashboard", "--cooldown", "1h", "--json")
    rule = json.loads(out)
    assert rule["params"] == {"ticker": "AAPL", "direction": "above", "level": 200.0}
    assert rule["cooldown_s"] == 3600 and rule["channels"] == ["slack", "dashboard"]
    listed = json.loads(run(runner, "list", "--json"))
    assert [r["id"] for r in listed] == [rule["id"]]

    out = run(runner, "test", str(rule["id"]))
    assert "slack      sent" in out and "dashboard  sent" in out
    assert receiver.received[0].body["text"].startswith("Test of alert rule")
    history = json.loads(run(runner, "history", "--json"))
    assert history[0]["rule_id"] == rule["id"]
    deliveries = json.loads(run(runner, "deliveries", "--json"))
    assert {d["status"] for d in deliveries} == {"sent"}

    run(runner, "enable", str(rule["id"]), "--off")
    assert json.loads(run(runner, "list", "--json"))[0]["enabled"] is False
    run(runner, "remove", str(rule["id"]))
    assert json.loads(run(runner, "list", "--json")) == []
    # The alert it fired stays in the history.
    assert len(json.loads(run(runner, "history", "--json"))) == 1


def test_failed_test_exits_1_and_dead_letters_can_be_retried(
    runner: CliRunner, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALCON_DISCORD_WEBHOOK_URL", receiver.url("D1/VERYSECRET"))
    receiver.default = 404
    rule = json.loads(run(runner, "add", "--kind", "halt", "--channel", "discord", "--json"))
    assert rule["cooldown_s"] == 0
    result = runner.invoke(main, ["alerts", "test", str(rule["id"])])
    assert result.exit_code == 1
    assert f"discord    dead  discord http://127.0.0.1:{receiver.port}: HTTP 404" in result.output
    assert "VERYSECRET" not in result.output
    dead = json.loads(run(runner, "deliveries", "--status", "dead", "--json"))
    assert len(dead) == 1 and "VERYSECRET" not in dead[0]["last_error"]
    result = runner.invoke(main, ["alerts", "deliveries", "--status", "dead", "--retry"])
    assert "re-queued 1" in result.output
    pending = json.loads(run(runner, "deliveries", "--status", "pending", "--json"))
    assert pending[0]["attempts"] == 0


def test_bad_condition_is_one_clear_line(runner: CliRunner) -> None:
    result = runner.invoke(main, ["alerts", "add", "--kind", "indicator", "--ticker", "SPY",
                                  "--condition", "rsi(close, 14) < 30 and smaa(close, 5) > 1"])
    assert result.exit_code == 65
    assert "unknown function 'smaa' (did you mean 'sma'?)" in result.output
    assert result.output.count("\n") == 1
