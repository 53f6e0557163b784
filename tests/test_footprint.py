"""What the long-running services import: nothing heavy that they do not use.

On a Raspberry Pi every process counts: pandas with exchange-calendars is about 90 MB, pyarrow
about 40 MB. The screener, the trader and the dashboard read Parquet through polars and the
calendar from its cache; only flat-file parsing (pyarrow) and building the calendar (pandas)
need them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_HEAVY = ("pandas", "pyarrow", "exchange_calendars", "talib")


def test_services_do_not_import_pandas_or_pyarrow(tmp_path: Path) -> None:
    env = {**os.environ, "FALCON_HOME": str(tmp_path)}
    # The first process builds the calendar (pandas) and caches it; the services come after.
    subprocess.run([sys.executable, "-c", "from falcon import calendar as c; c.bounds()"],
                   env=env, check=True)
    probe = (
        "import json, sys\n"
        "import falcon.screener.engine, falcon.paper.trader, falcon.alerts.engine, falcon.web\n"
        "from falcon import calendar as c\n"
        "from datetime import date\n"
        "c.trading_days(date(2024, 1, 1), date(2024, 12, 31))\n"
        f"print(json.dumps([m for m in {_HEAVY!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          text=True, check=True)
    assert json.loads(done.stdout) == []
