"""Run the alert delivery service in a child process: ``python -m tests.alerts.deliver_proc``.

Arguments: DB_URL WEBHOOK_URL LEASE_S TIMEOUT_S. Settings come from here rather than the
environment because falcon.config has no [alerts] section yet.
"""

from __future__ import annotations

import logging
import sys

from falcon.alerts.service import run_delivery_service
from falcon.alerts.settings import AlertSettings
from falcon.db.engine import make_engine


def main() -> int:
    db_url, url, lease, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    logging.basicConfig(level=logging.INFO)
    settings = AlertSettings(slack_webhook_url=url, claim_lease_s=lease, http_timeout_s=timeout,
                             poll_interval_s=0.05, backoff_base_s=0.1, backoff_cap_s=0.2)
    return run_delivery_service(make_engine(db_url), settings, name="test-alerts")


if __name__ == "__main__":
    raise SystemExit(main())
