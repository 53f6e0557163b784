"""The one exception family.

Everything Falcon raises on purpose is a :class:`FalconError`. The CLI catches the family once,
prints ``error: <message>`` on one line and exits with the class's ``exit_code``; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations


class FalconError(Exception):
    """Base of every error Falcon raises on purpose."""

    exit_code: int = 1


class ConfigError(FalconError):
    """A setting is missing or invalid; the message names the key."""

    exit_code = 78  # EX_CONFIG


class DatabaseError(FalconError):
    """The database cannot be reached or is not at the expected migration."""

    exit_code = 69  # EX_UNAVAILABLE


class DataError(FalconError):
    """Market data is missing, malformed or rejected."""

    exit_code = 65  # EX_DATAERR


class ImportRejected(DataError):
    """At least one input file was rejected whole during an import."""


class NotFound(FalconError):
    """A named thing (run, strategy, profile, user ...) does not exist."""

    exit_code = 66  # EX_NOINPUT


class ValidationError(FalconError):
    """A document (strategy spec, profile, form) failed validation."""

    exit_code = 65

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class ExternalServiceError(FalconError):
    """An outside service (S3, the Massive API, an LLM, a webhook) failed."""

    exit_code = 69


class RiskRejected(FalconError):
    """An order was refused by a risk rule."""

    exit_code = 1
