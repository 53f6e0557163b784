"""Importing flat files into the store, recording each in the ``data_imports`` table.

For each file: read it, hash it (sha256), and

- skip it as ``unchanged`` when the same bytes are what the store already holds for its dates
  (the newest successful import of each of those dates has this checksum, and the store's file
  of each is whole: one that a power loss left empty or torn is written again);
- reject it whole on a structural problem (:class:`~falcon.data.flatfile.FileRejected`), or when
  no row survives the checks;
- otherwise replace the store's bars of each date in the file with the file's good rows, and
  write the bad ones, with their reason, to ``rejects/<kind>/<file>.csv``.

A file normally holds one session (Massive's layout); a file with several sessions (the bundled
sample) is split by each bar's New York date. Good rows are gathered over several files and written
together: one day file alone becomes one small session file, a backlog of a month's day files one
compacted month file (see :mod:`falcon.data.store`). The file is read once (its bytes are hashed
and parsed from memory), and the database rows of a batch are written in one statement and
committed after its Parquet files are in place: a crash in between leaves bars without a record,
which the next import simply writes again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl
from sqlalchemy import Table, bindparam, text
from sqlalchemy.orm import Session, sessionmaker

from falcon.config import Settings
from falcon.data.flatfile import FileRejected, Kind, date_from_path, kind_from_path, parse_file
from falcon.data.store import Store
from falcon.db.engine import transaction
from falcon.db.models import DataImport
from falcon.db.types import utcnow
from falcon.errors import DataError, ImportRejected

OK_STATUSES = ("imported", "partial")
_BATCH_ROWS = 4_000_000
# Statements on the table, not the ORM: no unit of work per record, and a short `data import`
# does not pay for configuring every mapper of the application (~80 ms) on its first query.
# Textual SQL, typed by the table's columns where a value is converted (dates, UTC times): a Core
# select or insert is compiled once per engine, ~1 ms each, a tenth of a day file's import in a
# fresh `falcon data import`. The status lists are OK_STATUSES.
_T: Table = DataImport.__table__  # type: ignore[assignment]
_INSERT = text(
    "INSERT INTO data_imports (kind, trade_date, source, sha256, status, rows_total, rows_kept,"
    " rows_rejected, message, imported_at) VALUES (:kind, :trade_date, :source, :sha256, :status,"
    " :rows_total, :rows_kept, :rows_rejected, :message, :imported_at)"
).bindparams(*(bindparam(name, type_=_T.c[name].type) for name in ("trade_date", "imported_at")))
_SAME_SHA = text(
    "SELECT id, trade_date, rows_total, rows_kept, rows_rejected FROM data_imports"
    " WHERE kind = :kind AND sha256 = :sha AND status IN ('imported', 'partial')"
).columns(_T.c.id, _T.c.trade_date, _T.c.rows_total, _T.c.rows_kept, _T.c.rows_rejected)
_LATEST = text(
    "SELECT id, trade_date, sha256 FROM data_imports WHERE kind = :kind"
    " AND status IN ('imported', 'partial') AND trade_date >= :lo AND trade_date <= :hi"
).bindparams(bindparam("lo", type_=_T.c.trade_date.type),
             bindparam("hi", type_=_T.c.trade_date.type)
).columns(_T.c.id, _T.c.trade_date, _T.c.sha256)


@dataclass
class FileResult:
    """What happened to one file."""

    source: str
    kind: str | None
    status: str  # imported | partial | rejected | unchanged
    sha256: str = ""
    rows_total: int = 0
    rows_kept: int = 0
    rows_rejected: int = 0
    message: str = ""
    dates: list[date] = field(default_factory=list)
    rejects_path: Path | None = None

    @property
    def name(self) -> str:
        """The file's name, for messages."""
        return Path(self.source).name or self.source

    def line(self) -> str:
        """The one-line summary printed per file."""
        span = ""
        if self.dates:
            first, last = self.dates[0], self.dates[-1]
            span = f" {self.kind} {first}" if first == last else f" {self.kind} {first}..{last}"
        if self.status == "rejected":
            return f"{self.name}: rejected: {self.message}"
        if self.status == "unchanged":
            return f"{self.name}: unchanged ({self.message})"
        text = f"{self.name}: {self.status} {self.rows_kept:,} rows{span}"
        if self.rows_rejected:
            text += f", quarantined {self.rows_rejected:,} ({self.message})"
            if self.rejects_path is not None:
                text += f" -> {self.rejects_path}"
        return text

    def as_dict(self) -> dict[str, object]:
        """JSON-ready fields."""
        return {
            "source": self.source,
            "kind": self.kind,
            "status": self.status,
            "sha256": self.sha256,
            "rows_total": self.rows_total,
            "rows_kept": self.rows_kept,
            "rows_rejected": self.rows_rejected,
            "message": self.message,
            "first_date": self.dates[0] if self.dates else None,
            "last_date": self.dates[-1] if self.dates else None,
            "rejects": str(self.rejects_path) if self.rejects_path else None,
        }


@dataclass
class ImportReport:
    """The results of one :func:`import_files` call, in input order."""

    files: list[FileResult]

    @property
    def rejected(self) -> list[FileResult]:
        """Files refused whole (or with nothing good left)."""
        return [f for f in self.files if f.status == "rejected"]

    def count(self, status: str) -> int:
        """How many files ended with ``status``."""
        return sum(1 for f in self.files if f.status == status)


@dataclass
class _Pending:
    result: FileResult
    kept: pl.DataFrame
    rejected: pl.DataFrame
    stem: str
    per_date: list[tuple[date | None, int, int]]  # (date, kept, rejected)


def _reasons(rejected: pl.DataFrame) -> str:
    counts = rejected.group_by("reason").len().sort(["len", "reason"], descending=[True, False])
    return ", ".join(f"{r} {n:,}" for r, n in counts.iter_rows())


def _per_date(kept: pl.DataFrame, rejected: pl.DataFrame) -> list[tuple[date | None, int, int]]:
    k = kept.group_by("date").len().rename({"len": "kept"})
    r = rejected.group_by("date").len().rename({"len": "rejected"})
    both = k.join(r, on="date", how="full", coalesce=True, nulls_equal=True).fill_null(0)
    return [(d, int(nk), int(nr)) for d, nk, nr in both.sort("date", nulls_last=True).iter_rows()]


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".csv"):
        name = name.removesuffix(suffix)
    return name or "file"


class _Importer:
    def __init__(
        self,
        store: Store,
        sessions: sessionmaker[Session],
        on_file: Callable[[FileResult], None] | None,
        batch_rows: int,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.on_file = on_file
        self.batch_rows = batch_rows
        self.pending: dict[str, list[_Pending]] = {}
        self.pending_dates: dict[str, set[date]] = {}
        self.pending_rows = 0

    def unchanged(self, session: Session, kind: str, sha: str) -> FileResult | None:
        prior = session.execute(_SAME_SHA, {"kind": kind, "sha": sha}).all()
        dates = sorted({row.trade_date for row in prior if row.trade_date is not None})
        if not dates:
            return None
        latest: dict[date, tuple[int, str]] = {}
        for row_id, day, row_sha in session.execute(
            _LATEST, {"kind": kind, "lo": dates[0], "hi": dates[-1]}
        ).all():
            if day is None:
                continue
            if day not in latest or row_id > latest[day][0]:
                latest[day] = (row_id, row_sha)
        if not all(latest[d][1] == sha for d in dates):
            return None
        # The records say the store holds this file; the files must say so too (a power loss
        # without data.fsync can leave a recorded date's file empty or torn): re-import if not.
        if self.store.readable_dates(kind, dates) != set(dates):
            return None
        first_id = min(row.id for row in prior)
        return FileResult(
            source="", kind=kind, status="unchanged", sha256=sha,
            rows_total=sum(row.rows_total for row in prior if row.trade_date is not None),
            rows_kept=sum(row.rows_kept for row in prior if row.trade_date is not None),
            rows_rejected=sum(row.rows_rejected for row in prior if row.trade_date is not None),
            message=f"same sha256 as import #{first_id}", dates=dates,
        )

    def one(self, path: Path, kind_hint: str | None, label: str) -> FileResult:
        kind = kind_from_path(path) or kind_hint
        if kind not in ("day", "minute"):
            return self._record_rejected(
                FileResult(label, None, "rejected",
                           message="cannot tell day or minute bars from the path: pass --kind")
            )
        try:
            raw = path.read_bytes()
        except OSError as exc:
            return self._record_rejected(
                FileResult(label, kind, "rejected", message=f"cannot read ({exc.strerror})")
            )
        sha = hashlib.sha256(raw).hexdigest()
        file_date = date_from_path(path)
        with self.sessions() as session:
            same = self.unchanged(session, kind, sha)
        if same is not None:
            same.source = label
            with transaction(self.sessions) as session:
                session.execute(_INSERT, [_record(
                    kind=kind, trade_date=same.dates[0] if len(same.dates) == 1 else None,
                    source=label, sha256=sha, status="unchanged", rows_total=same.rows_total,
                    rows_kept=same.rows_kept, rows_rejected=same.rows_rejected,
                    message=same.message,
                )])
            return same
        result = FileResult(label, kind, "imported", sha256=sha,
                            dates=[file_date] if file_date else [])
        try:
            parsed = parse_file(raw, name=path.name, file_date=file_date)
        except FileRejected as exc:
            result.status, result.message = "rejected", str(exc)
            return self._record_rejected(result)
        result.rows_total = parsed.rows_total
        result.rows_kept = parsed.kept.height
        result.rows_rejected = parsed.rejected.height
        per_date: list[tuple[date | None, int, int]]
        if file_date is not None:  # one session per file: no need to group by date
            kept_dates = [file_date] if parsed.kept.height else []
            per_date = [(file_date, parsed.kept.height, parsed.rejected.height)]
        else:
            kept_dates = parsed.kept.get_column("date").unique().sort().to_list()
            per_date = _per_date(parsed.kept, parsed.rejected)
        result.dates = kept_dates or result.dates
        if result.rows_rejected:
            result.message = _reasons(parsed.rejected)
        stem = _stem(path)
        if parsed.kept.is_empty():
            result.status = "rejected"
            result.message = (
                f"no valid rows ({result.rows_rejected:,} quarantined: {result.message})"
                if result.rows_rejected else "no rows"
            )
            result.rejects_path = self.store.write_rejects(kind, stem, parsed.rejected)
            return self._record_rejected(result)
        if result.rows_rejected:
            result.status = "partial"
        item = _Pending(result, parsed.kept, parsed.rejected, stem, per_date)
        if self.pending_dates.get(kind, set()) & set(kept_dates):
            self.flush()  # the same date twice in a batch: the later file must win
        self.pending.setdefault(kind, []).append(item)
        self.pending_dates.setdefault(kind, set()).update(kept_dates)
        self.pending_rows += parsed.kept.height
        if self.pending_rows >= self.batch_rows:
            self.flush()
        return result

    def _record_rejected(self, result: FileResult) -> FileResult:
        with transaction(self.sessions) as session:
            session.execute(_INSERT, [_record(
                kind=result.kind or "unknown",
                trade_date=result.dates[0] if len(result.dates) == 1 else None,
                source=result.source, sha256=result.sha256, status="rejected",
                rows_total=result.rows_total, rows_kept=0,
                rows_rejected=result.rows_rejected, message=result.message[:2000],
            )])
        self._notify(result)
        return result

    def _notify(self, result: FileResult) -> None:
        if self.on_file is not None:
            self.on_file(result)

    def flush(self) -> None:
        for kind, items in self.pending.items():
            bars = pl.concat([i.kept for i in items], how="vertical")
            self.store.replace_dates(kind, bars, presorted=True)  # parse_file sorts
            for item in items:
                item.result.rejects_path = self.store.write_rejects(kind, item.stem, item.rejected)
        records = [row for kind, items in self.pending.items() for item in items
                   for row in self._rows(kind, item)]
        if records:
            with transaction(self.sessions) as session:
                session.execute(_INSERT, records)
        for items in self.pending.values():
            for item in items:
                self._notify(item.result)
        self.pending.clear()
        self.pending_dates.clear()
        self.pending_rows = 0

    @staticmethod
    def _rows(kind: str, item: _Pending) -> list[dict[str, object]]:
        r = item.result
        rows = []
        for day, kept, rejected in item.per_date:
            status = "imported" if not rejected else ("partial" if kept else "rejected")
            rows.append(_record(
                kind=kind, trade_date=day, source=r.source, sha256=r.sha256, status=status,
                rows_total=kept + rejected, rows_kept=kept, rows_rejected=rejected,
                message=r.message[:2000] or None,
            ))
        return rows


def _record(**values: object) -> dict[str, object]:
    """A ``data_imports`` row with every column set (one executemany needs the same keys)."""
    return {"message": None, **values, "imported_at": utcnow()}


def import_files(
    paths: Sequence[Path | str],
    *,
    store: Settings | Store,
    sessions: sessionmaker[Session],
    kind: Kind | str | None = None,
    labels: dict[Path, str] | None = None,
    on_file: Callable[[FileResult], None] | None = None,
    raise_on_reject: bool = True,
    batch_rows: int = _BATCH_ROWS,
) -> ImportReport:
    """Import flat files (``.csv.gz`` or ``.csv``) into the store, recording each one.

    ``kind`` is used when a path does not say ``day_aggs``/``minute_aggs``. ``labels`` names
    sources in the records (a sync passes the S3 key). ``on_file`` is called with each result as
    it is settled (for progress bars). Every file is processed; then, with ``raise_on_reject``,
    :class:`~falcon.errors.ImportRejected` is raised when any file was rejected (its ``report``
    attribute holds the results).
    """
    if kind is not None and kind not in ("day", "minute"):
        raise DataError(f"unknown bar kind {kind!r} (use day or minute)")
    the_store = Store.of(store)
    importer = _Importer(the_store, sessions, on_file, batch_rows)
    results: list[FileResult] = []
    with the_store.lock():
        for raw_path in paths:
            path = Path(raw_path)
            label = (labels or {}).get(path, str(path))
            result = importer.one(path, kind, label)
            if result.status == "unchanged":
                importer._notify(result)
            results.append(result)
        importer.flush()
    report = ImportReport(results)
    if raise_on_reject and report.rejected:
        names = ", ".join(f.name for f in report.rejected[:3])
        more = "" if len(report.rejected) <= 3 else f" and {len(report.rejected) - 3} more"
        exc = ImportRejected(
            f"{len(report.rejected)} of {len(results)} files rejected: {names}{more}"
        )
        exc.report = report  # type: ignore[attr-defined]
        raise exc
    return report


def expand_paths(paths: Iterable[Path | str]) -> list[Path]:
    """Files named directly, plus every ``*.csv``/``*.csv.gz`` under named folders (sorted)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted(
                p for p in path.rglob("*") if p.is_file() and p.name.endswith((".csv", ".csv.gz"))
            ))
        else:
            out.append(path)
    return out
