"""Dashboard users: argon2 passwords, API tokens, TOTP and the login rate limit.

The library under both the login page and ``falcon user``; it works on a SQLAlchemy session and
never commits (the caller owns the transaction).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from falcon.db.models import ApiToken, Event, User
from falcon.db.types import utcnow
from falcon.errors import NotFound, ValidationError

MIN_PASSWORD_LENGTH = 8
TOKEN_PREFIX = "falcon_"  # noqa: S105 - marks tokens in logs and secret scanners

# Login rate limit: failures of one username from one address, and of any username from one
# address (password spraying), inside the window. Counted from Event rows so that every gunicorn
# worker and every web node sees the same count.
LOGIN_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_USER_IP = 5
MAX_FAILURES_PER_IP = 30
LOGIN_FAILED = "login_failed"

# The argon2id defaults of argon2-cffi (RFC 9106 low-memory profile). Tests swap in cheaper
# parameters through :func:`set_hasher`; a stored hash made with other parameters is upgraded at
# the next successful login.
_hasher = PasswordHasher()


def set_hasher(hasher: PasswordHasher) -> None:
    """Use ``hasher`` from now on (tests use cheap parameters)."""
    global _hasher
    _hasher = hasher
    _dummy_hash.cache_clear()


@cache
def _dummy_hash() -> str:
    # Verified against when the user does not exist, so that a login for an unknown name costs
    # as long as one for a known name (no user enumeration by timing).
    return _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` after checking its length."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(f"password too short: use at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


def verify_password(user: User | None, password: str) -> bool:
    """True when ``password`` is ``user``'s; upgrades the stored hash when parameters changed."""
    if user is None:
        with contextlib.suppress(VerificationError):
            _hasher.verify(_dummy_hash(), password)
        return False
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return True


def get_user(session: Session, username: str) -> User:
    """The user called ``username`` or :class:`NotFound`."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no user {username!r}")
    return user


def create_user(session: Session, username: str, password: str, *, is_admin: bool = False) -> User:
    """Add a user; the name must be new and 1-64 printable characters without spaces."""
    if not username or len(username) > 64 or not username.isprintable() or " " in username:
        raise ValidationError("username must be 1-64 printable characters without spaces")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise ValidationError(f"user {username!r} already exists")
    user = User(username=username, password_hash=hash_password(password), is_admin=is_admin)
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, username: str, password: str) -> None:
    """Replace a user's password (their open sessions end: see ``session_fingerprint``)."""
    get_user(session, username).password_hash = hash_password(password)


def set_admin(session: Session, username: str, admin: bool) -> None:
    """Grant or revoke admin rights (halt, resume, cancel, promote, retire: see ``security``)."""
    get_user(session, username).is_admin = admin


def delete_user(session: Session, username: str) -> None:
    """Remove a user and (by cascade) their API tokens."""
    user = get_user(session, username)
    session.execute(delete(ApiToken).where(ApiToken.user_id == user.id))
    session.delete(user)


def session_fingerprint(user: User) -> str:
    """A short digest of the password hash and TOTP state kept in the session cookie.

    Cookie sessions cannot be revoked server-side; comparing this on every request ends every
    session of a user whose password or second factor changed.
    """
    material = f"{user.password_hash}|{user.totp_secret or ''}".encode()
    return hashlib.sha256(material).hexdigest()[:16]


# --- API tokens ------------------------------------------------------------------------------


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(session: Session, username: str, name: str) -> str:
    """Create an API token called ``name`` for a user; the plain token is returned only here."""
    if not name or len(name) > 64:
        raise ValidationError("token name must be 1-64 characters")
    user = get_user(session, username)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, name=name, token_sha256=_token_digest(token)))
    session.flush()
    return token


def revoke_tokens(session: Session, username: str, name: str) -> int:
    """Revoke a user's live tokens called ``name``; how many were revoked."""
    user = get_user(session, username)
    tokens = session.scalars(
        select(ApiToken).where(
            ApiToken.user_id == user.id, ApiToken.name == name, ApiToken.revoked.is_(False)
        )
    ).all()
    for token in tokens:
        token.revoked = True
    return len(tokens)


def user_for_token(session: Session, token: str) -> User | None:
    """The user of a live API token, or None; notes when the token was last used."""
    row = session.scalar(
        select(ApiToken).where(
            ApiToken.token_sha256 == _token_digest(token), ApiToken.revoked.is_(False)
        )
    )
    if row is None:
        return None
    now = utcnow()
    # Bookkeeping only, and at most once a minute, so that an API client polling with GET does
    # not turn every read into a write.
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
        row.last_used_at = now
    return session.get(User, row.user_id)


# --- TOTP ------------------------------------------------------------------------------------


def enable_totp(session: Session, username: str, *, issuer: str = "Falcon") -> str:
    """Give a user a new TOTP secret; returns the provisioning URI (show it once)."""
    import pyotp

    user = get_user(session, username)
    user.totp_secret = pyotp.random_base32()
    user.totp_last_counter = None  # steps of the old secret say nothing about the new one
    return pyotp.TOTP(user.totp_secret).provisioning_uri(name=username, issuer_name=issuer)


def disable_totp(session: Session, username: str) -> None:
    """Remove a user's second factor."""
    get_user(session, username).totp_secret = None


TOTP_DRIFT_STEPS = 1  # codes of one time step before or after now are accepted (clock drift)


def totp_step(user: User, code: str, *, at: datetime | None = None) -> int | None:
    """The time step whose code ``code`` is (now, or one step either side), else None.

    Pure: says nothing about whether the code was used before (see :func:`verify_totp`).
    """
    import pyotp

    if not user.totp_secret:
        return None
    code = code.strip().replace(" ", "")
    if not code.isdigit():
        return None
    totp = pyotp.TOTP(user.totp_secret)
    now = at or utcnow()
    current = totp.timecode(now)
    for step in range(current - TOTP_DRIFT_STEPS, current + TOTP_DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def verify_totp(session: Session, user: User, code: str, *, at: datetime | None = None) -> bool:
    """True when ``code`` is the user's TOTP code and was never accepted before.

    A code is good once: its time step is recorded in ``users.totp_last_counter`` and a code of
    that step or an earlier one is refused afterwards, so a code seen over a shoulder or in a
    proxy log cannot be replayed within its window. The claim is one conditional UPDATE, so two
    workers racing with the same code cannot both win. The caller commits.
    """
    step = totp_step(user, code, at=at)
    if step is None:
        return False
    claimed = session.execute(
        update(User)
        .where(User.id == user.id)
        .where(or_(User.totp_last_counter.is_(None), User.totp_last_counter < step))
        .values(totp_last_counter=step)
        .execution_options(synchronize_session=False)
    )
    if getattr(claimed, "rowcount", 0) != 1:
        return False
    session.refresh(user, ["totp_last_counter"])
    return True


# --- login rate limit ------------------------------------------------------------------------


def _recent_failures(session: Session, now: datetime) -> list[Event]:
    return list(
        session.scalars(
            select(Event).where(Event.kind == LOGIN_FAILED, Event.ts >= now - LOGIN_WINDOW)
        )
    )


def login_blocked(session: Session, username: str, ip: str) -> bool:
    """True when this username and address have failed too often inside the window."""
    failures = _recent_failures(session, utcnow())
    same_ip = [e for e in failures if e.payload.get("ip") == ip]
    same_user = [e for e in same_ip if e.payload.get("username") == username.lower()]
    return len(same_user) >= MAX_FAILURES_PER_USER_IP or len(same_ip) >= MAX_FAILURES_PER_IP


def record_login_failure(session: Session, username: str, ip: str) -> None:
    """Count one failed login (a row every worker sees)."""
    name = username.replace("\x00", "").lower()[:64]
    session.add(Event(kind=LOGIN_FAILED, payload={"username": name, "ip": ip}))


def clear_login_failures(session: Session, username: str, ip: str) -> None:
    """Forget this username's failures from this address after a successful login."""
    for event in _recent_failures(session, utcnow()):
        if event.payload.get("ip") == ip and event.payload.get("username") == username.lower():
            session.delete(event)
