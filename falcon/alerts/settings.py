"""The alert settings: the ``[alerts]`` section of :class:`~falcon.config.Settings` plus secrets.

:meth:`AlertSettings.from_settings` copies ``settings.alerts`` and adds the per-channel retry
policies. Secrets (webhook URLs, the SMTP password) come from ``settings.secrets`` only and are
never shown by ``repr``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from falcon.config import AlertsSettings

CHANNELS = ("dashboard", "slack", "discord", "email")
#: Channels that leave the process and go through the outbox worker.
REMOTE_CHANNELS = ("slack", "discord", "email")


@dataclass(frozen=True)
class RetryPolicy:
    """How one channel retries: exponential backoff with jitter, capped, then dead-letter."""

    max_attempts: int = 8
    backoff_base_s: float = 2.0
    backoff_cap_s: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.backoff_base_s < 0 or self.backoff_cap_s < self.backoff_base_s:
            raise ValueError("need 0 <= backoff_base_s <= backoff_cap_s")


@dataclass(frozen=True)
class AlertSettings(AlertsSettings):
    """Everything the alert engine, channels and the delivery worker need.

    The ``[alerts]`` fields come from :class:`falcon.config.AlertsSettings`; this adds the
    per-channel retry policies and the secrets, which config keeps apart.
    """

    retry: dict[str, RetryPolicy] = field(default_factory=dict)
    #: How often the delivery worker on SQLite looks whether anything was committed (a read of
    #: ``PRAGMA data_version``: no lock, microseconds), so that an alert queued by another
    #: process is sent without waiting for ``poll_interval_s``.
    change_poll_s: float = 0.02
    #: How long the delivery worker, once woken, lets further alerts gather before it claims:
    #: a burst of alerts (a minute's bars arrive together) is then one claim and one ``sent``
    #: write instead of one of each per alert, each of which would take SQLite's write lock
    #: (and the interpreter's) from the alert engine. It adds at most this much to delivery.
    gather_s: float = 0.02
    # Secrets: never printed.
    slack_webhook_url: str | None = field(default=None, repr=False)
    discord_webhook_url: str | None = field(default=None, repr=False)
    smtp_password: str | None = field(default=None, repr=False)

    def policy(self, channel: str) -> RetryPolicy:
        """The retry policy of ``channel`` (its override, else the defaults)."""
        found = self.retry.get(channel)
        if found is not None:
            return found
        return RetryPolicy(self.max_attempts, self.backoff_base_s, self.backoff_cap_s)

    @property
    def smtp_recipients(self) -> list[str]:
        """``smtp_to`` split on commas."""
        return [a.strip() for a in self.smtp_to.split(",") if a.strip()]

    def configured(self, channel: str) -> bool:
        """True when ``channel`` has what it needs to send."""
        if channel == "dashboard":
            return True
        if channel == "slack":
            return bool(self.slack_webhook_url)
        if channel == "discord":
            return bool(self.discord_webhook_url)
        if channel == "email":
            return bool(self.smtp_host and self.smtp_from and self.smtp_recipients)
        return False

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> AlertSettings:
        """Build from Falcon's settings (``settings.alerts`` if present), then ``overrides``."""
        section = getattr(settings, "alerts", None)
        secrets = getattr(settings, "secrets", None)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in ("retry", "slack_webhook_url", "discord_webhook_url", "smtp_password"):
                continue
            if section is not None and hasattr(section, f.name):
                values[f.name] = getattr(section, f.name)
        for name in ("slack_webhook_url", "discord_webhook_url", "smtp_password"):
            values[name] = getattr(secrets, name, None) if secrets is not None else None
        values.update({k: v for k, v in overrides.items() if k != "retry"})
        base = cls(**values)
        retry: dict[str, RetryPolicy] = {}
        for channel in REMOTE_CHANNELS:
            # Per-channel overrides: alerts.slack_max_attempts, alerts.email_backoff_cap_s ...
            retry[channel] = RetryPolicy(
                int(getattr(section, f"{channel}_max_attempts", base.max_attempts)),
                float(getattr(section, f"{channel}_backoff_base_s", base.backoff_base_s)),
                float(getattr(section, f"{channel}_backoff_cap_s", base.backoff_cap_s)),
            )
        retry.update(overrides.get("retry", {}))
        return dataclasses.replace(base, retry=retry)
