"""``falcon data sync`` against moto's S3 server on loopback."""

from __future__ import annotations

import gzip
import json
import socket
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner
from moto.server import ThreadedMotoServer
from sqlalchemy.orm import Session, sessionmaker

from falcon.cli import main
from falcon.config import load_settings
from falcon.data.store import Store
from falcon.data.sync import download, object_key, sync
from falcon.db.engine import make_engine, session_factory
from falcon.errors import ConfigError, ExternalServiceError

from .helpers import bar, csv_bytes

BUCKET = "flatfiles"
# 2024-03-27 .. 2024-04-02: Good Friday (03-29) and a weekend in between.
SESSIONS = [date(2024, 3, 27), date(2024, 3, 28), date(2024, 4, 1), date(2024, 4, 2)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("FALCON_S3_ACCESS_KEY_ID", "AKIDTESTSECRETVALUE1")
    monkeypatch.setenv("FALCON_S3_SECRET_ACCESS_KEY", "s3cr3t-never-printed")
    monkeypatch.setenv("FALCON_DATA__S3_ENDPOINT", s3_endpoint)
    monkeypatch.setenv("FALCON_DATA__SYNC_BACKOFF_S", "0")
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x")
    if not _exists(client):
        client.create_bucket(Bucket=BUCKET)
    for obj in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    # The last session is "not published yet": it is not uploaded.
    for day in SESSIONS[:-1]:
        body = gzip.compress(csv_bytes([bar("AAA", day), bar("BBB", day)]))
        client.put_object(Bucket=BUCKET, Key=object_key("us_stocks_sip", "day", day), Body=body)
    return client


def _exists(client: Any) -> bool:
    return any(b["Name"] == BUCKET for b in client.list_buckets().get("Buckets", []))


@pytest.fixture
def sessions_for(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    yield session_factory(engine)
    engine.dispose()


def test_object_keys_follow_massive_layout() -> None:
    assert object_key("us_stocks_sip", "minute", date(2024, 1, 2)) == (
        "us_stocks_sip/minute_aggs_v1/2024/01/2024-01-02.csv.gz")


def test_sync_downloads_trading_days_reports_missing_and_resumes(
    bucket: Any, db_url: str, sessions_for: sessionmaker[Session]
) -> None:
    settings = load_settings({"database_url": db_url})
    seen: list[tuple[date, str]] = []
    report = sync(settings, sessions_for, start=date(2024, 3, 27), end=date(2024, 4, 2),
                  on_progress=lambda d, o: seen.append((d, o)))
    assert report.planned == SESSIONS  # Good Friday and the weekend never asked for
    assert report.downloaded == SESSIONS[:-1]
    assert report.missing == [SESSIONS[-1]]
    assert seen[-1] == (SESSIONS[-1], "missing")
    assert report.imports is not None
    assert [f.status for f in report.imports.files] == ["imported"] * 3
    assert report.imports.files[0].source.startswith("s3://flatfiles/us_stocks_sip/day_aggs_v1/")
    store = Store.of(settings)
    assert store.dates("day") == SESSIONS[:-1]
    assert list(store.incoming_dir("day").iterdir()) == []  # imported files are removed
    # Run again: nothing is downloaded twice; the missing day is asked for again.
    again = sync(settings, sessions_for, start=date(2024, 3, 27), end=date(2024, 4, 2))
    assert again.skipped == SESSIONS[:-1] and again.downloaded == [] and again.missing == [
        SESSIONS[-1]]
    forced = sync(settings, sessions_for, start=date(2024, 3, 27), end=date(2024, 3, 27),
                  force=True)
    assert forced.imports is not None and forced.imports.files[0].status == "unchanged"


def test_a_complete_download_from_an_interrupted_run_is_reused(
    bucket: Any, db_url: str, sessions_for: sessionmaker[Session]
) -> None:
    settings = load_settings({"database_url": db_url})
    incoming = Store.of(settings).incoming_dir("day")
    incoming.mkdir(parents=True)
    (incoming / "2024-03-27.csv.gz.part").write_bytes(b"half")  # a crash mid-download
    done = incoming / "2024-03-28.csv.gz"
    done.write_bytes(gzip.compress(csv_bytes([bar("ZZZ", date(2024, 3, 28))])))
    sync(settings, sessions_for, start=date(2024, 3, 27), end=date(2024, 3, 28))
    from falcon.data.reader import read_bars
    got = read_bars(settings, start=date(2024, 3, 28), end=date(2024, 3, 28)).collect()
    assert got["ticker"].to_list() == ["ZZZ"]
    assert sorted(p.name for p in incoming.iterdir()) == []


def test_transient_errors_are_retried_with_exponential_backoff(tmp_path: Path) -> None:
    from botocore.exceptions import EndpointConnectionError

    class Flaky:
        calls = 0

        def download_file(self, bucket: str, key: str, filename: str) -> None:
            Flaky.calls += 1
            if Flaky.calls < 3:
                raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
            Path(filename).write_bytes(b"ok")

    sleeps: list[float] = []
    dest = tmp_path / "f.csv.gz"
    assert download(Flaky(), "b", "k", dest, retries=5, backoff_s=0.5, sleep=sleeps.append)
    assert sleeps == [0.5, 1.0] and dest.read_bytes() == b"ok"
    Flaky.calls = -10
    with pytest.raises(ExternalServiceError, match="after 3 attempt"):
        download(Flaky(), "b", "k", dest, retries=2, backoff_s=0.1, sleep=sleeps.append)


def test_unreachable_endpoint_fails_after_retries(
    db_url: str, sessions_for: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALCON_S3_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("FALCON_S3_SECRET_ACCESS_KEY", "s")
    settings = load_settings({"database_url": db_url, "data.s3_endpoint":
                              f"http://127.0.0.1:{_free_port()}", "data.sync_retries": 1,
                              "data.sync_backoff_s": 0})
    with pytest.raises(ExternalServiceError, match="after 2 attempt"):
        sync(settings, sessions_for, start=date(2024, 3, 27), end=date(2024, 3, 27))


def test_missing_credentials_are_a_config_error(db_url: str,
                                                sessions_for: sessionmaker[Session]) -> None:
    with pytest.raises(ConfigError, match="FALCON_S3_ACCESS_KEY_ID"):
        sync(load_settings({"database_url": db_url}), sessions_for, start=date(2024, 3, 27),
             end=date(2024, 3, 27))


def test_cli_sync_never_prints_credentials(bucket: Any, db_url: str, runner: CliRunner) -> None:
    result = runner.invoke(main, ["--database-url", db_url, "data", "sync", "--start",
                                  "2024-03-27", "--end", "2024-04-02"])
    assert result.exit_code == 0, result.output
    assert "2024-04-02: not in the bucket" in result.output
    assert "3 downloaded, 1 missing" in result.output
    assert "AKIDTESTSECRETVALUE1" not in result.output and "s3cr3t" not in result.output
    doc = json.loads(runner.invoke(main, ["--database-url", db_url, "data", "sync", "--start",
                                          "2024-03-27", "--end", "2024-04-02", "--json"]).output)
    assert len(doc["skipped"]) == 3


def test_sync_downloads_again_a_session_whose_file_was_damaged(
    bucket: Any, db_url: str, sessions_for: sessionmaker[Session]
) -> None:
    settings = load_settings({"database_url": db_url})
    sync(settings, sessions_for, start=SESSIONS[0], end=SESSIONS[0])
    sync(settings, sessions_for, start=SESSIONS[1], end=SESSIONS[1])
    store = Store.of(settings)
    damaged = store.file_of("day", SESSIONS[0])
    assert damaged == store.partition_path("day", SESSIONS[0])
    damaged.write_bytes(b"")  # what a power loss without data.fsync can leave
    again = sync(settings, sessions_for, start=SESSIONS[0], end=SESSIONS[1])
    assert again.skipped == [SESSIONS[1]] and again.downloaded == [SESSIONS[0]]
    assert again.imports is not None and again.imports.files[0].status == "imported"
    assert store.readable_dates("day", SESSIONS[:2]) == set(SESSIONS[:2])
