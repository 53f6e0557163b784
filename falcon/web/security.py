"""Who is asking, may they, and the headers every response carries.

Secure by default: every endpoint needs a logged-in user unless its view is marked with
:func:`public`. A request is authenticated either by the session cookie (pages, and the page's
own ``fetch`` calls) or by ``Authorization: Bearer <token>`` (API clients, /api/ and /events/
only). Every POST/PUT/PATCH/DELETE authenticated by the cookie, and every anonymous one (the login
form), must carry the session's CSRF token in the form field ``csrf_token`` or the header
``X-CSRF-Token``; token-authenticated requests are exempt because a browser never adds that header
to a cross-site request by itself (and there is no CORS to let a site ask for it).
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

from flask import Flask, abort, current_app, g, redirect, request, session, url_for
from werkzeug.wrappers import Response

from falcon.db.models import User
from falcon.web.http import is_api_request, json_error
from falcon.web.users import session_fingerprint, user_for_token

if TYPE_CHECKING:
    from falcon.web.extensions import Database

F = TypeVar("F", bound=Callable[..., Any])

_PUBLIC = "_falcon_public"
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"

# No inline script or style anywhere: pages load /static files only, and data for scripts is
# embedded as <script type="application/json"> (never executed) via |tojson.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def public(view: F) -> F:
    """Mark a view as reachable without logging in (login, health, metrics)."""
    setattr(view, _PUBLIC, True)
    return view


ADMIN_ONLY_MESSAGE = "only an admin may do this (ask an admin: falcon user create --admin)"


def admin_required(view: F) -> F:
    """Let only admins (``users.is_admin``) run ``view``: 403 for everyone else.

    Admin-only are the actions that change what the paper trader does: halting, resuming and
    cancelling orders, promoting and retiring strategies. Reading pages, running backtests and
    queuing research stay open to every user. Applied under the route decorator, after the
    login and CSRF checks of :class:`Guard` have run.
    """

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        user = current_user()
        if user is None or not user.is_admin:
            if is_api_request():
                return json_error(403, ADMIN_ONLY_MESSAGE)
            abort(403, ADMIN_ONLY_MESSAGE)
        return view(*args, **kwargs)

    return cast(F, wrapper)


def current_user() -> User | None:
    """The logged-in user of this request, if any."""
    user: User | None = g.get("user")
    return user


def csrf_token() -> str:
    """The session's CSRF token (created on first use); templates call it in every form."""
    token: str | None = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def login_session(user: User) -> None:
    """Start a fresh session for ``user`` (a new session id against fixation)."""
    session.clear()
    session.permanent = True
    session["user_id"] = user.id
    session["fp"] = session_fingerprint(user)


def safe_next(target: str | None) -> str:
    """``target`` if it is a path on this site, else the overview (no open redirects)."""
    if target:
        parts = urlsplit(target)
        if (
            not parts.scheme
            and not parts.netloc
            and target.startswith("/")
            and not target.startswith("//")
            and "\\" not in target
        ):
            return target
    return url_for("overview.index")


class Guard:
    """Authentication, the login requirement, CSRF and security headers as request hooks."""

    def init_app(self, app: Flask, database: Database) -> None:
        """Install the hooks on ``app``; they read users through ``database``."""
        self._db = database
        app.before_request(self._load_user)
        app.before_request(self._require_login)
        app.before_request(self._check_csrf)
        app.after_request(self._add_headers)
        app.jinja_env.globals["csrf_token"] = csrf_token
        app.jinja_env.globals["current_user"] = current_user

    def _load_user(self) -> Response | None:
        g.user, g.auth = None, None
        header = request.headers.get("Authorization")
        if header is not None and is_api_request():
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return json_error(401, "use Authorization: Bearer <token>")
            db_session = self._db.session
            user = user_for_token(db_session, token.strip())
            if user is None:
                return json_error(401, "invalid or revoked API token")
            db_session.commit()  # last_used_at
            g.user, g.auth = user, "token"
            return None
        user_id = session.get("user_id")
        if user_id is not None:
            user = self._db.session.get(User, user_id)
            if user is None or session.get("fp") != session_fingerprint(user):
                session.clear()  # user removed, or password / second factor changed
            else:
                g.user, g.auth = user, "session"
        return None

    @staticmethod
    def _is_public() -> bool:
        endpoint = request.endpoint
        if endpoint is None or request.routing_exception is not None:
            return True  # let routing answer 404/405 itself
        if endpoint == "static" or endpoint.endswith(".static"):
            return True
        view = current_app.view_functions.get(endpoint)
        return bool(getattr(view, _PUBLIC, False))

    def _require_login(self) -> Response | None:
        if g.user is not None or self._is_public():
            return None
        if is_api_request():
            return json_error(401, "login required")
        target = request.full_path if request.query_string else request.path
        return redirect(url_for("auth.login", next=target))

    @staticmethod
    def _check_csrf() -> Response | None:
        if request.method not in _UNSAFE_METHODS or g.auth == "token":
            return None
        if request.routing_exception is not None:
            return None
        expected = session.get("csrf")
        sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)
        if expected and sent and hmac.compare_digest(str(expected), str(sent)):
            return None
        message = "CSRF token missing or invalid: reload the page and try again"
        if is_api_request():
            return json_error(403, message)
        abort(403, message)

    @staticmethod
    def _add_headers(response: Response) -> Response:
        headers = response.headers
        headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
        headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        if current_app.config.get("SESSION_COOKIE_SECURE"):
            headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        if g.get("user") is not None and request.endpoint != "static":
            # Account data must not stay in shared or browser caches after logout.
            headers.setdefault("Cache-Control", "no-store")
        # Never CORS: nothing here is meant to be read by another origin.
        headers.pop("Access-Control-Allow-Origin", None)
        return response
