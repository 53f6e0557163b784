"""Reference data from CSV files a user supplies: see :mod:`falcon.data.reference`.

There is one loader of reference CSVs, :func:`falcon.data.reference.load_csv` (the data layer,
so that ``falcon data sample`` can use it too); this name stays for callers of the screener's
reference package.
"""

from __future__ import annotations

from falcon.data.reference import load_csv

__all__ = ["load_csv"]
