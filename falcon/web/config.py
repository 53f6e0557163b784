"""Flask configuration built from Falcon's settings, and the session secret key."""

from __future__ import annotations

import contextlib
import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from falcon.config import Settings
from falcon.errors import ConfigError

SECRET_KEY_FILE = "web_secret_key"  # noqa: S105 - a file name, not a secret


def load_secret_key(settings: Settings) -> str:
    """The session signing key: FALCON_WEB_SECRET_KEY, else (single node) a generated one.

    On a single node the key is kept in ``$FALCON_HOME/web_secret_key`` (0600) so that sessions
    survive restarts and every worker signs with the same key. A cluster shares the key through
    secrets.env, because a generated file on one web node would not be on another.
    """
    if settings.secrets.web_secret_key:
        return settings.secrets.web_secret_key
    if not settings.is_sqlite:
        raise ConfigError(
            f"{settings.secrets.env_name('web_secret_key')} must be set when the database is "
            "PostgreSQL (put it in /etc/falcon/secrets.env)"
        )
    return _key_from_file(settings.home / SECRET_KEY_FILE)


def _key_from_file(path: Path) -> str:
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if key:
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write a private temporary file, then link it into place: link fails if another worker won
    # the race, and nobody ever reads a half-written key.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48) + "\n")
        with contextlib.suppress(FileExistsError):  # another worker won: use its key
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()


def flask_config(settings: Settings) -> dict[str, Any]:
    """Flask's config keys for ``settings`` (the secret key is resolved separately)."""
    return {
        "SESSION_COOKIE_NAME": "falcon_session",
        "SESSION_COOKIE_SECURE": settings.web.secure_cookies,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=12),
        "MAX_CONTENT_LENGTH": 1024 * 1024,
        # The proxy flag is read with getattr so that this works before WebSettings grows it.
        "PROXY_FIX": settings.web.behind_proxy,
        "SSE_POLL_SECONDS": 0.5,
        "SSE_MAX_SECONDS": 300.0,
        "SSE_KEEPALIVE_SECONDS": 15.0,
        "FALCON_TIMEZONE": settings.timezone,
    }
