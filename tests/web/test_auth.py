"""Login, logout, hashes, rate limiting, TOTP and redirects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from falcon.db.models import Event, User
from falcon.web import users

from .conftest import PASSWORD, SQLITE_ONLY, AuthActions, csrf, sessions_of


def _user(app: Flask, name: str = "alice") -> User:
    with sessions_of(app)() as s:
        return s.scalars(select(User).where(User.username == name)).one()


def test_login_and_logout(client: FlaskClient, auth: AuthActions) -> None:
    assert client.get("/").status_code == 302
    response = auth.login()
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    page = client.get("/")
    assert page.status_code == 200
    assert "alice" in page.get_data(as_text=True)
    assert auth.logout().headers["Location"] == "/login"
    assert client.get("/").status_code == 302


@SQLITE_ONLY
def test_login_returns_to_next_but_never_off_site(client: FlaskClient, auth: AuthActions) -> None:
    assert auth.login(next="/trading/").headers["Location"] == "/trading/"
    auth.logout()
    for evil in (
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "javascript:alert(1)",
    ):
        assert auth.login(next=evil).headers["Location"] == "/"
        auth.logout()


@SQLITE_ONLY
def test_wrong_password_is_refused(client: FlaskClient, auth: AuthActions) -> None:
    response = auth.login(password="wrong password")
    assert response.status_code == 200
    assert "Invalid username or password" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302
    assert auth.login(username="nobody").status_code == 200


def test_passwords_are_stored_as_argon2_hashes(app: Flask, auth: AuthActions) -> None:
    user = _user(app)
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash


def test_hash_is_upgraded_when_parameters_change(app: Flask, auth: AuthActions) -> None:
    old = _user(app).password_hash
    users.set_hasher(PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1))
    assert auth.login().status_code == 302
    new = _user(app).password_hash
    assert new != old and "m=2048,t=2" in new


def test_sixth_bad_login_is_blocked(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    for _ in range(5):
        assert auth.login(password="wrong password").status_code == 200
    blocked = auth.login()  # even the right password
    assert blocked.status_code == 429
    assert "Too many failed logins" in blocked.get_data(as_text=True)
    assert client.get("/").status_code == 302
    # Another user from the same address is not blocked by alice's failures.
    auth.create("bob")
    assert auth.login("bob").status_code == 302


def test_failures_are_counted_in_the_database_for_every_worker(
    app: Flask, auth: AuthActions
) -> None:
    for _ in range(3):
        auth.login(password="wrong password")
    with sessions_of(app)() as s:
        assert (
            s.scalar(select(func.count()).select_from(Event).where(Event.kind == "login_failed"))
            == 3
        )
    # A second app (another gunicorn worker) on the same database sees the same count.
    other = app.test_client()
    helper = AuthActions(app, other)
    helper.login(password="wrong password")
    helper.login(password="wrong password")
    assert helper.login().status_code == 429


@SQLITE_ONLY
def test_success_clears_earlier_failures(app: Flask, auth: AuthActions) -> None:
    for _ in range(4):
        auth.login(password="wrong password")
    assert auth.login().status_code == 302
    auth.logout()
    for _ in range(4):
        auth.login(password="wrong password")
    assert auth.login().status_code == 302


def test_password_change_ends_sessions(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    auth.login()
    assert client.get("/").status_code == 200
    with sessions_of(app).begin() as s:
        users.set_password(s, "alice", "another long password")
    assert client.get("/").status_code == 302


@SQLITE_ONLY
def test_removed_user_is_logged_out(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    auth.login()
    with sessions_of(app).begin() as s:
        users.delete_user(s, "alice")
    assert client.get("/").status_code == 302


@SQLITE_ONLY
def test_login_without_csrf_token_is_refused(client: FlaskClient, auth: AuthActions) -> None:
    response = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 403


@SQLITE_ONLY
def test_login_page_carries_a_csrf_token(client: FlaskClient) -> None:
    html = client.get("/login").get_data(as_text=True)
    with client.session_transaction() as sess:
        token = sess["csrf"]
    assert f'name="csrf_token" value="{token}"' in html
    assert f'<meta name="csrf-token" content="{token}">' in html


def test_totp_flow(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    with sessions_of(app).begin() as s:
        uri = users.enable_totp(s, "alice")
    assert uri.startswith("otpauth://totp/")
    secret = _user(app).totp_secret
    assert secret
    response = auth.login(next="/system/")
    assert response.headers["Location"] == "/login/totp"
    assert client.get("/").status_code == 302  # not logged in yet
    assert "Authenticator code" in client.get("/login/totp").get_data(as_text=True)
    wrong = client.post(
        "/login/totp",
        data={
            "code": "000000" if pyotp.TOTP(secret).now() != "000000" else "111111",
            "csrf_token": csrf(client),
        },
    )
    assert "Wrong code" in wrong.get_data(as_text=True)
    ok = client.post(
        "/login/totp", data={"code": pyotp.TOTP(secret).now(), "csrf_token": csrf(client)}
    )
    assert ok.status_code == 302 and ok.headers["Location"] == "/system/"
    assert client.get("/").status_code == 200


def test_totp_code_is_accepted_once(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    with sessions_of(app).begin() as s:
        users.enable_totp(s, "alice")
    code = pyotp.TOTP(str(_user(app).totp_secret)).now()

    def second_step() -> int:
        assert auth.login().headers["Location"] == "/login/totp"
        response = client.post("/login/totp", data={"code": code, "csrf_token": csrf(client)})
        return response.status_code

    assert second_step() == 302 and client.get("/").status_code == 200
    assert _user(app).totp_last_counter is not None
    auth.logout()
    # Replaying the same code (seen over a shoulder, in a log) is refused and counted as a failure.
    assert second_step() == 200
    assert client.get("/").status_code == 302
    with sessions_of(app)() as s:
        assert s.scalar(select(func.count()).select_from(Event)
                        .where(Event.kind == "login_failed")) == 1


def test_verify_totp_refuses_the_same_or_an_earlier_step(app: Flask, auth: AuthActions) -> None:
    with sessions_of(app).begin() as s:
        users.enable_totp(s, "alice")
    user = _user(app)
    totp = pyotp.TOTP(str(user.totp_secret))
    now = datetime(2026, 3, 2, 15, 0, 10, tzinfo=UTC)
    step = totp.timecode(now)
    later = now + timedelta(seconds=30)
    with sessions_of(app).begin() as s:
        alice = s.get(User, user.id)
        assert alice is not None
        assert users.totp_step(alice, totp.at(now), at=now) == step
        assert users.verify_totp(s, alice, totp.at(now), at=now)
        assert alice.totp_last_counter == step
        assert not users.verify_totp(s, alice, totp.at(now), at=now)  # same code again
        # Still inside the drift window 30 s later, but its step is used up.
        assert not users.verify_totp(s, alice, totp.at(now), at=later)
        # The previous step's code (valid by drift) is older than the accepted one: refused.
        assert not users.verify_totp(s, alice, totp.at(now - timedelta(seconds=30)), at=now)
        assert users.verify_totp(s, alice, totp.at(later), at=later)  # the next code works
        assert not users.verify_totp(s, alice, "12345x", at=later)
    assert _user(app).totp_last_counter == step + 1


@SQLITE_ONLY
def test_totp_step_needs_the_password_step(client: FlaskClient, auth: AuthActions) -> None:
    response = client.post("/login/totp", data={"code": "123456", "csrf_token": csrf(client)})
    assert response.status_code == 302 and response.headers["Location"] == "/login"


@SQLITE_ONLY
@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "tab\tname"])
def test_bad_usernames_are_refused(app: Flask, name: str) -> None:
    from falcon.errors import ValidationError

    with sessions_of(app).begin() as s, pytest.raises(ValidationError):
        users.create_user(s, name, PASSWORD)


@SQLITE_ONLY
def test_short_passwords_are_refused(app: Flask) -> None:
    from falcon.errors import ValidationError

    with sessions_of(app).begin() as s, pytest.raises(ValidationError, match="too short"):
        users.create_user(s, "carol", "short")
