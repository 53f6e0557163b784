"""``falcon up``: the single-node main job, as a newcomer runs it, end to end."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _wait_for(proc: subprocess.Popen[str], pattern: str, timeout: float) -> re.Match[str]:
    """Read the process's stderr until ``pattern`` shows up (bounded in time)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        found = re.search(pattern, "".join(seen))
        if found:
            return found
    raise AssertionError(f"{pattern!r} not seen; output:\n{''.join(seen)}")


@pytest.mark.slow
def test_up_prepares_an_empty_home_and_serves_the_dashboard(tmp_path: Path) -> None:
    home = tmp_path / "falcon-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FALCON_")}
    env["FALCON_CONFIG"] = str(tmp_path / "none.toml")
    (tmp_path / "none.toml").write_text("")
    proc = subprocess.Popen(
        [sys.executable, "-m", "falcon", "--home", str(home), "up", "--port", "0", "--no-replay"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=env,
    )
    try:
        password = _wait_for(proc, r"username admin, password (\S+)", 120).group(1)
        port = int(_wait_for(proc, r"dashboard on http://127\.0\.0\.1:(\d+)/", 120).group(1))
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, follow_redirects=False, timeout=30) as client:
            health = client.get("/healthz")
            assert health.status_code == 200, health.text
            assert health.json()["ok"] is True
            assert client.get("/").status_code == 302  # login first
            form = client.get("/login").text
            token = re.search(r'name="csrf_token" value="([^"]+)"', form)
            assert token is not None
            done = client.post("/login", data={"username": "admin", "password": password,
                                               "csrf_token": token.group(1)})
            assert done.status_code == 302, done.text
            overview = client.get("/")
            assert overview.status_code == 200
            screens = client.get("/screener/")
            assert screens.status_code == 200
            assert "trend_pullback" in screens.text  # the first run screened the sample
        assert (home / "falcon.db").exists()
        assert any((home / "market_data" / "day").rglob("*.parquet"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
