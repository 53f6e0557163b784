"""Login (password, then TOTP when the user has it), logout."""

from __future__ import annotations

import time

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from falcon.db.models import User
from falcon.db.types import utcnow
from falcon.web.extensions import db
from falcon.web.security import current_user, login_session, public, safe_next
from falcon.web.users import (
    clear_login_failures,
    login_blocked,
    record_login_failure,
    session_fingerprint,
    verify_password,
    verify_totp,
)

bp = Blueprint("auth", __name__)

TOTP_PENDING_SECONDS = 300
_TOO_MANY = "Too many failed logins: wait 15 minutes and try again."
_BAD_LOGIN = "Invalid username or password."


def _client_ip() -> str:
    # Behind nginx this is X-Forwarded-For's last hop (ProxyFix); on a unix socket without it,
    # every client shares one address and the per-username limit still applies.
    return request.remote_addr or "unknown"


def _finish_login(user: User) -> Response:
    clear_login_failures(db.session, user.username, _client_ip())
    user.last_login_at = utcnow()
    db.session.commit()
    target = safe_next(session.get("pending_next") or request.form.get("next"))
    login_session(user)
    return redirect(target)


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> Response | str | tuple[str, int]:
    """The login form; a user with TOTP continues to :func:`login_totp`."""
    if request.method == "GET" and current_user() is not None:
        return redirect(safe_next(request.args.get("next")))
    next_url = request.values.get("next", "")
    if request.method == "GET":
        return render_template("auth/login.html", next=next_url)

    username = request.form.get("username", "").strip()[:64]
    password = request.form.get("password", "")
    ip = _client_ip()
    if login_blocked(db.session, username, ip):
        flash(_TOO_MANY, "error")
        return render_template("auth/login.html", next=next_url, username=username), 429
    known = username and username.isprintable()  # PostgreSQL refuses NUL in a query
    user = db.session.scalar(select(User).where(User.username == username)) if known else None
    if not verify_password(user, password) or user is None:
        record_login_failure(db.session, username, ip)
        db.session.commit()
        flash(_BAD_LOGIN, "error")
        return render_template("auth/login.html", next=next_url, username=username), 200
    if user.totp_secret:
        db.session.commit()  # a rehashed password
        session.clear()
        session["pending_user_id"] = user.id
        session["pending_fp"] = session_fingerprint(user)
        session["pending_at"] = time.time()
        session["pending_next"] = next_url
        return redirect(url_for("auth.login_totp"))
    return _finish_login(user)


@bp.route("/login/totp", methods=["GET", "POST"])
@public
def login_totp() -> Response | str | tuple[str, int]:
    """The second step: the six-digit code of the user's authenticator app."""
    if current_user() is not None:
        return redirect(url_for("overview.index"))
    user_id = session.get("pending_user_id")
    started = session.get("pending_at", 0.0)
    user = db.session.get(User, user_id) if user_id is not None else None
    if (
        user is None
        or session.get("pending_fp") != session_fingerprint(user)
        or time.time() - float(started) > TOTP_PENDING_SECONDS
    ):
        for key in ("pending_user_id", "pending_fp", "pending_at", "pending_next"):
            session.pop(key, None)
        flash("Please log in again.", "error")
        return redirect(url_for("auth.login"))
    if request.method == "GET":
        return render_template("auth/totp.html")
    ip = _client_ip()
    if login_blocked(db.session, user.username, ip):
        session.clear()
        flash(_TOO_MANY, "error")
        return render_template("auth/login.html", next=""), 429
    if not verify_totp(db.session, user, request.form.get("code", "")):
        record_login_failure(db.session, user.username, ip)
        db.session.commit()
        flash("Wrong code.", "error")
        return render_template("auth/totp.html"), 200
    return _finish_login(user)


@bp.route("/logout", methods=["POST"])
def logout() -> Response:
    """End the session (POST only, with the CSRF token, so no link can log anyone out)."""
    session.clear()
    flash("Logged out.", "info")
    return redirect(url_for("auth.login"))
