"""Handlers that ship with the queue: for health checks, demos and tests of the machinery."""

from __future__ import annotations

import math
import time
from typing import Any

from falcon.errors import ValidationError
from falcon.jobs.registry import Progress

_MAX_SLEEP_S = 24 * 3600.0
_STEP_S = 0.1  # how often a sleeping job reports progress (and so notices cancellation)


def noop(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Do nothing; answer which worker ran the job (a health check of the whole path)."""
    return {"worker": progress.worker_id, "job": progress.job_id, "attempt": progress.attempt}


def sleep(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Sleep ``payload["seconds"]`` (default 1) while reporting progress; echo ``tag`` back.

    Example payload: ``{"seconds": 2.5, "tag": "smoke"}``.
    """
    try:
        seconds = float(payload.get("seconds", 1.0))
    except (TypeError, ValueError):
        raise ValidationError(
            f"sleep: seconds must be a number, got {payload.get('seconds')!r}"
        ) from None
    if not math.isfinite(seconds) or not 0 <= seconds <= _MAX_SLEEP_S:
        raise ValidationError(f"sleep: seconds must be in 0..{_MAX_SLEEP_S:.0f}, got {seconds}")
    start = time.monotonic()
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= seconds:
            break
        progress(elapsed / seconds if seconds else 1.0, f"slept {elapsed:.1f}s of {seconds:g}s")
        time.sleep(min(_STEP_S, seconds - elapsed))
    return {
        "worker": progress.worker_id,
        "job": progress.job_id,
        "attempt": progress.attempt,
        "tag": payload.get("tag"),
    }
