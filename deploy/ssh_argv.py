"""Print the ssh command line (NUL-separated) that reaches an inventory host as Ansible would.

Used by deploy.sh logs, which streams journalctl (Ansible cannot stream):
    python ssh_argv.py ANSIBLE_INVENTORY_BIN INVENTORY PLAYBOOK_DIR HOST
The command ends with `sudo -n` when the SSH user is not root, so that journalctl sees everything.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys


def main(argv: list[str]) -> int:
    inventory_bin, inventory, playbook_dir, host = argv
    out = subprocess.run(
        [inventory_bin, "-i", inventory, "--playbook-dir", playbook_dir, "--host", host],
        check=True, capture_output=True, text=True,
    ).stdout
    hv = json.loads(out)
    user = hv.get("ansible_user") or hv.get("ansible_ssh_user")
    address = hv.get("ansible_host") or host
    cmd = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    if hv.get("ansible_port"):
        cmd += ["-p", str(hv["ansible_port"])]
    if hv.get("ansible_ssh_private_key_file"):
        cmd += ["-i", str(hv["ansible_ssh_private_key_file"])]
    for key in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        if hv.get(key):
            cmd += shlex.split(str(hv[key]))
    cmd.append(f"{user}@{address}" if user else str(address))
    if user and user != "root":
        cmd += ["sudo", "-n"]
    sys.stdout.write("\0".join(cmd) + "\0")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
