"""The three-node test: `deploy/deploy.sh setup all` against db, compute and web nodes booted with
systemd-nspawn on this machine (tests/cluster/lab.py), checked from outside.

Needs root, systemd-nspawn and mmdebstrap (installed with apt when missing); skipped with the
reason otherwise. The root file system is built once and cached in /var/cache/falcon-lab.
Run alone:   .venv/bin/python -m pytest -m cluster tests/cluster -v
Output of every deploy.sh run: test-artifacts/cluster/*.log
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import socket
import ssl
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path

import pytest

from .lab import ADMIN_USER, ARCH, FOREIGN, Lab, LabUnavailable, build_image, log, preflight

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "cluster"
DB_PASSWORD = "pw-" + secrets.token_urlsafe(18)
WEB_SECRET = secrets.token_hex(32)
USER_PASSWORD = "pw-" + secrets.token_urlsafe(12)
DAEMONS = ("scheduler", "trader", "worker", "alerts")
HOSTS = ("falcon-db", "falcon-compute", "falcon-web")  # inventory names (ansible_host: address)


@dataclass
class Cluster:
    lab: Lab
    env: dict[str, str]
    setup_seconds: float = 0.0
    setup_output: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    def deploy(self, *args: str, name: str, timeout: float = 900,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        res = subprocess.run([str(REPO / "deploy/deploy.sh"), *args], env=self.env, text=True,
                             capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
                             check=False)
        self.timings[name] = time.monotonic() - started
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"{name}.log").write_text(res.stdout + "\n--- stderr ---\n" + res.stderr)
        log(f"deploy.sh {' '.join(args)}: rc {res.returncode} in {self.timings[name]:.0f} s")
        if check:
            assert res.returncode == 0, (
                f"deploy.sh {' '.join(args)} failed ({res.returncode}); "
                f"see {ARTIFACTS / (name + '.log')}\n{res.stdout[-4000:]}\n{res.stderr[-2000:]}")
        return res

    def ssh(self, node: str, command: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.lab.ssh(node, command, **kw)  # type: ignore[arg-type]


def _write_inventory(lab: Lab) -> tuple[Path, Path]:
    inv_dir = lab.run_dir / "inventory"
    inv_dir.mkdir(parents=True, exist_ok=True)
    ssh_args = (f"-o UserKnownHostsFile={lab.known_hosts} -o StrictHostKeyChecking=yes "
                "-o ConnectTimeout=10")
    inventory = {
        "all": {
            "vars": {
                "ansible_user": ADMIN_USER, "ansible_become": True,
                "ansible_ssh_private_key_file": str(lab.ssh_key),
                "ansible_ssh_common_args": ssh_args,
                # the nodes are offline: the image's apt lists are all there is
                "common_apt_cache_valid_time": 315360000,
            },
            "children": {
                name: {"hosts": {f"falcon-{name}": {"ansible_host": node.addr,
                                        **({"nginx_server_name": "falcon.lab.test"}
                                           if name == "web" else {})}}}
                for name, node in lab.nodes.items()
            },
        }
    }
    hosts = inv_dir / "hosts.yml"
    hosts.write_text(json.dumps(inventory, indent=2))  # JSON is YAML
    secrets_file = lab.run_dir / "secrets.env"
    db = lab.nodes["db"].addr
    secrets_file.write_text(
        "# written by tests/cluster for the lab\n"
        f"FALCON_DATABASE_URL=postgresql://falcon:{DB_PASSWORD}@{db}:5432/falcon?sslmode=require\n"
        f"FALCON_WEB_SECRET_KEY={WEB_SECRET}\n"
        # the trader refuses to start without it (the nodes are offline: it is never used)
        "FALCON_MASSIVE_API_KEY=lab-not-a-real-key\n"
        "FALCON_LLM_API_KEY=\n")
    secrets_file.chmod(0o600)
    return hosts, secrets_file


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if FOREIGN:
        pytest.skip(f"FALCON_CLUSTER_ARCH={ARCH}: tests/cluster/test_arm64_node.py runs instead")
    try:
        preflight()
    except LabUnavailable as exc:
        pytest.skip(f"cluster lab unavailable: {exc}")
    started = time.monotonic()
    image = build_image()
    lab = Lab(image)
    try:
        try:
            lab.up()
        except LabUnavailable as exc:
            pytest.skip(f"cluster lab unavailable: {exc}")
        inventory, secrets_file = _write_inventory(lab)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("FALCON_", "ANSIBLE_", "PIP_REQUIRE"))}
        env.update({
            "FALCON_INVENTORY": str(inventory), "FALCON_SECRETS_FILE": str(secrets_file),
            "FALCON_BUILD_DIR": os.environ.get("FALCON_LAB_BUILD_DIR",
                                               "/var/cache/falcon-lab/deploy-build"),
            "FALCON_BACKUP_DIR": str(lab.run_dir / "backups"),
            "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
            "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1",
        })
        if os.environ.get("FALCON_DEPLOY_VENV"):
            env["FALCON_DEPLOY_VENV"] = os.environ["FALCON_DEPLOY_VENV"]
        c = Cluster(lab, env)
        c.timings["lab_up"] = time.monotonic() - started
        res = c.deploy("setup", "all", name="setup-1")
        c.setup_output = res.stdout
        yield c
    finally:
        if lab.nodes:  # the nodes' journals, for whoever reads a failure
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            with open(ARTIFACTS / "journals.log", "w") as out:
                for name in lab.nodes:
                    out.write(f"===== {name}\n{lab.journal(name, '--no-hostname')[-300000:]}\n")
        lab.down()
        log(f"cluster test total {time.monotonic() - started:.0f} s")


def _recap(output: str) -> dict[str, dict[str, int]]:
    recap: dict[str, dict[str, int]] = {}
    for line in output.split("PLAY RECAP")[-1].splitlines():
        m = re.match(r"^(\S+)\s+:\s+(ok=.*)$", line.strip())
        if m:
            recap[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return recap


def _installed_daemons(c: Cluster) -> list[str]:
    out = c.ssh("compute", "systemctl list-unit-files --no-legend 'falcon-*.service'").stdout
    return [d for d in DAEMONS if f"falcon-{d}.service" in out]


def _available_daemons(c: Cluster) -> list[str]:
    return [d for d in DAEMONS
            if c.ssh("compute", f"/opt/falcon/venv/bin/falcon {d} run --help",
                     check=False).returncode == 0]


# ----------------------------------------------------------------------------- tests


def test_setup_all_succeeds(cluster: Cluster) -> None:
    recap = _recap(cluster.setup_output)
    assert set(recap) == set(HOSTS), cluster.setup_output[-3000:]
    for host, counts in recap.items():
        assert counts["failed"] == 0 and counts["unreachable"] == 0, (host, counts)


def test_units_are_active(cluster: Cluster) -> None:
    c = cluster
    assert "worker" in _installed_daemons(c)
    assert _installed_daemons(c) == _available_daemons(c), "units only for commands that exist"
    expected = {
        "db": ["postgresql@15-main.service", "falcon-pg-backup.timer", "nftables.service"],
        "compute": [f"falcon-{d}.service" for d in _installed_daemons(c)]
        + ["falcon.target", "nftables.service"],
        "web": ["falcon-web.socket", "falcon-web.service", "falcon.target", "nginx.service",
                "nftables.service"],
    }
    for node, units in expected.items():
        res = c.ssh(node, "systemctl is-active " + " ".join(units), check=False)
        states = dict(zip(units, res.stdout.split(), strict=False))
        assert all(s == "active" for s in states.values()) and len(states) == len(units), (
            node, states, c.ssh(node, "systemctl --failed --no-legend; journalctl -b -n 60 "
                                "--no-pager -u 'falcon*'", check=False).stdout)
    # nothing else failed on any node
    for node in expected:
        failed = c.ssh(node, "systemctl --failed --no-legend --plain").stdout.strip()
        assert failed == "", (node, failed)


def test_journal_shows_each_service_start(cluster: Cluster) -> None:
    c = cluster
    units = {"compute": [f"falcon-{d}.service" for d in _installed_daemons(c)],
             "web": ["falcon-web.service", "nginx.service"],
             "db": ["postgresql@15-main.service"]}
    for node, names in units.items():
        for unit in names:
            out = c.ssh(node, f"journalctl -b --no-pager -o cat _PID=1 UNIT={unit}").stdout
            assert re.search(rf"Started {re.escape(unit)}", out), (node, unit, out[-2000:])
    # the daemons themselves log to the journal (READY reached: the unit is active)
    out = c.ssh("compute", "journalctl -b --no-pager -o cat -u falcon-worker.service").stdout
    assert out.strip(), "falcon-worker logged nothing"


def test_units_verify_and_security_on_a_node(cluster: Cluster) -> None:
    c = cluster
    for node, units in (("compute", [f"falcon-{d}.service" for d in _installed_daemons(c)]),
                        ("web", ["falcon-web.service", "falcon-web.socket"])):
        res = c.ssh(node, "cd /etc/systemd/system && systemd-analyze verify "
                    + " ".join(units), check=False)
        assert res.returncode == 0 and not res.stderr.strip(), (node, res.stderr)
        for unit in units:
            if not unit.endswith(".service"):
                continue
            out = c.ssh(node, f"systemd-analyze security --no-pager {unit}").stdout
            m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
            assert m and float(m.group(1)) <= 3.0, out[-1500:]
            log(f"{node} {unit}: exposure {m.group(1)}")


# -- the web node from outside


def _tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the lab's certificate is self-signed
    return ctx


class Browser:
    """Just enough of a browser: HTTPS to one host, a cookie jar, no redirects followed."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPSConnection(self.host, 443, context=_tls(), timeout=30)
        hdrs = {"Host": "falcon.lab.test", **(headers or {})}
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        data = None
        if body is not None:
            data = urllib.parse.urlencode(body)
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
        for value in resp.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(value).items():
                self.cookies[name] = morsel.value
        headers_out = {k.lower(): v for k, v in resp.getheaders()}
        conn.close()
        return resp.status, headers_out, text


def test_http_redirects_to_https(cluster: Cluster) -> None:
    conn = http.client.HTTPConnection(cluster.lab.nodes["web"].addr, 80, timeout=15)
    conn.request("GET", "/login", headers={"Host": "falcon.lab.test"})
    resp = conn.getresponse()
    assert resp.status == 301
    assert resp.getheader("Location") == "https://falcon.lab.test/login"


def test_https_login_page_headers_and_static(cluster: Cluster) -> None:
    b = Browser(cluster.lab.nodes["web"].addr)
    status, headers, body = b.request("GET", "/login")
    assert status == 200, body[:500]
    assert 'name="password"' in body and "csrf_token" in body
    assert "max-age=" in headers.get("strict-transport-security", "")
    assert headers.get("x-content-type-options") == "nosniff"
    assert headers.get("x-frame-options") == "DENY"
    assert "nginx/" not in headers.get("server", "")  # server_tokens off
    # static files come from nginx itself (the package's falcon/web/static)
    status, headers, _ = b.request("GET", "/static/falcon.css",
                                   headers={"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers.get("cache-control") == "public"
    small = int(headers.get("content-length", "0")) < 1024  # gzip_min_length
    assert headers.get("content-encoding") == "gzip" or small


def test_healthz_through_nginx(cluster: Cluster) -> None:
    b = Browser(cluster.lab.nodes["web"].addr)
    status, _, body = b.request("GET", "/healthz")
    assert status in (200, 503), body[:500]
    data = json.loads(body)
    checks = {c["check"]: c for c in data["checks"]}
    assert checks["database"]["ok"], checks
    assert checks["migrations"]["ok"], checks


def test_metrics_only_from_cluster_nodes(cluster: Cluster) -> None:
    c = cluster
    web = c.lab.nodes["web"].addr
    status, _, _ = Browser(web).request("GET", "/metrics")
    assert status == 403  # the host bridge address is not a node
    res = c.ssh("compute", f"curl -sk -o /dev/null -w '%{{http_code}}' https://{web}/metrics",
                become=False)
    assert res.stdout.strip() == "200", res.stdout + res.stderr


def _login(c: Cluster) -> tuple[Browser, dict[str, str]]:
    """A browser logged in to the web node as alice (made on first use); the login's headers."""
    res = c.ssh("web", "falcon user add alice --password-stdin", input=USER_PASSWORD + "\n",
                check=False)
    assert res.returncode == 0 or "exists" in res.stderr, res.stdout + res.stderr
    b = Browser(c.lab.nodes["web"].addr)
    status, _, body = b.request("GET", "/login")
    token = re.search(r'name="csrf_token"\s+value="([^"]+)"', body)
    assert token, body[:1000]
    status, headers, body = b.request("POST", "/login", {
        "username": "alice", "password": USER_PASSWORD, "csrf_token": token.group(1)})
    assert status in (302, 303), (status, body[:1000])
    return b, headers


def test_login_and_overview(cluster: Cluster) -> None:
    b, headers = _login(cluster)
    status, _, body = b.request("GET", headers.get("location", "/").replace(
        "https://falcon.lab.test", "") or "/")
    assert status == 200, body[:1000]
    assert "alice" in body or "Overview" in body or "overview" in body, body[:1500]
    # and the secret key, the password and the database URL are nowhere on the page
    assert DB_PASSWORD not in body and WEB_SECRET not in body


def _json_out(text: str) -> object:
    """The JSON document a `falcon ... --json` printed (whatever else the wrapper said)."""
    start = min(i for i in (text.find("["), text.find("{")) if i >= 0)
    return json.loads(text[start:])


def test_screen_on_compute_shows_on_the_dashboard(cluster: Cluster) -> None:
    """Sample data imported and a screen run on the compute node (as the falcon user, with the
    node's config) are what the web node's dashboard and /healthz show: the database is the only
    thing the nodes share."""
    c = cluster
    started = time.monotonic()
    c.ssh("compute", "falcon data sample --json", timeout=600)
    status = _json_out(c.ssh("compute", "falcon data status --json").stdout)
    assert isinstance(status, dict)
    assert status["store"] == "/var/lib/falcon/market_data"
    day = next(k for k in status["kinds"] if k["kind"] == "day")
    assert day["tickers"] > 0 and day["sessions"] > 100, day
    last = day["last_date"]
    out = c.ssh("compute", f"falcon screen run --all --no-llm --date {last} --json",
                timeout=900).stdout
    runs = _json_out(out)
    assert isinstance(runs, list) and runs, out[-2000:]
    picked = [r for r in runs if r["picks"]]
    assert picked, f"no profile picked anything on {last}: {out[-2000:]}"
    c.timings["sample_and_screen"] = time.monotonic() - started
    # nothing of it is on the web node itself
    res = c.ssh("web", "test -e /var/lib/falcon/market_data/day", check=False)
    assert res.returncode != 0, "the web node has a market-data store of its own"

    b, _ = _login(c)
    status_code, _, body = b.request("GET", "/api/v1/screener/runs?limit=100")
    assert status_code == 200, body[:1000]
    listed = {r["id"]: r for r in json.loads(body)["items"]}
    for run in runs:
        assert run["run_id"] in listed, (run["run_id"], sorted(listed))
        assert listed[run["run_id"]]["profile"] == run["profile"]
        assert listed[run["run_id"]]["as_of"] == last
    run = picked[0]
    status_code, _, body = b.request("GET", f"/api/v1/screener/runs/{run['run_id']}")
    assert status_code == 200, body[:1000]
    assert [p["ticker"] for p in json.loads(body)["picks"]] == [
        p["ticker"] for p in run["picks"]]
    # and the pages a person reads
    status_code, _, body = b.request("GET", "/screener/")
    assert status_code == 200 and f"/screener/runs/{run['run_id']}" in body, body[:2000]
    assert run["profile"] in body
    status_code, _, body = b.request("GET", f"/screener/runs/{run['run_id']}")
    assert status_code == 200
    assert all(p["ticker"] in body for p in run["picks"]), body[:3000]

    # /healthz on the web node judges freshness from the database's imports, not from its own
    # (empty) store: it names the compute node's last session
    status_code, _, body = Browser(c.lab.nodes["web"].addr).request("GET", "/healthz")
    checks = {k["check"]: k for k in json.loads(body)["checks"]}
    fresh = checks["data freshness"]
    assert fresh["ok"] and f"last session {last}" in fresh["detail"], checks
    # and `falcon doctor` on both nodes agrees
    for node in ("compute", "web"):
        doctor = _json_out(c.ssh(node, "falcon doctor --json", check=False).stdout)
        assert isinstance(doctor, dict)
        detail = next(k for k in doctor["checks"] if k["check"] == "data freshness")["detail"]
        assert detail == fresh["detail"], (node, detail, fresh["detail"])


# -- PostgreSQL on the db node

_PG_CONNECT = (
    "/opt/falcon/venv/bin/python -c 'import sys, psycopg; "
    "c = psycopg.connect(sys.stdin.read().strip(), connect_timeout=10); "
    "print(c.execute(\"select ssl from pg_stat_ssl where pid = pg_backend_pid()\")"
    ".fetchone()[0])'"
)


def _url(c: Cluster, sslmode: str = "require") -> str:
    db = c.lab.nodes["db"].addr
    return f"postgresql://falcon:{DB_PASSWORD}@{db}:5432/falcon?sslmode={sslmode}\n"


def test_compute_and_web_reach_postgresql_over_tls(cluster: Cluster) -> None:
    for node in ("compute", "web"):
        res = cluster.ssh(node, _PG_CONNECT, input=_url(cluster), become=False)
        assert res.stdout.strip() == "True", (node, res.stdout, res.stderr)


def test_postgresql_refuses_plain_connections(cluster: Cluster) -> None:
    res = cluster.ssh("compute", _PG_CONNECT, input=_url(cluster, "disable"), become=False,
                      check=False)
    assert res.returncode != 0
    assert "no pg_hba.conf entry" in res.stderr or "rejects" in res.stderr, res.stderr


def test_postgresql_refuses_other_addresses(cluster: Cluster) -> None:
    db = cluster.lab.nodes["db"].addr
    # from the host's bridge address: the db node's firewall answers with a reset
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((db, 5432), timeout=10).close()
    # from the db node's own address (TCP, not the unix socket): pg_hba rejects it
    script = ('read -r PGPASSWORD; export PGPASSWORD; '
              f'psql "host={db} user=falcon dbname=falcon sslmode=require connect_timeout=5" '
              '-tAc "select 1"')
    res = cluster.ssh("db", script, input=DB_PASSWORD + "\n", become=False, check=False)
    assert res.returncode != 0
    assert "pg_hba.conf rejects connection" in res.stderr, res.stderr


# -- systemd keeps the daemons up


def _main_pid(c: Cluster, node: str, unit: str) -> int:
    out = c.ssh(node, f"systemctl show --value -p MainPID {unit}").stdout.strip()
    return int(out or 0)


def _wait_active(c: Cluster, node: str, unit: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = c.ssh(node, f"systemctl is-active {unit}", check=False).stdout.strip()
        if state == "active":
            return
        time.sleep(1)
    raise AssertionError(f"{node} {unit} is {state}")


def test_killed_daemons_are_restarted(cluster: Cluster) -> None:
    c = cluster
    for daemon in [d for d in ("worker", "trader") if d in _installed_daemons(c)]:
        unit = f"falcon-{daemon}.service"
        before = _main_pid(c, "compute", unit)
        assert before > 0
        c.ssh("compute", f"kill -KILL {before}")
        deadline = time.monotonic() + 60
        after = 0
        while time.monotonic() < deadline:
            after = _main_pid(c, "compute", unit)
            state = c.ssh("compute", f"systemctl is-active {unit}", check=False).stdout.strip()
            if after not in (0, before) and state == "active":
                break
            time.sleep(1)
        assert after not in (0, before), f"{unit} was not restarted"
        restarts = c.ssh("compute", f"systemctl show --value -p NRestarts {unit}").stdout
        assert int(restarts.strip()) >= 1


def test_second_setup_changes_nothing(cluster: Cluster) -> None:
    # the same release again (others may be editing falcon/ while this runs: a rebuild would be
    # a new release, and rightly change things)
    cluster.env["FALCON_RELEASE_DIR"] = str(Path(cluster.env["FALCON_BUILD_DIR"]) / "release")
    try:
        res = cluster.deploy("setup", "all", name="setup-2")
    finally:
        del cluster.env["FALCON_RELEASE_DIR"]
    recap = _recap(res.stdout)
    changed = {host: counts["changed"] for host, counts in recap.items()}
    assert set(changed) == set(HOSTS)
    assert all(v == 0 for v in changed.values()), (changed, [
        line for line in res.stdout.splitlines() if line.startswith("changed:")
        or "TASK [" in line][-80:])


def test_status_and_logs(cluster: Cluster) -> None:
    res = cluster.deploy("status", "all", name="status")
    assert "falcon-worker.service" in res.stdout and "postgresql@15-main.service" in res.stdout
    assert '"database"' in res.stdout or "database" in res.stdout  # /healthz's JSON
    res = cluster.deploy("logs", "compute", "--lines=50", "--no-pager", name="logs", timeout=60)
    assert "[falcon-compute]" in res.stdout and "falcon-worker" in res.stdout


def test_backup_and_restore(cluster: Cluster) -> None:
    res = cluster.deploy("backup", "all", name="backup")
    dest = Path(res.stdout.strip().splitlines()[-1])
    assert (dest / "falcon.dump").stat().st_size > 1000
    assert (dest / "falcon-compute" / "falcon.toml").exists()
    cluster.deploy("restore", "all", str(dest), name="restore")
    for unit in ("falcon-worker.service", "falcon.target"):
        _wait_active(cluster, "compute", unit)
    _wait_active(cluster, "web", "falcon-web.service")


def test_compute_node_restart_brings_services_back(cluster: Cluster) -> None:
    c = cluster
    node = c.lab.nodes["compute"]
    daemons = _installed_daemons(c)
    c.ssh("compute", "systemctl reboot", check=False, timeout=30)
    code = c.lab.wait_exit(node, timeout=60)
    assert code == 133, f"nspawn exited with {code}"  # a reboot: start the container again
    c.lab.start(node)
    c.lab.wait_ssh(node)
    for daemon in daemons:
        _wait_active(c, "compute", f"falcon-{daemon}.service", timeout=90)
    _wait_active(c, "compute", "falcon.target")
    boots = c.ssh("compute", "journalctl --list-boots --no-pager | wc -l").stdout
    assert int(boots.strip()) >= 2


def test_no_secret_in_deploy_output_or_journals(cluster: Cluster) -> None:
    for path in ARTIFACTS.glob("*.log"):
        text = path.read_text()
        assert DB_PASSWORD not in text, path
        assert WEB_SECRET not in text, path
    for node in ("db", "compute", "web"):
        out = cluster.ssh(node, "journalctl --no-pager -o cat").stdout
        assert DB_PASSWORD not in out and WEB_SECRET not in out, node
