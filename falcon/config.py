"""Typed, frozen settings.

Layers, later wins: the defaults below < ``/etc/falcon/falcon.toml`` (or ``$FALCON_CONFIG``) <
``FALCON_*`` environment variables < overrides passed by the CLI. Every value is validated when
the settings are built; a bad value raises :class:`~falcon.errors.ConfigError` with one line that
names the key and what is wrong.

Environment variables: ``FALCON_HOME`` and ``FALCON_DATABASE_URL`` for the two top-level keys,
``FALCON_<SECTION>__<KEY>`` for the rest (``FALCON_DATA__S3_BUCKET=flatfiles``).

Secrets come only from the environment (systemd loads ``/etc/falcon/secrets.env``); a secret found
in the TOML file is an error, so that it never ends up in a file people copy around.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from falcon.errors import ConfigError

SYSTEM_CONFIG = Path("/etc/falcon/falcon.toml")
ENV_PREFIX = "FALCON_"


def default_home() -> Path:
    """``$XDG_DATA_HOME/falcon`` (``~/.local/share/falcon``) for a user."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "falcon"


@dataclass(frozen=True)
class DataSettings:
    """Where flat files come from and how the store is judged."""

    s3_endpoint: str = "https://files.massive.com"
    s3_bucket: str = "flatfiles"
    s3_prefix: str = "us_stocks_sip"
    s3_region: str = "us-east-1"
    sync_retries: int = 5
    sync_backoff_s: float = 1.0
    rest_base_url: str = "https://api.massive.com"
    stale_after_days: int = 4
    # fsync each Parquet file (and its folder) before and after the rename that installs it.
    # Off: the temporary file + os.replace already survives a killed process, as SQLite in WAL
    # with synchronous=NORMAL and ClickHouse (fsync_after_insert=0) do; after a power loss the
    # newest files may be empty or torn, and re-importing the same flat files repairs them (the
    # import checks the stored file before it skips a file as unchanged). On: each file costs a
    # disk flush (~5 ms on an SSD, far more on an SD card), for files durable once imported.
    fsync: bool = False


@dataclass(frozen=True)
class LLMSettings:
    """The one OpenAI-compatible endpoint (OpenAI, Ollama, llama.cpp ...)."""

    base_url: str = ""
    model: str = ""
    timeout_s: float = 60.0
    monthly_budget_usd: float = 5.0
    usd_per_1k_input_tokens: float = 0.0
    usd_per_1k_output_tokens: float = 0.0


@dataclass(frozen=True)
class TradingSettings:
    """Defaults of the fill model and of new paper accounts."""

    starting_cash: float = 100_000.0
    commission: float = 0.0
    commission_per_share: float = 0.0
    slippage_bps: float = 0.0


@dataclass(frozen=True)
class WebSettings:
    """The dashboard."""

    host: str = "127.0.0.1"
    port: int = 8080
    secure_cookies: bool = True
    behind_proxy: bool = False  # trust X-Forwarded-For/-Proto from one proxy (nginx)
    events_retention_days: int = 7  # housekeeping deletes older live-update events


@dataclass(frozen=True)
class AlertsSettings:
    """Alert delivery: SMTP, retries, the circuit breaker and the delivery worker.

    Webhook URLs and the SMTP password are secrets (environment only).
    """

    smtp_host: str = ""
    smtp_port: int = 587
    smtp_user: str = ""
    smtp_from: str = ""
    smtp_to: str = ""  # comma-separated recipients
    smtp_tls: Literal["starttls", "ssl", "none"] = "starttls"
    smtp_timeout_s: float = 20.0
    http_timeout_s: float = 10.0
    max_attempts: int = 8
    backoff_base_s: float = 2.0
    backoff_cap_s: float = 300.0
    breaker_threshold: int = 5
    breaker_cooloff_s: float = 60.0
    claim_lease_s: float = 120.0
    poll_interval_s: float = 0.25
    batch_size: int = 50
    send_concurrency: int = 4
    rules_refresh_s: float = 10.0


@dataclass(frozen=True)
class LogSettings:
    """Logging to stderr (journald on a node)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json: bool = False


def _hidden(value: str | None) -> str:
    return "<unset>" if not value else "<set>"


@dataclass(frozen=True)
class Secrets:
    """Secrets, read only from the environment; ``repr`` never shows a value."""

    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    massive_api_key: str | None = None
    llm_api_key: str | None = None
    web_secret_key: str | None = None
    slack_webhook_url: str | None = None
    discord_webhook_url: str | None = None
    smtp_password: str | None = None

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{f.name}={_hidden(getattr(self, f.name))}" for f in dataclasses.fields(self)
        )
        return f"Secrets({inner})"

    __str__ = __repr__

    @staticmethod
    def env_name(name: str) -> str:
        """The environment variable that carries secret ``name``."""
        return ENV_PREFIX + name.upper()


@dataclass(frozen=True)
class Settings:
    """All of Falcon's settings; build with :func:`load_settings`."""

    home: Path = field(default_factory=default_home)
    database_url: str | None = None
    timezone: str = "America/New_York"
    data: DataSettings = field(default_factory=DataSettings)
    llm: LLMSettings = field(default_factory=LLMSettings)
    trading: TradingSettings = field(default_factory=TradingSettings)
    web: WebSettings = field(default_factory=WebSettings)
    alerts: AlertsSettings = field(default_factory=AlertsSettings)
    log: LogSettings = field(default_factory=LogSettings)
    secrets: Secrets = field(default_factory=Secrets, repr=False)
    source_file: Path | None = None

    @property
    def market_data_dir(self) -> Path:
        """The Parquet store."""
        return self.home / "market_data"

    @property
    def effective_database_url(self) -> str:
        """``database_url`` if set, else the SQLite file in ``home``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'falcon.db'}"

    @property
    def is_sqlite(self) -> bool:
        """True when the database is the embedded SQLite file."""
        return self.effective_database_url.startswith("sqlite")


_SECTIONS: dict[str, type] = {
    "data": DataSettings,
    "llm": LLMSettings,
    "trading": TradingSettings,
    "web": WebSettings,
    "alerts": AlertsSettings,
    "log": LogSettings,
}
_TOP_LEVEL = {"home", "database_url", "timezone"}
_SECRET_NAMES = {f.name for f in dataclasses.fields(Secrets)}


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Turn ``value`` (TOML value or environment string) into ``annotation``'s type."""
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if value is None or value == "":
            return None
        return _coerce(key, value, args[0])
    if origin is Literal:
        choices = get_args(annotation)
        text = (
            str(value).upper()
            if all(isinstance(c, str) and c.isupper() for c in choices)
            else value
        )
        if text not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
        return text
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{key}: {value!r} is not a boolean (use true or false)")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got a boolean")
        try:
            number = annotation(value)
        except (TypeError, ValueError):
            kind = "an integer" if annotation is int else "a number"
            raise ConfigError(f"{key}: {value!r} is not {kind}") from None
        if annotation is float and not math.isfinite(number):
            raise ConfigError(f"{key}: {value!r} is not a finite number")
        return number
    if annotation is Path:
        if not isinstance(value, str | Path) or not str(value):
            raise ConfigError(f"{key}: expected a path, got {value!r}")
        return Path(value).expanduser()
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported setting type {annotation!r}")  # pragma: no cover


def _build(cls: type, prefix: str, values: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown setting")
    kwargs = {name: _coerce(prefix + name, v, hints[name]) for name, v in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - guarded by the unknown check
        raise ConfigError(f"{prefix.rstrip('.')}: {exc}") from None


def _validate(settings: Settings) -> None:
    """Range checks that types alone cannot express."""
    checks: list[tuple[bool, str]] = [
        (settings.data.sync_retries >= 0, "data.sync_retries: must be >= 0"),
        (settings.data.sync_backoff_s >= 0, "data.sync_backoff_s: must be >= 0"),
        (settings.data.stale_after_days >= 1, "data.stale_after_days: must be >= 1"),
        (settings.llm.timeout_s > 0, "llm.timeout_s: must be > 0"),
        (settings.llm.monthly_budget_usd >= 0, "llm.monthly_budget_usd: must be >= 0"),
        (settings.trading.starting_cash > 0, "trading.starting_cash: must be > 0"),
        (0 <= settings.trading.commission < 0.1, "trading.commission: must be in [0, 0.1)"),
        (settings.trading.commission_per_share >= 0, "trading.commission_per_share: must be >= 0"),
        (0 <= settings.trading.slippage_bps < 1000, "trading.slippage_bps: must be in [0, 1000)"),
        (0 < settings.web.port < 65536, "web.port: must be in 1..65535"),
        (0 < settings.alerts.smtp_port < 65536, "alerts.smtp_port: must be in 1..65535"),
        (settings.alerts.max_attempts >= 1, "alerts.max_attempts: must be >= 1"),
        (
            0 <= settings.alerts.backoff_base_s <= settings.alerts.backoff_cap_s,
            "alerts.backoff_base_s: must be >= 0 and <= alerts.backoff_cap_s",
        ),
        (settings.alerts.breaker_threshold >= 1, "alerts.breaker_threshold: must be >= 1"),
        (settings.alerts.claim_lease_s > 0, "alerts.claim_lease_s: must be > 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    url = settings.database_url
    if url and not url.startswith(("sqlite", "postgresql")):
        raise ConfigError("database_url: must start with sqlite:// or postgresql://")
    try:
        import zoneinfo

        zoneinfo.ZoneInfo(settings.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"timezone: unknown time zone {settings.timezone!r}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None


def _env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "FALCON_CONFIG":
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key in _SECRET_NAMES:
            continue
        if "__" in key:
            section, _, sub = key.partition("__")
            if section not in _SECTIONS:
                raise ConfigError(f"{name}: unknown settings section {section!r}")
            layer.setdefault(section, {})[sub] = value
        elif key in _TOP_LEVEL:
            layer[key] = value
        # Other FALCON_* names (FALCON_TEST_*, tooling) are not settings: ignore them.
    return layer


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _overrides_layer(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """CLI overrides as dotted keys (``{"data.s3_bucket": "x", "home": "/tmp/f"}``)."""
    layer: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, dot, key = dotted.partition(".")
        if dot:
            layer.setdefault(section, {})[key] = value
        else:
            layer[section] = value
    return layer


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Build validated settings from every layer.

    ``config_file`` beats ``$FALCON_CONFIG``, which beats ``/etc/falcon/falcon.toml``; a file named
    explicitly must exist, the system one is optional.
    """
    env = os.environ if environ is None else environ
    path: Path | None = config_file
    if path is None and env.get("FALCON_CONFIG"):
        path = Path(env["FALCON_CONFIG"])
    if path is not None and not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if path is None and SYSTEM_CONFIG.exists():
        path = SYSTEM_CONFIG

    merged: dict[str, Any] = {}
    if path is not None:
        file_layer = _read_toml(path)
        leaked = sorted(_SECRET_NAMES & set(file_layer)) + sorted(
            f"{s}.{k}"
            for s, v in file_layer.items()
            if isinstance(v, dict)
            for k in v
            if k in _SECRET_NAMES
        )
        if leaked:
            raise ConfigError(
                f"{leaked[0]}: secrets are read only from the environment "
                f"({Secrets.env_name(leaked[0].rsplit('.', 1)[-1])}), remove it from {path}"
            )
        merged = _merge(merged, file_layer)
    merged = _merge(merged, _env_layer(env))
    merged = _merge(merged, _overrides_layer(overrides or {}))

    top: dict[str, Any] = {}
    hints = typing.get_type_hints(Settings)
    for key, value in merged.items():
        if key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key}: expected a table of settings")
            top[key] = _build(_SECTIONS[key], f"{key}.", value)
        elif key in _TOP_LEVEL:
            top[key] = _coerce(key, value, hints[key])
        else:
            raise ConfigError(f"{key}: unknown setting")
    secrets = Secrets(**{n: env.get(Secrets.env_name(n)) or None for n in _SECRET_NAMES})
    settings = Settings(**top, secrets=secrets, source_file=path)
    _validate(settings)
    return settings
