"""Opt-in: the single-host inventory (db, compute and web roles on one node) deployed to an arm64
Debian bookworm node — what a lone Raspberry Pi runs — emulated on this x86_64 machine by
qemu-user-static through binfmt_misc, booted with systemd-nspawn like the three-node test.

Off unless FALCON_CLUSTER_ARCH=arm64 (it is slow under emulation: see the README); then
tests/cluster/test_three_nodes.py is skipped and this runs instead:

    FALCON_CLUSTER_ARCH=arm64 .venv/bin/python -m pytest -m cluster tests/cluster -v

It checks that deploy.sh asks the node for its architecture and ships the aarch64 wheelhouse
(binary wheels only: nothing is compiled on the node), and that every unit comes up.

Measured on the 2-core VM (shared): the arm64 root file system takes about 13 min to build once
(cached after that), `deploy.sh setup all` about 23 min, the whole test about 25 min; hence
opt-in, not in CI. What emulation cannot do, and the lab works around (a real Pi needs none of it):
sudo's setuid gets no root under qemu-user (SSH as root instead), nft gets no netfilter netlink
socket (firewall off), PrivateIPC= fails to set up (off through falcon_*_unit_settings), and the
node's own systemd-tmpfiles/sysusers units fail to set up credentials (not Falcon's units).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .lab import (
    ARCH,
    FOREIGN,
    SINGLE,
    SSH_USER,
    Lab,
    LabUnavailable,
    build_image,
    log,
    preflight,
)
from .test_three_nodes import ARTIFACTS, Browser, Cluster, _recap

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

DB_PASSWORD = "pw-" + secrets.token_urlsafe(18)
WEB_SECRET = secrets.token_hex(32)
HOST = "falcon"  # the single inventory's host name


def _write_inventory(lab: Lab) -> tuple[Path, Path]:
    node = lab.nodes["pi"]
    inv_dir = lab.run_dir / "inventory"
    inv_dir.mkdir(parents=True, exist_ok=True)
    ssh_args = (f"-o UserKnownHostsFile={lab.known_hosts} -o StrictHostKeyChecking=yes "
                "-o ConnectTimeout=30")
    # ansible/inventory/single/hosts.yml with the lab's address and SSH key
    inventory = {"all": {
        # become stays on even as root: the roles' become_user (postgres) needs it
        "vars": {"ansible_user": SSH_USER, "ansible_become": True,
                 "ansible_ssh_private_key_file": str(lab.ssh_key),
                 "ansible_ssh_common_args": ssh_args, "common_apt_cache_valid_time": 315360000,
                 # qemu-user emulates no NETLINK_NETFILTER socket: nft cannot load rules here
                 # (the three-node test checks the firewall; a real Pi has none of this limit)
                 "common_firewall_enabled": False,
                 # nor can it pass the IPC namespace systemd makes for PrivateIPC=yes ("Failed to
                 # set up IPC namespacing: Input/output error"); the rest of the sandbox works
                 "falcon_compute_unit_settings": {"PrivateIPC": "no"},
                 "falcon_web_unit_settings": {"PrivateIPC": "no"}},
        "children": {
            "db": {"hosts": {HOST: {"ansible_host": node.addr}}},
            "compute": {"hosts": {HOST: {}}},
            "web": {"hosts": {HOST: {"nginx_server_name": "falcon.lab.test"}}},
        },
    }}
    hosts = inv_dir / "hosts.yml"
    hosts.write_text(json.dumps(inventory, indent=2))
    secrets_file = lab.run_dir / "secrets.env"
    secrets_file.write_text(
        f"FALCON_DATABASE_URL=postgresql://falcon:{DB_PASSWORD}@{node.addr}:5432/falcon"
        "?sslmode=require\n"
        f"FALCON_WEB_SECRET_KEY={WEB_SECRET}\nFALCON_MASSIVE_API_KEY=lab-not-a-real-key\n")
    secrets_file.chmod(0o600)
    return hosts, secrets_file


_SETUP_FAILED: list[str] = []  # a failed setup is not retried for every test (it is slow)


@pytest.fixture(scope="module")
def pi() -> Iterator[Cluster]:
    if not FOREIGN:
        pytest.skip("opt-in: FALCON_CLUSTER_ARCH=arm64 runs it (slow: emulated by qemu)")
    if _SETUP_FAILED:
        pytest.fail(f"the {ARCH} node's setup failed above: {_SETUP_FAILED[0]}")
    try:
        preflight()
    except LabUnavailable as exc:
        pytest.skip(f"{ARCH} lab unavailable: {exc}")
    started = time.monotonic()
    image = build_image()
    log(f"{ARCH} image ready after {time.monotonic() - started:.0f} s")
    lab = Lab(image, layout=dict(SINGLE))
    try:
        try:
            lab.up()
        except LabUnavailable as exc:
            pytest.skip(f"{ARCH} lab unavailable: {exc}")
        inventory, secrets_file = _write_inventory(lab)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("FALCON_", "ANSIBLE_", "PIP_REQUIRE"))}
        env.update({
            "FALCON_INVENTORY": str(inventory), "FALCON_SECRETS_FILE": str(secrets_file),
            "FALCON_BUILD_DIR": os.environ.get("FALCON_LAB_BUILD_DIR",
                                               f"/var/cache/falcon-lab/deploy-build-{ARCH}"),
            "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
            "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_TIMEOUT": "120",
        })
        if os.environ.get("FALCON_DEPLOY_VENV"):
            env["FALCON_DEPLOY_VENV"] = os.environ["FALCON_DEPLOY_VENV"]
        c = Cluster(lab, env)
        c.timings["lab_up"] = time.monotonic() - started
        try:
            c.setup_output = c.deploy("setup", "all", name=f"{ARCH}-setup", timeout=7200).stdout
        except AssertionError as exc:
            _SETUP_FAILED.append(str(exc).splitlines()[0])
            raise
        log(f"{ARCH} setup all took {c.timings[f'{ARCH}-setup']:.0f} s")
        yield c
    finally:
        if lab.nodes:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            (ARTIFACTS / f"{ARCH}-journal.log").write_text(
                lab.journal("pi", "--no-hostname")[-300000:])
        lab.down()
        log(f"{ARCH} test total {time.monotonic() - started:.0f} s")


def test_node_is_arm64_and_got_the_aarch64_wheelhouse(pi: Cluster) -> None:
    assert pi.ssh("pi", "uname -m").stdout.strip() == "aarch64"
    recap = _recap(pi.setup_output)
    assert set(recap) == {HOST}, pi.setup_output[-3000:]
    assert recap[HOST]["failed"] == 0 and recap[HOST]["unreachable"] == 0, recap
    build = Path(pi.env["FALCON_BUILD_DIR"]) / "release"
    release_id = (build / "falcon-release-aarch64.id").read_text().strip()
    link = pi.ssh("pi", "readlink -f /opt/falcon/venv").stdout.strip()
    assert link == f"/opt/falcon/venvs/{release_id}"
    # binary wheels only, for this platform: no compiler on the node, nothing built there
    wheels = pi.ssh("pi", f"ls /opt/falcon/releases/{release_id}/wheels").stdout.split()
    assert wheels and all(w.endswith(("-any.whl", "aarch64.whl")) for w in wheels), wheels
    assert pi.ssh("pi", "command -v gcc cc", check=False).stdout.strip() == ""
    out = pi.ssh("pi", "/opt/falcon/venv/bin/python -c 'import polars, psycopg, platform; "
                 "print(platform.machine(), polars.__version__)'").stdout
    assert out.startswith("aarch64 "), out


def test_every_unit_comes_up(pi: Cluster) -> None:
    units = ["postgresql@15-main.service", "falcon-scheduler.service", "falcon-trader.service",
             "falcon-worker.service", "falcon.target", "falcon-web.socket", "nginx.service"]
    deadline = time.monotonic() + 600
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        res = pi.ssh("pi", "systemctl is-active " + " ".join(units), check=False)
        states = dict(zip(units, res.stdout.split(), strict=False))
        if all(s == "active" for s in states.values()) and len(states) == len(units):
            break
        time.sleep(5)
    assert all(s == "active" for s in states.values()) and len(states) == len(units), (
        states, pi.ssh("pi", "systemctl --failed --no-legend; journalctl -b -n 80 --no-pager "
                       "-u 'falcon*'", check=False).stdout)


def test_dashboard_answers_through_nginx(pi: Cluster) -> None:
    status, _, body = Browser(pi.lab.nodes["pi"].addr).request("GET", "/healthz")
    assert status in (200, 503), body[:500]
    checks = {c["check"]: c for c in json.loads(body)["checks"]}
    assert checks["database"]["ok"] and checks["migrations"]["ok"], checks
