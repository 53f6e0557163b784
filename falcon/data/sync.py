"""Downloading Massive flat files from S3 and importing them.

``sync(settings, sessions, start=..., end=...)`` walks the NYSE sessions of the range (weekends and
holidays are never asked for), skips sessions the store already has from an earlier import, and
downloads the rest, each to ``incoming/<kind>/<date>.csv.gz.part`` and renamed only when complete,
so an interrupted sync leaves no file that looks finished. Transient failures (connection errors,
timeouts, 5xx, throttling) are retried with exponential backoff (``data.sync_backoff_s`` doubled
each time, ``data.sync_retries`` times); a session missing from the bucket (not published yet) is
reported, not fatal; refused credentials stop the sync at once. Downloaded files then go through
:func:`falcon.data.importer.import_files` like any other, and are removed once imported.

Credentials come only from the environment (``FALCON_S3_ACCESS_KEY_ID``,
``FALCON_S3_SECRET_ACCESS_KEY``) and never appear in a message.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from falcon import calendar
from falcon.config import Settings
from falcon.data.importer import OK_STATUSES, ImportReport, import_files
from falcon.data.store import Store
from falcon.db.models import DataImport
from falcon.errors import ConfigError, DataError, ExternalServiceError

_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
_DENIED_CODES = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                 "InvalidToken", "ExpiredToken"}


@dataclass
class SyncReport:
    """What a sync did, per session date."""

    kind: str
    planned: list[date] = field(default_factory=list)
    skipped: list[date] = field(default_factory=list)
    downloaded: list[date] = field(default_factory=list)
    missing: list[date] = field(default_factory=list)
    imports: ImportReport | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        files = [] if self.imports is None else [f.as_dict() for f in self.imports.files]
        return {
            "kind": self.kind,
            "planned": len(self.planned),
            "skipped": self.skipped,
            "downloaded": self.downloaded,
            "missing": self.missing,
            "files": files,
        }


def object_key(prefix: str, kind: str, day: date) -> str:
    """The flat file's key: ``us_stocks_sip/day_aggs_v1/2024/01/2024-01-02.csv.gz``."""
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    return f"{base}{kind}_aggs_v1/{day:%Y}/{day:%m}/{day:%Y-%m-%d}.csv.gz"


def make_client(settings: Settings) -> Any:
    """A boto3 S3 client for the configured endpoint (our own retries, not botocore's)."""
    key_id = settings.secrets.s3_access_key_id
    secret = settings.secrets.s3_secret_access_key
    if not key_id or not secret:
        raise ConfigError(
            "S3 credentials are not set: export FALCON_S3_ACCESS_KEY_ID and "
            "FALCON_S3_SECRET_ACCESS_KEY (on a node: /etc/falcon/secrets.env)"
        )
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.data.s3_endpoint or None,
        region_name=settings.data.s3_region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(
            signature_version="s3v4",
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            s3={"addressing_style": "path"},
        ),
    )


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _transient(exc: Exception) -> bool:
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    if isinstance(exc, ConnectionClosedError | ConnectTimeoutError | EndpointConnectionError
                  | ReadTimeoutError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, ClientError):
        code = _error_code(exc)
        status = (getattr(exc, "response", None) or {}).get("ResponseMetadata", {}).get(
            "HTTPStatusCode", 0
        )
        return code in {"SlowDown", "Throttling", "RequestTimeout", "InternalError",
                        "ServiceUnavailable"} or int(status or 0) >= 500
    return False


def download(
    client: Any,
    bucket: str,
    key: str,
    dest: Path,
    *,
    retries: int,
    backoff_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Download ``key`` to ``dest`` (via ``dest.part``); False when the object does not exist."""
    from botocore.exceptions import BotoCoreError, ClientError

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        try:
            client.download_file(bucket, key, str(part))
            os.replace(part, dest)
            return True
        except (ClientError, BotoCoreError, OSError) as exc:
            with contextlib.suppress(OSError):
                part.unlink()
            code = _error_code(exc)
            if code in _MISSING_CODES:
                return False
            if code in _DENIED_CODES:
                raise ExternalServiceError(
                    f"S3 refused the credentials for s3://{bucket}/{key} ({code})"
                ) from None
            if not _transient(exc) or attempt >= retries:
                reason = code or type(exc).__name__
                raise ExternalServiceError(
                    f"download of s3://{bucket}/{key} failed after {attempt + 1} attempt(s) "
                    f"({reason})"
                ) from None
            sleep(backoff_s * (2**attempt))
            attempt += 1


def imported_dates(sessions: sessionmaker[Session], kind: str, start: date, end: date) -> set[date]:
    """Sessions of ``kind`` with a successful import recorded between ``start`` and ``end``."""
    with sessions() as session:
        rows = session.scalars(
            select(DataImport.trade_date).where(
                DataImport.kind == kind, DataImport.status.in_(OK_STATUSES),
                DataImport.trade_date >= start, DataImport.trade_date <= end,
            )
        ).all()
    return {d for d in rows if d is not None}


def sync(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    start: date,
    end: date,
    kind: str = "day",
    force: bool = False,
    client: Any = None,
    on_progress: Callable[[date, str], None] | None = None,
    on_planned: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SyncReport:
    """Download and import the flat files of ``kind`` for the sessions ``start..end``.

    ``force`` downloads sessions the store already has (their checksum then decides whether
    anything changes). ``on_planned(n)`` is told how many downloads lie ahead and
    ``on_progress(day, outcome)`` is called after each. Returns a :class:`SyncReport`; rejected
    files are in ``report.imports`` (the caller decides whether that is an error).
    """
    if kind not in ("day", "minute"):
        raise DataError(f"unknown bar kind {kind!r} (use day or minute)")
    if end < start:
        raise DataError(f"--end {end} is before --start {start}")
    s3 = client if client is not None else make_client(settings)
    store = Store.of(settings)
    report = SyncReport(kind=kind, planned=calendar.trading_days(start, end))
    done: set[date] = set()
    if not force and report.planned:
        # Recorded and readable: a session whose file a power loss left empty or torn (without
        # data.fsync) is downloaded and imported again.
        done = store.readable_dates(kind, imported_dates(sessions, kind, start, end))
    todo = [d for d in report.planned if d not in done]
    report.skipped = [d for d in report.planned if d in done]
    if on_planned is not None:
        on_planned(len(todo))
    bucket, incoming = settings.data.s3_bucket, store.incoming_dir(kind)
    files: list[Path] = []
    labels: dict[Path, str] = {}
    try:
        for day in todo:
            key = object_key(settings.data.s3_prefix, kind, day)
            dest = incoming / f"{day:%Y-%m-%d}.csv.gz"
            # A complete file from an interrupted run (renamed only after its download finished).
            ok = dest.exists() or download(
                s3, bucket, key, dest, retries=settings.data.sync_retries,
                backoff_s=settings.data.sync_backoff_s, sleep=sleep,
            )
            if ok:
                report.downloaded.append(day)
                files.append(dest)
                labels[dest] = f"s3://{bucket}/{key}"
            else:
                report.missing.append(day)
            if on_progress is not None:
                on_progress(day, "downloaded" if ok else "missing")
    finally:
        # Whatever arrived is imported, even when a later download failed for good.
        if files:
            report.imports = import_files(
                files, store=store, sessions=sessions, kind=kind, labels=labels,
                raise_on_reject=False,
            )
            for result, path in zip(report.imports.files, files, strict=True):
                if result.status != "rejected":
                    path.unlink(missing_ok=True)
    return report
