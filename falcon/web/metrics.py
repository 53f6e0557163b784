"""Prometheus metrics: request counts and latency per endpoint, trading and data gauges.

Trading and data gauges are read from the database at scrape time, so every gunicorn worker (and
every web node) reports the same truth. Request counters live in the worker that served the
request; with several workers set ``PROMETHEUS_MULTIPROC_DIR`` (the gunicorn config does) and
prometheus-client aggregates the workers' files on each scrape.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from typing import TYPE_CHECKING

from flask import Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from falcon.db.models import DataImport, Job, PaperAccount, Position

if TYPE_CHECKING:
    from falcon.web.extensions import Database

_KEY = "falcon.metrics"
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class DatabaseCollector(Collector):
    """Gauges computed from the database on every scrape."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def collect(self) -> Iterator[Metric]:
        """Trading, job and data gauges; nothing when the database is unreachable."""
        positions = GaugeMetricFamily(
            "falcon_open_positions", "Open positions per paper account", labels=["account"]
        )
        equity = GaugeMetricFamily(
            "falcon_account_equity_dollars",
            "Cash plus positions at cost per paper account (marks come with the trader)",
            labels=["account"],
        )
        cash = GaugeMetricFamily(
            "falcon_account_cash_dollars", "Cash per account", labels=["account"]
        )
        halted = GaugeMetricFamily(
            "falcon_account_halted", "1 when trading is halted for the account", labels=["account"]
        )
        jobs = GaugeMetricFamily("falcon_jobs", "Jobs in the queue by status", labels=["status"])
        last_import = GaugeMetricFamily(
            "falcon_data_last_import_timestamp_seconds",
            "When market data was last imported, by kind (Unix time)",
            labels=["kind"],
        )
        with self._sessions() as s:
            held: dict[int, tuple[int, Decimal]] = defaultdict(lambda: (0, Decimal(0)))
            for pos in s.scalars(select(Position).where(Position.qty != 0)):
                count, value = held[pos.account_id]
                held[pos.account_id] = (count + 1, value + pos.qty * pos.avg_cost)
            for account in s.scalars(select(PaperAccount).order_by(PaperAccount.id)):
                count, at_cost = held[account.id]
                positions.add_metric([account.name], count)
                cash.add_metric([account.name], float(account.cash))
                equity.add_metric([account.name], float(account.cash + at_cost))
                halted.add_metric([account.name], 1.0 if account.halted else 0.0)
            for status, count in s.execute(select(Job.status, func.count()).group_by(Job.status)):
                jobs.add_metric([status], count)
            for kind, ts in s.execute(
                select(DataImport.kind, func.max(DataImport.imported_at))
                .where(DataImport.status.in_(("imported", "partial", "unchanged")))
                .group_by(DataImport.kind)
            ):
                if ts is not None:
                    last_import.add_metric([kind], _timestamp(ts))
        yield from (positions, equity, cash, halted, jobs, last_import)


def _timestamp(value: object) -> float:
    # func.max() bypasses the UTCDateTime decorator on SQLite: the value may be naive UTC or text.
    from datetime import UTC, datetime

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    raise TypeError(f"unexpected timestamp {value!r}")


class _AppMetrics:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "falcon_http_requests",
            "HTTP requests by endpoint, method and status",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "falcon_http_request_duration_seconds",
            "HTTP request latency by endpoint",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.database = DatabaseCollector(sessions)


class Metrics:
    """Per-app request metrics and the scrape."""

    def init_app(self, app: Flask, database: Database) -> None:
        """Count every request of ``app``; gauges read through ``database`` at scrape time."""
        app.extensions[_KEY] = _AppMetrics(database.sessions_for(app))
        app.before_request(self._start)
        app.after_request(self._observe)

    @staticmethod
    def _start() -> None:
        g.metrics_start = time.perf_counter()

    @staticmethod
    def _observe(response: Response) -> Response:
        state: _AppMetrics = current_app.extensions[_KEY]
        # The endpoint name, not the path, so that ids in URLs cannot explode the label set.
        endpoint = request.endpoint or "unmatched"
        if endpoint != "live.stream":  # a stream's duration is not a latency
            state.latency.labels(endpoint).observe(time.perf_counter() - g.get("metrics_start", 0))
        state.requests.labels(endpoint, request.method, str(response.status_code)).inc()
        return response

    @staticmethod
    def scrape() -> Response:
        """The Prometheus text exposition of this app (all workers in multiprocess mode)."""
        state: _AppMetrics = current_app.extensions[_KEY]
        registry = CollectorRegistry()
        if os.environ.get(_MULTIPROC_ENV):
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(registry)
        else:
            registry.register(_Forward(state.registry))
        registry.register(state.database)
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


class _Forward(Collector):
    """Expose another registry's metrics inside a scrape registry."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        yield from self._source.collect()
