"""A three-node lab on one machine: systemd-nspawn containers in their own network namespaces.

What it does follows /work/shared/notes/cluster-lab.md (what is known to work on a Debian 12 VM
whose PID 1 is not systemd):

* a Debian bookworm root file system built once by ``mmdebstrap`` with systemd, SSH, Python and the
  Debian packages the Ansible roles install, cached under ``/var/cache/falcon-lab/images/<hash>``
  (the hash covers everything that goes into it), built by the same mirror and apt options the host
  uses, with no SSH host keys and an empty machine-id;
* per node an overlayfs clone, its own SSH host keys, a network namespace with a veth into the
  host bridge ``flab0`` on 10.77.0.0/24, a cgroup of its own in both hierarchies, and
  ``systemd-nspawn --boot --register=no --keep-unit`` started with stdin from /dev/null;
* no forwarding and no NAT: the nodes reach nothing but each other and the host (the deployment
  ships Python wheels and the Debian packages are already in the image).

Everything made is recorded on the :class:`Lab` object and removed by :meth:`Lab.down`, which is
safe to call at any point (and again). Used by tests/cluster/ and by scripts/cluster-lab.sh:

    python -m tests.cluster.lab image      # build (or reuse) the cached root file system
    python -m tests.cluster.lab up         # boot three nodes, print how to reach them
    python -m tests.cluster.lab up single  # boot one node (SINGLE), e.g. FALCON_CLUSTER_ARCH=arm64
    python -m tests.cluster.lab down       # remove what `up` made (reads the state file)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# One lab at a time per LAB_ID (a lock says who runs it); another id and subnet give a second one.
LAB_ID = os.environ.get("FALCON_LAB_ID", "flab")
SUBNET = os.environ.get("FALCON_LAB_SUBNET", "10.77.0")
PREFIX = 24
BRIDGE = f"{LAB_ID}0"
HOST_ADDR = f"{SUBNET}.1"
CACHE = Path(os.environ.get("FALCON_LAB_CACHE", "/var/cache/falcon-lab"))
RUN_ROOT = Path(os.environ.get("FALCON_LAB_RUN", f"/var/tmp/falcon-lab-{LAB_ID}"))
STATE_FILE = RUN_ROOT / "state.json"
LOCK_FILE = Path(f"/run/falcon-lab-{LAB_ID}.lock")
CGROUP_SLICE = f"falcon-lab-{LAB_ID}"
ADMIN_USER = "deploy"  # the SSH user Ansible uses, with passwordless sudo (like `pi` on a Pi)
SUITE = "bookworm"
# The nodes' CPU architecture (Debian's name): the host's by default; FALCON_CLUSTER_ARCH=arm64 on
# an x86_64 host boots Raspberry Pi OS-like arm64 nodes under qemu-user-static (binfmt_misc).
_HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(
    os.environ.get("FALCON_CLUSTER_ARCH", ""), os.environ.get("FALCON_CLUSTER_ARCH", "")
) or _HOST_ARCH
FOREIGN = ARCH != _HOST_ARCH
# Under qemu-user a setuid binary (sudo) gets no root: binfmt_misc hands it to the interpreter
# without the binary's credentials (Debian registers qemu without binfmt's C flag, and adding it
# would make every setuid aarch64 binary on this host root-capable). So emulated nodes are
# managed as root over SSH with the lab's key instead of `deploy` + sudo.
SSH_USER = "root" if FOREIGN else ADMIN_USER

# Bump when the build steps below change in a way the package list does not show.
IMAGE_RECIPE = 3
IMAGE_PACKAGES = (
    # what every node needs to be managed
    "systemd", "systemd-sysv", "dbus", "libpam-systemd", "openssh-server", "python3", "python3-apt",
    "sudo", "acl", "iproute2", "curl", "ca-certificates", "procps", "less", "tzdata",
    # what the roles install (so that `setup` needs no network)
    "postgresql", "postgresql-client", "python3-psycopg2", "ssl-cert", "openssl", "nginx",
    "python3-venv", "python3-pip", "nftables", "systemd-timesyncd", "unattended-upgrades",
    "apt-listchanges",
)

NODES = {"db": 10, "compute": 11, "web": 12}
# One node carrying all three roles (ansible/inventory/single), like a lone Raspberry Pi.
SINGLE = {"pi": 20}


class LabUnavailable(Exception):
    """This machine cannot run the lab; the message says why."""


def log(msg: str) -> None:
    print(f"[lab {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(*argv: str | Path, check: bool = True, capture: bool = False, timeout: float | None = 600,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], check=check, text=True, timeout=timeout, input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None,
    )


# ---------------------------------------------------------------- preflight


def preflight() -> None:
    """Raise LabUnavailable unless root, nspawn, mmdebstrap and overlayfs are there.

    Installs systemd-container and mmdebstrap with apt when missing (they are small).
    """
    if os.geteuid() != 0:
        raise LabUnavailable("needs root (network namespaces, overlay mounts, nspawn)")
    if sys.platform != "linux":
        raise LabUnavailable("needs Linux")
    wanted = (("systemd-container", "systemd-nspawn"), ("mmdebstrap", "mmdebstrap"))
    missing = [p for p, cmd in wanted if shutil.which(cmd) is None]
    if missing:
        if shutil.which("apt-get") is None:
            raise LabUnavailable(f"{', '.join(missing)} missing and no apt-get to install them")
        log(f"installing {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        res = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                              *missing], stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, env=env, check=False)
        if res.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], stdin=subprocess.DEVNULL,
                           capture_output=True, check=False)
            res = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                                  *missing], stdin=subprocess.DEVNULL, capture_output=True,
                                 text=True, env=env, check=False)
        if res.returncode != 0:
            raise LabUnavailable(f"cannot install {' '.join(missing)}: {res.stderr.strip()[-300:]}")
    if "overlay" not in Path("/proc/filesystems").read_text():
        run("modprobe", "overlay", check=False, capture=True)
        if "overlay" not in Path("/proc/filesystems").read_text():
            raise LabUnavailable("no overlayfs in this kernel")
    if any(shutil.which(tool) is None for tool in ("ip", "ssh", "ssh-keygen")):
        raise LabUnavailable("needs iproute2 and openssh-client on the host")
    if not Path("/sys/fs/cgroup").exists():
        raise LabUnavailable("no cgroup file system")
    if FOREIGN:
        _preflight_foreign()


def _preflight_foreign() -> None:
    """Make ARCH binaries run here: qemu-user-static registered with binfmt_misc (flag F, so that
    the interpreter works inside the containers too)."""
    qemu = {"arm64": "aarch64", "armhf": "arm"}.get(ARCH)
    if qemu is None:
        raise LabUnavailable(f"no qemu emulation known for FALCON_CLUSTER_ARCH={ARCH}")
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "status").exists():
        run("mount", "-t", "binfmt_misc", "binfmt_misc", binfmt, check=False, capture=True)
    if not (binfmt / f"qemu-{qemu}").exists():
        if shutil.which("apt-get") is None:
            raise LabUnavailable("qemu-user-static is missing and there is no apt-get")
        log("installing qemu-user-static and binfmt-support")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        res = subprocess.run(["apt-get", "install", "-y", "-qq", "qemu-user-static",
                              "binfmt-support"], stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, env=env, check=False)
        if res.returncode != 0:
            raise LabUnavailable(f"cannot install qemu-user-static: {res.stderr.strip()[-300:]}")
        run("update-binfmts", "--enable", f"qemu-{qemu}", check=False, capture=True)
    entry = binfmt / f"qemu-{qemu}"
    if not entry.exists() or "enabled" not in entry.read_text():
        raise LabUnavailable(f"binfmt_misc has no enabled qemu-{qemu} entry")
    if "flags: " in entry.read_text() and "F" not in entry.read_text().split("flags: ")[1][:4]:
        raise LabUnavailable(f"qemu-{qemu} is registered without the F flag: containers cannot "
                             "use it")


# ---------------------------------------------------------------- image


def _host_apt_sources() -> list[str]:
    """One-line sources for SUITE taken from the host's apt config (the mirror that works here)."""
    lines: list[str] = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields: dict[str, str] = {}
            for raw in stanza.splitlines():
                if raw.startswith("#") or ":" not in raw:
                    continue
                key, _, value = raw.partition(":")
                fields[key.strip().lower()] = value.strip()
            if fields.get("enabled", "yes") == "no" or "deb" not in fields.get("types", "").split():
                continue
            for uri in fields.get("uris", "").split():
                for suite in fields.get("suites", "").split():
                    if suite.startswith(SUITE):
                        lines.append(f"deb {uri} {suite} {fields.get('components', 'main')}")
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for raw in legacy.read_text().splitlines():
            parts = raw.split()
            if len(parts) >= 4 and parts[0] == "deb" and parts[2].startswith(SUITE):
                lines.append(" ".join(parts))
    if not lines:
        lines = [f"deb http://deb.debian.org/debian {SUITE} main",
                 f"deb http://deb.debian.org/debian {SUITE}-updates main",
                 f"deb http://deb.debian.org/debian-security {SUITE}-security main"]
    return sorted(set(lines))


def _host_apt_options() -> list[str]:
    """The host's apt settings that decide whether the mirror is reachable (proxies, validity)."""
    opts = ['Acquire::Check-Valid-Until "false"', 'Acquire::Languages "none"']
    dump = run("apt-config", "dump", capture=True, check=False).stdout or ""
    for raw in dump.splitlines():
        key = raw.split(" ", 1)[0]
        if key.lower() in {"acquire::http::proxy", "acquire::https::proxy"} and raw.strip():
            opts.append(raw.strip().rstrip(";"))
    return opts


def image_key() -> str:
    material = json.dumps({
        "recipe": IMAGE_RECIPE, "suite": SUITE, "packages": IMAGE_PACKAGES,
        "sources": _host_apt_sources(), "admin": ADMIN_USER,
        # (the host's machine name for native images: the key of images built before arm64)
        "arch": ARCH if FOREIGN else os.uname().machine,
    }, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def build_image() -> Path:
    """The cached root file system for SUITE, built on first use; its path."""
    key = image_key()
    root = CACHE / "images" / key / "rootfs"
    if (root / "etc" / "os-release").exists() and (root.parent / "complete").exists():
        log(f"image {key} cached at {root}")
        return root
    sources = _host_apt_sources()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="build-", dir=root.parent))
    tmp_root = tmp / "rootfs"
    started = time.monotonic()
    log(f"building image {key} ({ARCH}) with mmdebstrap (about a minute or two"
        f"{'; far longer under qemu' if FOREIGN else ''})")
    hooks = [
        # services are enabled by the roles on the nodes that need them
        'chroot "$1" systemctl disable postgresql.service nginx.service',
        # each node gets its own host keys and machine id
        'rm -f "$1"/etc/ssh/ssh_host_*',
        'mkdir -p "$1"/var/log/journal',
        f'chroot "$1" useradd --create-home --shell /bin/bash {ADMIN_USER}',
        f'echo "{ADMIN_USER} ALL=(ALL) NOPASSWD:ALL" > "$1"/etc/sudoers.d/{ADMIN_USER}',
        f'chmod 0440 "$1"/etc/sudoers.d/{ADMIN_USER}',
        'printf "PasswordAuthentication no\\nUseDNS no\\n" > "$1"/etc/ssh/sshd_config.d/lab.conf',
        # apt lists stay (offline nodes); timestamps say they were fetched now
        'touch "$1"/var/lib/apt/lists/*',
    ]
    argv: list[str] = [
        "mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory",
        f"--architectures={ARCH}",
        f"--include={','.join(IMAGE_PACKAGES)}", "--skip=cleanup/apt/lists",
        "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
    ]
    argv += [f"--aptopt={o}" for o in _host_apt_options()]
    argv += [f"--customize-hook={h}" for h in hooks]
    argv += [SUITE, str(tmp_root), *sources]
    try:
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=3600 if FOREIGN else 1200, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"mmdebstrap failed ({res.returncode}):\n{res.stderr[-3000:]}")
        Path(tmp_root / "etc" / "machine-id").write_text("")
        if root.exists():
            shutil.rmtree(root)
        tmp_root.rename(root)
        (root.parent / "complete").write_text(json.dumps({"built": time.time()}))
    finally:
        if _mounts_under(tmp):  # never delete through a mount mmdebstrap left (/dev, /proc)
            log(f"mounts left under {tmp}; not removing it")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"image {key} built in {time.monotonic() - started:.0f} s")
    return root


# ---------------------------------------------------------------- nodes


@dataclass
class Node:
    name: str
    addr: str
    dir: Path
    pid: int | None = None

    @property
    def netns(self) -> str:
        return f"{LAB_ID}-{self.name}"

    @property
    def veth(self) -> str:
        return f"{LAB_ID}-{self.name}"[:15]

    @property
    def merged(self) -> Path:
        return self.dir / "merged"

    @property
    def machine(self) -> str:
        return f"falcon-{self.name}"


@dataclass
class Lab:
    """Three nodes; ``up()`` boots them, ``down()`` removes all of it."""

    image: Path
    run_dir: Path = RUN_ROOT
    nodes: dict[str, Node] = field(default_factory=dict)
    made: list[list[str]] = field(default_factory=list)  # what to undo, in order of making
    layout: dict[str, int] = field(default_factory=lambda: dict(NODES))  # name: address's last byte

    # -- state file so that `down` works from another process
    def save(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        STATE_FILE.write_text(json.dumps({
            "image": str(self.image), "run_dir": str(self.run_dir), "made": self.made,
            "nodes": {n.name: {"addr": n.addr, "dir": str(n.dir), "pid": n.pid}
                      for n in self.nodes.values()},
        }, indent=1))

    @classmethod
    def load(cls) -> Lab | None:
        if not STATE_FILE.exists():
            return None
        data = json.loads(STATE_FILE.read_text())
        lab = cls(image=Path(data["image"]), run_dir=Path(data["run_dir"]), made=data["made"])
        for name, n in data["nodes"].items():
            lab.nodes[name] = Node(name, n["addr"], Path(n["dir"]), n["pid"])
        return lab

    def _made(self, *entry: str) -> None:
        self.made.append(list(entry))
        self.save()

    @property
    def ssh_key(self) -> Path:
        return self.run_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.run_dir / "known_hosts"

    # -- up
    def lock(self) -> None:
        """Take the lab's lock, or raise LabUnavailable when another process runs this lab."""
        if getattr(self, "_lock_fd", None) is not None:
            return
        fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 64).decode(errors="replace").strip()
            os.close(fd)
            msg = (f"another cluster lab is running (pid {owner or '?'}, {STATE_FILE}); "
                   "FALCON_LAB_ID and FALCON_LAB_SUBNET run a second one")
            raise LabUnavailable(msg) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd: int | None = fd

    def unlock(self) -> None:
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            self._lock_fd = None

    def up(self) -> None:
        self.lock()
        stale = Lab.load()
        if stale is not None:
            live = [e for e in stale.made if e[0] == "nspawn" and _alive(int(e[2]))
                    and _is_nspawn(int(e[2]))]
            if live:
                self.unlock()
                raise LabUnavailable(f"a lab whose containers still run is in {STATE_FILE}")
            log("removing a previous lab left behind")
            stale.down()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._made("dir", str(self.run_dir))
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "falcon-lab", "-f", self.ssh_key)
        self._network_bridge()
        for name, last in self.layout.items():
            node = Node(name, f"{SUBNET}.{last}", self.run_dir / name)
            self.nodes[name] = node
            self._prepare(node)
            self._network_node(node)
        # the host keys were made on this side: SSH checks them strictly from the first contact
        self.known_hosts.write_text("".join(
            f"{n.addr} " + " ".join((n.merged / "etc/ssh/ssh_host_ed25519_key.pub")
                                     .read_text().split()[:2]) + "\n"
            for n in self.nodes.values()))
        for node in self.nodes.values():
            self.start(node)
        for node in self.nodes.values():
            self.wait_ssh(node)

    def _network_bridge(self) -> None:
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        self._made("link", BRIDGE)
        run("ip", "addr", "add", f"{HOST_ADDR}/{PREFIX}", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")

    def _network_node(self, node: Node) -> None:
        run("ip", "netns", "add", node.netns)
        self._made("netns", node.netns)
        run("ip", "link", "add", node.veth, "type", "veth", "peer", "name", "eth0",
            "netns", node.netns)
        self._made("link", node.veth)
        run("ip", "link", "set", node.veth, "master", BRIDGE, "up")
        run("ip", "-n", node.netns, "addr", "add", f"{node.addr}/{PREFIX}", "dev", "eth0")
        run("ip", "-n", node.netns, "link", "set", "lo", "up")
        run("ip", "-n", node.netns, "link", "set", "eth0", "up")

    def _prepare(self, node: Node) -> None:
        for sub in ("upper", "work", "merged"):
            (node.dir / sub).mkdir(parents=True, exist_ok=True)
        run("mount", "-t", "overlay", "overlay", "-o",
            f"lowerdir={self.image},upperdir={node.dir / 'upper'},workdir={node.dir / 'work'}",
            node.merged)
        self._made("mount", str(node.merged))
        root = node.merged
        (root / "etc/hostname").write_text(f"{node.name}\n")
        hosts = "127.0.0.1 localhost\n" + "".join(
            f"{SUBNET}.{last} {name}\n" for name, last in self.layout.items())
        (root / "etc/hosts").write_text(hosts)
        (root / "etc/machine-id").write_text("")
        run("ssh-keygen", "-q", "-A", "-f", root)  # fresh host keys for this node
        ssh_dir = root / "home" / ADMIN_USER / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(Path(f"{self.ssh_key}.pub").read_text())
        (ssh_dir / "authorized_keys").chmod(0o600)
        uid_gid = self._passwd_ids(root, ADMIN_USER)
        for p in (ssh_dir, ssh_dir / "authorized_keys"):
            os.chown(p, *uid_gid)
        if SSH_USER == "root":
            root_ssh = root / "root" / ".ssh"
            root_ssh.mkdir(mode=0o700, exist_ok=True)
            (root_ssh / "authorized_keys").write_text(Path(f"{self.ssh_key}.pub").read_text())
            (root_ssh / "authorized_keys").chmod(0o600)

    @staticmethod
    def _passwd_ids(root: Path, user: str) -> tuple[int, int]:
        for line in (root / "etc/passwd").read_text().splitlines():
            parts = line.split(":")
            if parts[0] == user:
                return int(parts[2]), int(parts[3])
        raise RuntimeError(f"no user {user} in the image")

    def _cgroup_dirs(self, node: Node) -> list[Path]:
        dirs = []
        for hierarchy in ("systemd", "unified"):
            base = Path("/sys/fs/cgroup") / hierarchy
            if base.is_dir():
                dirs.append(base / CGROUP_SLICE / node.name)
        return dirs

    def start(self, node: Node) -> None:
        """Boot NODE with nspawn in a cgroup and network namespace of its own."""
        cgroups = self._cgroup_dirs(node)
        for d in cgroups:
            if not d.exists():
                d.mkdir(parents=True)
                self._made("cgroup", str(d))
        log_path = node.dir / "nspawn.log"
        argv = [
            "systemd-nspawn", "--boot", "--quiet", "--register=no", "--keep-unit",
            f"--directory={node.merged}", f"--machine={node.machine}", f"--hostname={node.name}",
            f"--network-namespace-path=/run/netns/{node.netns}", "--resolv-conf=copy-host",
            "--timezone=off", "--console=passive", "--link-journal=no",
            # nftables inside the node's own namespace (the firewall the roles write)
            "--capability=CAP_NET_ADMIN",
        ]

        def enter_cgroup() -> None:
            os.setsid()
            for d in cgroups:
                (d / "cgroup.procs").write_text(str(os.getpid()))

        with open(log_path, "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    preexec_fn=enter_cgroup)
        node.pid = proc.pid
        self._procs[node.name] = proc
        self._made("nspawn", node.name, str(proc.pid))

    @property
    def _procs(self) -> dict[str, subprocess.Popen[bytes]]:
        if not hasattr(self, "_proc_map"):
            self._proc_map: dict[str, subprocess.Popen[bytes]] = {}
        return self._proc_map

    def wait_exit(self, node: Node, timeout: float = 60) -> int | None:
        proc = self._procs.get(node.name)
        if proc is None:
            return None
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, node: Node, timeout: float = 20) -> None:
        """An orderly poweroff: SIGTERM to the node's own nspawn, SIGKILL if it hangs."""
        if node.pid is None:
            return
        proc = self._procs.get(node.name)
        try:
            os.kill(node.pid, signal.SIGTERM)
        except ProcessLookupError:
            node.pid = None
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                break
            if proc is None and not _alive(node.pid):
                break
            time.sleep(0.2)
        else:
            _kill_container(node.pid)
            if proc is not None:
                proc.wait(timeout=10)
        node.pid = None

    # -- reaching nodes
    def ssh_argv(self, node: Node | str, *, become: bool = False) -> list[str]:
        n = self.nodes[node] if isinstance(node, str) else node
        argv = ["ssh", "-i", str(self.ssh_key), "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "ConnectTimeout=5",
                "-o", "StrictHostKeyChecking=yes",
                "-o", "LogLevel=ERROR", f"{SSH_USER}@{n.addr}"]
        if become and SSH_USER != "root":
            argv += ["sudo", "-n"]
        return argv

    def ssh(self, node: Node | str, command: str, *, check: bool = True, input: str | None = None,
            timeout: float = 120, become: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [*self.ssh_argv(node, become=become), "sh", "-c", _quote(command)]
        res = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout,
                             stdin=None if input is not None else subprocess.DEVNULL, check=False)
        if check and res.returncode != 0:
            raise AssertionError(
                f"ssh {node if isinstance(node, str) else node.name} {command!r} -> "
                f"{res.returncode}\nstdout: {res.stdout[-2000:]}\nstderr: {res.stderr[-2000:]}")
        return res

    def wait_ssh(self, node: Node, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            proc = self._procs.get(node.name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{node.name}: nspawn exited with {proc.returncode}; "
                                   f"see {node.dir / 'nspawn.log'}")
            res = subprocess.run(
                [*self.ssh_argv(node), "systemctl", "is-system-running", "--wait"],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)
            last = (res.stdout + res.stderr).strip()
            if res.stdout.strip() in {"running", "degraded"}:
                log(f"{node.name} up ({res.stdout.strip()})")
                return
            time.sleep(0.5)
        raise RuntimeError(f"{node.name} did not come up in {timeout:.0f} s: {last}")

    def journal(self, node: Node | str, *args: str) -> str:
        """The node's journal read from its files on the host (works when SSH does not)."""
        n = self.nodes[node] if isinstance(node, str) else node
        res = run("journalctl", "--no-pager", "-D", n.merged / "var/log/journal", *args,
                  capture=True, check=False)
        return res.stdout

    # -- down
    def down(self) -> None:
        """Undo everything in reverse order of making; never raises for what is already gone."""
        errors: list[str] = []
        for name, node in self.nodes.items():
            with contextlib.suppress(Exception):
                self.stop(node)
            del name
        for entry in reversed(self.made):
            kind, *rest = entry
            try:
                if kind == "nspawn":
                    pid = int(rest[1])
                    if _alive(pid) and _is_nspawn(pid):
                        os.kill(pid, signal.SIGTERM)
                        if not _wait_gone(pid, 20):
                            _kill_container(pid)
                elif kind == "mount":
                    if os.path.ismount(rest[0]):
                        r = run("umount", rest[0], check=False, capture=True)
                        if r.returncode != 0:
                            run("umount", "-l", rest[0], check=False, capture=True)
                elif kind == "cgroup":
                    _remove_cgroup(Path(rest[0]))
                elif kind == "link":
                    run("ip", "link", "del", rest[0], check=False, capture=True)
                elif kind == "netns":
                    run("ip", "netns", "del", rest[0], check=False, capture=True)
                elif kind == "dir":
                    pass  # removed last, below
            except Exception as exc:  # keep going: remove as much as possible
                errors.append(f"{entry}: {exc}")
        for entry in self.made:
            if entry[0] == "cgroup":
                parent = Path(entry[1]).parent
                if parent.name == CGROUP_SLICE:
                    with contextlib.suppress(OSError):
                        parent.rmdir()
        if self.run_dir.exists():
            if any(os.path.ismount(p) for p in _mounts_under(self.run_dir)):
                errors.append(f"mounts left under {self.run_dir}; not removing it")
            else:
                shutil.rmtree(self.run_dir, ignore_errors=True)
        self.made.clear()
        self.nodes.clear()
        if not errors:
            self.unlock()
        if errors:
            raise RuntimeError("lab cleanup incomplete:\n" + "\n".join(errors))


def _quote(command: str) -> str:
    return "'" + command.replace("'", "'\\''") + "'"


def _alive(pid: int) -> bool:
    """True while PID runs (a zombie waiting for its parent counts as gone)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _kill_container(nspawn_pid: int) -> None:
    """SIGKILL a container that did not power off, and then its nspawn.

    The container's init (nspawn's child, PID 1 of its own namespace) goes first: killing it
    takes every process of the container with it, while killing only nspawn would orphan them.
    Needed under qemu-user emulation, where the poweroff signal (SIGRTMIN+3) does not reach the
    emulated systemd.
    """
    for child in _children(nspawn_pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    _wait_gone_all(_children(nspawn_pid), 10)
    with contextlib.suppress(ProcessLookupError):
        os.kill(nspawn_pid, signal.SIGKILL)


def _wait_gone_all(pids: list[int], timeout: float) -> None:
    for pid in pids:
        _wait_gone(pid, timeout)


def _is_nspawn(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "systemd-nspawn"
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    return False


def _remove_cgroup(path: Path) -> None:
    """rmdir a cgroup and the ones the container's systemd left in it, deepest first."""
    # A killed container's processes (emulated ones are slow) may take a moment to leave it.
    deadline = time.monotonic() + 15
    while True:
        if not path.exists():
            return
        for sub in sorted((p for p in path.rglob("*") if p.is_dir()),
                          key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                sub.rmdir()
        try:
            path.rmdir()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _mounts_under(root: Path) -> list[str]:
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1]
        # root itself or below it (not /x/lab-flabarm for /x/lab-flab: a second lab's mounts)
        if target == str(root) or target.startswith(str(root).rstrip("/") + "/"):
            out.append(target)
    return out


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "help"
    if cmd == "image":
        preflight()
        print(build_image())
    elif cmd == "up":
        preflight()
        # `up single`: one node with every role (like the FALCON_CLUSTER_ARCH=arm64 test)
        layout = dict(SINGLE) if argv[1:2] == ["single"] else dict(NODES)
        lab = Lab(build_image(), layout=layout)
        lab.up()
        last = ",".join(str(v) for v in layout.values())
        print(f"nodes up; ssh -i {lab.ssh_key} -o UserKnownHostsFile={lab.known_hosts} "
              f"{SSH_USER}@{SUBNET}.{{{last}}}; stop with: {sys.argv[0]} down")
        # keep the nspawn processes' parent alive so they are not orphaned mid-boot
        print("Ctrl-C or SIGTERM takes the lab down", flush=True)

        def _stop(*_: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _stop)
        try:
            while True:
                time.sleep(1)
                for node in lab.nodes.values():  # reap a node that powered off, say so
                    code = lab.wait_exit(node, timeout=0.01)
                    if code is not None and node.pid is not None:
                        log(f"{node.name} exited with {code}")
                        node.pid = None
        except KeyboardInterrupt:
            pass
        lab.down()
    elif cmd == "down":
        loaded = Lab.load()
        if loaded is None:
            print("no lab state found", file=sys.stderr)
            return 0
        loaded.lock()  # fails while the `up` process (or a test) still runs it
        loaded.down()
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
