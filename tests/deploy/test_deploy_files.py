"""Cheap checks of the deployment files (no nodes): lint, unit verification, nginx -t, shell.

Each check runs when its tool is on this machine and is skipped with the reason otherwise.
yamllint and ansible-lint come from deploy.sh's Ansible venv (deploy/.venv-deploy, or
$FALCON_DEPLOY_VENV); `deploy/deploy.sh status all` makes it on first use.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / "ansible"
SYSTEMD = REPO / "systemd"
DEPLOY = REPO / "deploy"
UNITS = sorted(p.name for p in SYSTEMD.glob("falcon-*.service"))
MAX_EXPOSURE = 3.0


def _venv_tool(name: str) -> Path | None:
    venv = Path(os.environ.get("FALCON_DEPLOY_VENV", DEPLOY / ".venv-deploy"))
    tool = venv / "bin" / name
    if tool.exists():
        return tool
    found = shutil.which(name)
    return Path(found) if found else None


def _run(argv: list[str | Path], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300,
                          check=False, **kw)  # type: ignore[call-overload]


def test_every_daemon_unit_exists() -> None:
    assert set(UNITS) >= {"falcon-scheduler.service", "falcon-trader.service",
                          "falcon-worker.service", "falcon-web.service"}
    assert (SYSTEMD / "falcon.target").exists()


@pytest.mark.parametrize("unit", UNITS)
def test_unit_hardening_directives(unit: str) -> None:
    text = (SYSTEMD / unit).read_text()
    for directive in ("User=falcon", "ProtectSystem=strict", "StateDirectory=falcon",
                      "LogsDirectory=falcon", "CacheDirectory=falcon", "RuntimeDirectory=falcon",
                      "NoNewPrivileges=yes", "PrivateTmp=yes", "PrivateDevices=yes",
                      "ProtectHome=yes", "ProtectKernelTunables=yes", "ProtectKernelModules=yes",
                      "ProtectKernelLogs=yes", "RestrictAddressFamilies=",
                      "SystemCallFilter=@system-service", "CapabilityBoundingSet=\n",
                      "Type=notify", "Restart=on-failure",
                      "EnvironmentFile=/etc/falcon/secrets.env"):
        assert directive in text, f"{unit} lacks {directive.strip()}"
    if unit != "falcon-web.service":  # gunicorn does not send WATCHDOG=1
        assert re.search(r"^WatchdogSec=\d+", text, re.M), f"{unit} has no watchdog"


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` on the units, their executables stubbed at a temporary path."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt install systemd)")
    stub_bin = tmp_path / "bin"
    stub_bin.mkdir()
    for name in ("falcon", "gunicorn"):
        (stub_bin / name).write_text("#!/bin/sh\n")
        (stub_bin / name).chmod(0o755)
    files = []
    for unit in sorted(SYSTEMD.iterdir()):
        if unit.suffix not in {".service", ".socket", ".target", ".timer"}:
            continue
        text = unit.read_text().replace("/opt/falcon/venv/bin/", f"{stub_bin}/")
        (tmp_path / unit.name).write_text(text)
        files.append(tmp_path / unit.name)
    res = _run(["systemd-analyze", "verify", "--man=no", *files], cwd=tmp_path,
               env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"})
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_security(unit: str) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt install systemd)")
    res = _run(["systemd-analyze", "security", "--offline=yes", "--no-pager", SYSTEMD / unit])
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout)
    if match is None and "--offline" in res.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd >= 252 needed)")
    assert match, res.stdout + res.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, res.stdout


def test_yamllint() -> None:
    tool = _venv_tool("yamllint")
    if tool is None:
        pytest.skip("yamllint is not installed (deploy/.venv-deploy, made by deploy.sh, has it)")
    res = _run([tool, "--strict", "-c", ANSIBLE / ".yamllint", ANSIBLE])
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.slow  # a minute or two
def test_ansible_lint() -> None:
    tool = _venv_tool("ansible-lint")
    if tool is None:
        pytest.skip("ansible-lint is not installed (deploy/.venv-deploy lacks it)")
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
           "ANSIBLE_LOCAL_TEMP": "/tmp", "ANSIBLE_HOME": str(ANSIBLE / ".ansible")}
    env["PATH"] = f"{tool.parent}:{env.get('PATH', '')}"
    res = _run([tool, "--offline", "--nocolor", "-q"], cwd=ANSIBLE, env=env)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-3000:]


def test_playbooks_syntax() -> None:
    tool = _venv_tool("ansible-playbook")
    if tool is None:
        pytest.skip("ansible is not installed (deploy/.venv-deploy lacks it)")
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg")}
    for book in ("site", "db", "compute", "web", "deploy", "services", "status", "backup",
                 "restore"):
        res = _run([tool, "--syntax-check", "-i", ANSIBLE / "inventory/production/hosts.yml",
                    ANSIBLE / f"{book}.yml"], env=env)
        assert res.returncode == 0, book + ": " + res.stdout + res.stderr


def _render_site(tmp_path: Path) -> Path:
    jinja2 = pytest.importorskip("jinja2")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    template = env.from_string((REPO / "nginx/falcon.conf.j2").read_text())
    cert, key = tmp_path / "falcon.crt", tmp_path / "falcon.key"
    res = _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                "-subj", "/CN=falcon.test", "-keyout", key, "-out", cert])
    assert res.returncode == 0, res.stderr
    static = tmp_path / "static"
    static.mkdir()
    site = template.render(
        nginx_server_name="falcon.test", nginx_upstream_socket=str(tmp_path / "web.sock"),
        nginx_tls_certificate_path=str(cert), nginx_tls_certificate_key_path=str(key),
        nginx_client_max_body_size="10m", nginx_hsts_max_age=31536000,
        nginx_content_security_policy="default-src 'self'", _nginx_static_root=str(static),
        nginx_metrics_allowed=["127.0.0.1", "10.77.0.10"],
    )
    snippet = tmp_path / "falcon-proxy.conf"
    shutil.copy(REPO / "nginx/falcon-proxy.conf", snippet)
    site = site.replace("/etc/nginx/snippets/falcon-proxy.conf", str(snippet))
    (tmp_path / "falcon.conf").write_text(site)
    return tmp_path / "falcon.conf"


def test_nginx_site_config(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if nginx is None:
        pytest.skip("nginx is not installed here: the cluster test checks the site on the web node")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    site = _render_site(tmp_path)
    mime = "include /etc/nginx/mime.types;" if Path("/etc/nginx/mime.types").exists() else ""
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n {mime}\n access_log off;\n include {site};\n}}\n")
    res = _run([nginx, "-t", "-p", tmp_path, "-e", "stderr", "-c", tmp_path / "nginx.conf"])
    assert res.returncode == 0, res.stderr
    text = site.read_text()
    for needle in ("return 301 https://", "Strict-Transport-Security", "gzip on",
                   "location /static/", "location = /metrics", "deny all",
                   "proxy_pass http://falcon_web", "X-Content-Type-Options"):
        assert needle in text


def test_deploy_sh_parses() -> None:
    res = _run(["bash", "-n", DEPLOY / "deploy.sh"])
    assert res.returncode == 0, res.stderr


def test_shell_scripts_pass_shellcheck() -> None:
    """deploy.sh and the scripts a newcomer runs (bootstrap, tests, CI, the lab)."""
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (scripts/bootstrap.sh --dev installs it)")
    root = DEPLOY.parent
    scripts = [DEPLOY / "deploy.sh", root / ".ci" / "run", *sorted((root / "scripts").glob("*.sh"))]
    assert len(scripts) >= 4
    res = _run(["shellcheck", *scripts])
    assert res.returncode == 0, res.stdout


def test_deploy_sh_clear_errors(tmp_path: Path) -> None:
    """A missing inventory or secrets file is one clear line, before anything else happens."""
    env = {**os.environ, "FALCON_INVENTORY": str(tmp_path / "nope.yml"),
           "FALCON_DEPLOY_VENV": str(tmp_path / "no-venv")}
    res = _run([DEPLOY / "deploy.sh", "setup", "all"], env=env)
    assert res.returncode != 0
    assert "inventory" in res.stderr and "not found" in res.stderr
    res = _run([DEPLOY / "deploy.sh", "frobnicate", "all"], env=env)
    assert res.returncode != 0
    res = _run([DEPLOY / "deploy.sh", "setup", "everywhere"], env=env)
    assert res.returncode == 2 and "unknown target" in res.stderr
    if _venv_tool("ansible-playbook") is None:
        return
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    x: {ansible_host: 127.0.0.1}\n")
    env = {**os.environ, "FALCON_INVENTORY": str(inv),
           "FALCON_SECRETS_FILE": str(tmp_path / "missing.env")}
    res = _run([DEPLOY / "deploy.sh", "setup", "all"], env=env)
    assert res.returncode != 0 and "secrets file" in res.stderr, res.stderr


def test_secrets_example_documents_every_key() -> None:
    text = (DEPLOY / "secrets.env.example").read_text()
    for key in ("FALCON_DATABASE_URL", "FALCON_S3_ACCESS_KEY_ID", "FALCON_S3_SECRET_ACCESS_KEY",
                "FALCON_MASSIVE_API_KEY", "FALCON_LLM_API_KEY", "FALCON_WEB_SECRET_KEY",
                "FALCON_SLACK_WEBHOOK_URL", "FALCON_DISCORD_WEBHOOK_URL", "FALCON_SMTP_PASSWORD"):
        assert re.search(rf"^{key}=", text, re.M), key


def test_no_secret_values_in_the_repository() -> None:
    """Nothing under ansible/ or deploy/ (tracked files) carries a real-looking secret."""
    assert not (DEPLOY / "secrets.env").exists() or "secrets.env" in (
        DEPLOY / ".gitignore").read_text()
    for path in [*ANSIBLE.rglob("*.yml"), DEPLOY / "deploy.sh"]:
        text = path.read_text()
        assert not re.search(r"postgresql://[^:\s]+:(?!PASSWORD|CHANGE-ME)[^@\s{]+@", text), path


# -- deploy.sh's errors: one clear line, a non-zero exit, before anything changes anywhere


def _free_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _secrets(tmp_path: Path, **values: str) -> Path:
    path = tmp_path / "secrets.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)
    return path


SECRET_VALUES = {"FALCON_DATABASE_URL": "postgresql://falcon:s3cret-pw-7q@10.0.0.1/falcon",
                 "FALCON_WEB_SECRET_KEY": "k3y-0f-the-w3b-9x"}


def _deploy(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FALCON_", "ANSIBLE_"))}
    return subprocess.run([str(DEPLOY / "deploy.sh"), *args], env={**base, **env},
                          capture_output=True, text=True, timeout=120, check=False,
                          stdin=subprocess.DEVNULL)


def test_missing_secrets_are_reported_before_anything_else(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    x: {ansible_host: 127.0.0.1}\n")
    no_venv = str(tmp_path / "no-venv")  # would take a minute to make: must not be needed
    env = {"FALCON_INVENTORY": str(inv), "FALCON_DEPLOY_VENV": no_venv,
           "FALCON_SECRETS_FILE": str(tmp_path / "missing.env")}
    res = _deploy(["setup", "all"], env)
    assert res.returncode == 1, res.stderr
    assert res.stderr.startswith("error: secrets file ") and "not found" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not Path(no_venv).exists()
    # a key without a value names the key, never another key's value
    secrets_file = _secrets(tmp_path, FALCON_DATABASE_URL=SECRET_VALUES["FALCON_DATABASE_URL"],
                            FALCON_WEB_SECRET_KEY="")
    res = _deploy(["deploy", "web"], {**env, "FALCON_SECRETS_FILE": str(secrets_file)})
    assert res.returncode == 1
    assert "no value for FALCON_WEB_SECRET_KEY" in res.stderr, res.stderr
    assert "s3cret-pw-7q" not in res.stdout + res.stderr


def test_unreachable_node_is_one_clear_line(tmp_path: Path) -> None:
    venv = Path(os.environ.get("FALCON_DEPLOY_VENV", DEPLOY / ".venv-deploy"))
    if not (venv / "bin" / "ansible").exists():
        pytest.skip("deploy.sh's Ansible venv is not made (deploy/deploy.sh status all makes it)")
    port = _free_port()
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  children:\n    db:\n      hosts:\n"
                   f"        falcon-db: {{ansible_host: 127.0.0.1, ansible_port: {port}}}\n")
    secrets_file = _secrets(tmp_path, **SECRET_VALUES)
    env = {"FALCON_INVENTORY": str(inv), "FALCON_SECRETS_FILE": str(secrets_file),
           "FALCON_DEPLOY_VENV": str(venv), "FALCON_BACKUP_DIR": str(tmp_path / "backups"),
           # an operator's extra callback (the cluster test's timer) must not confuse the probe
           "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks"}
    for args in (["status", "all"], ["setup", "db"], ["backup", "db"]):
        res = _deploy(args, env)
        assert res.returncode == 3, (args, res.stdout, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, (args, res.stderr)
        assert lines[0].startswith("error: node falcon-db is unreachable: ")
        assert f"port {port}" in lines[0] and "Connection refused" in lines[0]
        assert str(inv) in lines[0]
        out = res.stdout + res.stderr
        for noise in ("UNREACHABLE!", "PLAY", "Traceback", "TASK ["):
            assert noise not in out, (args, out)
        assert all(v not in out for v in SECRET_VALUES.values())
    assert not (tmp_path / "backups").exists()  # nothing made before the nodes answered


def test_secrets_pass_by_path_never_in_argv(tmp_path: Path) -> None:
    """deploy.sh hands Ansible the secrets file's path; no value is in any command line."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/python").symlink_to(sys.executable)
    argv_log = tmp_path / "argv.log"
    facts = json.dumps({"plays": [{"tasks": [{"hosts": {
        h: {"ansible_facts": {"ansible_architecture": "x86_64"}}
        for h in ("falcon-db", "falcon-compute", "falcon-web")}}]}]})
    for tool, body in (("ansible", f"cat <<'EOF'\n{facts}\nEOF\n"),
                       ("ansible-playbook", "")):
        script = venv / "bin" / tool
        script.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\" >> {argv_log}\n{body}")
        script.chmod(0o755)
    release = tmp_path / "release"
    release.mkdir()
    secrets_file = _secrets(tmp_path, **SECRET_VALUES)
    inv = tmp_path / "hosts.yml"
    inv.write_text("all: {}\n")
    res = _deploy(["setup", "all"], {
        "FALCON_INVENTORY": str(inv), "FALCON_SECRETS_FILE": str(secrets_file),
        "FALCON_DEPLOY_VENV": str(venv), "FALCON_RELEASE_DIR": str(release)})
    assert res.returncode == 0, res.stderr
    logged = argv_log.read_text()
    assert "ansible-playbook" in logged and str(secrets_file) in logged
    assert all(v not in logged for v in SECRET_VALUES.values())
    assert all(v not in res.stdout + res.stderr for v in SECRET_VALUES.values())


# -- the Raspberry Pi path: a wheelhouse for aarch64, binary wheels only

_NET_ERRORS = ("NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
               "Name or service not known", "ProxyError", "Network is unreachable",
               "ConnectTimeoutError", "Could not fetch URL")


@pytest.mark.slow  # about a minute: some 70 wheels for aarch64 from PyPI (pip's cache helps)
def test_aarch64_wheelhouse_is_complete_with_binary_wheels_only(tmp_path: Path) -> None:
    """`deploy.sh build aarch64` (what a Pi cluster gets) fetches binary wheels of every
    dependency for manylinux aarch64 / CPython 3.11, and they install with --no-index alone."""
    venv = Path(os.environ.get("FALCON_DEPLOY_VENV", DEPLOY / ".venv-deploy"))
    if not (venv / "bin" / "python").exists():
        pytest.skip("deploy.sh's venv is not made (deploy/deploy.sh status all makes it)")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FALCON_", "ANSIBLE_"))}
    res = subprocess.run([str(DEPLOY / "deploy.sh"), "build", "aarch64"], capture_output=True,
                         text=True, timeout=1800, check=False, stdin=subprocess.DEVNULL,
                         env={**base, "FALCON_BUILD_DIR": str(tmp_path / "build"),
                              "FALCON_DEPLOY_VENV": str(venv)})
    if res.returncode != 0 and any(e in res.stderr for e in _NET_ERRORS):
        pytest.skip(f"pip cannot reach the package registry: {res.stderr.strip()[-300:]}")
    assert res.returncode == 0, res.stderr[-3000:]
    release = tmp_path / "build" / "release"
    release_id = (release / "falcon-release-aarch64.id").read_text().strip()
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    shutil.unpack_archive(release / "falcon-release-aarch64.tar", unpacked)
    root = unpacked / release_id
    wheels = sorted((root / "wheels").iterdir())
    assert wheels and all(w.suffix == ".whl" for w in wheels), [w.name for w in wheels]
    names = {w.name.split("-")[0].lower() for w in wheels}
    assert {"falcon_trader", "polars", "sqlalchemy", "psycopg_binary", "flask"} <= names, names
    for wheel in wheels:
        _, _, python, abi, platform = wheel.name[:-4].rsplit("-", 4)
        assert platform == "any" or all(
            p.endswith("_aarch64") and p.startswith("manylinux") for p in platform.split(".")
        ), wheel.name
        assert abi in ("none", "abi3", "cp311") or abi.startswith("cp311"), wheel.name
        assert platform == "any" or python.startswith("cp3"), wheel.name
    lock = (root / "requirements.lock").read_text().split()
    assert len(lock) == len(wheels)
    # the node's install, resolved for an aarch64 CPython 3.11 with nothing but the wheelhouse
    plat = [a for m in range(17, 37) for a in ("--platform", f"manylinux_2_{m}_aarch64")]
    clean = {k: v for k, v in base.items() if not k.startswith("PIP_")}
    res = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "install", "--dry-run", "--quiet",
         "--ignore-installed", "--no-index", f"--find-links={root / 'wheels'}",
         "--only-binary=:all:", *plat, "--platform", "manylinux2014_aarch64",
         "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
         "--abi", "abi3", "--abi", "none", "--target", str(tmp_path / "target"),
         "--report", str(tmp_path / "report.json"),
         "--requirement", str(root / "requirements.lock")],
        capture_output=True, text=True, timeout=600, check=False,
        env={**clean, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    installed = {i["metadata"]["name"].lower().replace("-", "_") for i in report["install"]}
    assert installed == {n.split("==")[0].lower().replace("-", "_") for n in lock}
