"""``falcon user`` and ``falcon web``: passwords never in argv, tokens printed once."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from falcon.cli import main
from falcon.config import load_settings
from falcon.web import create_app

from .conftest import TEST_CONFIG

PW = "a long password"


def _invoke(runner: CliRunner, *args: str, input: str | None = None) -> object:
    return runner.invoke(main, list(args), input=input)


def _users(runner: CliRunner) -> list[dict]:
    result = runner.invoke(main, ["user", "list", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_add_prompts_twice_and_lists(runner: CliRunner) -> None:
    result = runner.invoke(main, ["user", "add", "alice", "--admin"], input=f"{PW}\n{PW}\n")
    assert result.exit_code == 0, result.output
    assert "added user alice (admin)" in result.output
    assert PW not in result.output
    assert _users(runner)[0] | {"last_login_at": None} == {
        "username": "alice",
        "admin": True,
        "totp": False,
        "tokens": [],
        "last_login_at": None,
    }


def test_add_mismatched_passwords_aborts(runner: CliRunner) -> None:
    result = runner.invoke(main, ["user", "add", "alice"], input=f"{PW}\nother password\n")
    assert result.exit_code != 0
    assert _users(runner) == []


def test_add_reads_stdin_and_refuses_argv_passwords(runner: CliRunner) -> None:
    assert (
        runner.invoke(main, ["user", "add", "bob", "--password-stdin"], input=f"{PW}\n").exit_code
        == 0
    )
    assert runner.invoke(main, ["user", "add", "eve", "--password", PW]).exit_code == 2
    duplicate = runner.invoke(main, ["user", "add", "bob", "--password-stdin"], input=f"{PW}\n")
    assert duplicate.exit_code == 65 and "already exists" in duplicate.output
    short = runner.invoke(main, ["user", "add", "carl", "--password-stdin"], input="short\n")
    assert short.exit_code == 65 and "too short" in short.output


def test_passwd_and_remove(runner: CliRunner) -> None:
    runner.invoke(main, ["user", "add", "bob", "--password-stdin"], input=f"{PW}\n")
    assert (
        runner.invoke(
            main, ["user", "passwd", "bob", "--password-stdin"], input="new long password\n"
        ).exit_code
        == 0
    )
    assert (
        runner.invoke(
            main, ["user", "passwd", "nobody", "--password-stdin"], input=f"{PW}\n"
        ).exit_code
        == 66
    )
    assert runner.invoke(main, ["user", "remove", "bob"], input="n\n").exit_code == 1
    assert [u["username"] for u in _users(runner)] == ["bob"]
    assert runner.invoke(main, ["user", "remove", "bob"], input="y\n").exit_code == 0
    assert _users(runner) == []
    assert runner.invoke(main, ["user", "remove", "bob", "--yes"]).exit_code == 66


def test_token_is_printed_once_and_works_until_revoked(
    runner: CliRunner, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALCON_DATABASE_URL", db_url)
    runner.invoke(main, ["user", "add", "alice", "--password-stdin"], input=f"{PW}\n")
    result = runner.invoke(main, ["user", "token", "alice", "--name", "grafana"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token.startswith("falcon_") and "\n" not in token
    assert "shown only this once" in result.stderr
    assert _users(runner)[0]["tokens"] == ["grafana"]

    app = create_app(load_settings(), test_config=TEST_CONFIG)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/me", headers=headers).json["username"] == "alice"
    revoked = runner.invoke(main, ["user", "token", "alice", "--name", "grafana", "--revoke"])
    assert revoked.exit_code == 0 and "revoked 1" in revoked.output
    assert client.get("/api/v1/me", headers=headers).status_code == 401
    assert (
        runner.invoke(main, ["user", "token", "alice", "--name", "grafana", "--revoke"]).exit_code
        == 1
    )
    with app.app_context():
        from falcon.web.extensions import db

        db.engine.dispose()


def test_totp_prints_the_provisioning_uri(runner: CliRunner) -> None:
    runner.invoke(main, ["user", "add", "alice", "--password-stdin"], input=f"{PW}\n")
    result = runner.invoke(main, ["user", "totp", "alice"])
    assert result.exit_code == 0
    assert result.stdout.startswith("otpauth://totp/Falcon:alice?secret=")
    assert _users(runner)[0]["totp"] is True
    assert runner.invoke(main, ["user", "totp", "alice", "--disable"]).exit_code == 0
    assert _users(runner)[0]["totp"] is False


def test_web_command_builds_the_app_and_serves(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: dict[str, object] = {}

    def fake_run(self: object, **kwargs: object) -> None:
        served.update(kwargs)

    monkeypatch.setattr("flask.Flask.run", fake_run)
    result = runner.invoke(main, ["web", "--port", "9999"])
    assert result.exit_code == 0, result.output
    assert served["port"] == 9999 and served["host"] == "127.0.0.1" and served["threaded"] is True


def test_admin_grants_and_revokes(runner: CliRunner) -> None:
    assert runner.invoke(main, ["user", "add", "bob", "--password-stdin"],
                         input=f"{PW}\n").exit_code == 0
    assert _users(runner)[0]["admin"] is False
    granted = runner.invoke(main, ["user", "admin", "bob"])
    assert granted.exit_code == 0 and "bob is an admin" in granted.output
    assert _users(runner)[0]["admin"] is True
    revoked = runner.invoke(main, ["user", "admin", "bob", "--revoke"])
    assert revoked.exit_code == 0 and "no longer an admin" in revoked.output
    assert _users(runner)[0]["admin"] is False
    missing = runner.invoke(main, ["user", "admin", "nobody"])
    assert missing.exit_code != 0 and "nobody" in missing.output
