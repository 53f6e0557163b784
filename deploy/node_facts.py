"""Read `ansible -m setup` output (the json callback) and say which node could not be reached.

Used by deploy.sh before anything is changed on any node:
    ansible PATTERN -m ansible.builtin.setup ... | python node_facts.py INVENTORY PATTERN
On success prints "<host> <architecture>" per node and exits 0. Otherwise prints one line per node
that failed, naming it, why, and what to check, and exits 3 (unreachable) or 4 (other failure);
never Ansible's own multi-line noise.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

_PREFIXES = ("Task failed: ", "Failed to connect to the host via ssh: ", "Data could not be sent "
             "to remote host ")


def _reason(msg: str) -> str:
    """Ansible's message down to its cause: the ssh error, on one line."""
    text = " ".join(str(msg).split())
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if text.startswith(prefix):
                text, changed = text[len(prefix):], True
    # ssh's own chatter before the error ("Warning: Permanently added ...") is not the cause
    text = re.sub(r"^Warning: Permanently added [^.]*\.\s*", "", text)
    return text[:300] or "no reason given"


def main(argv: list[str]) -> int:
    inventory, pattern = argv
    raw = sys.stdin.read()
    data: dict[str, Any] = {}
    if "{" in raw:  # the first JSON document (an enabled callback may print after it)
        try:
            data, _ = json.JSONDecoder().raw_decode(raw[raw.index("{"):])
        except ValueError:
            data = {}
    hosts: dict[str, dict[str, object]] = {}
    for play in data.get("plays", []):
        for task in play.get("tasks", []):
            hosts.update(task.get("hosts", {}))
    if not hosts:
        print(f"error: no node in {inventory} matches '{pattern}' (or the inventory cannot be "
              f"read: ansible-inventory -i {inventory} --graph)", file=sys.stderr)
        return 4
    unreachable = failed = 0
    for host in sorted(hosts):
        result = hosts[host]
        if result.get("unreachable"):
            unreachable += 1
            print(f"error: node {host} is unreachable: {_reason(str(result.get('msg', '')))} "
                  f"(check its ansible_host, ansible_port and ansible_user in {inventory}, and "
                  "that SSH runs there)", file=sys.stderr)
        elif result.get("failed"):
            failed += 1
            print(f"error: node {host} cannot be managed: {_reason(str(result.get('msg', '')))}",
                  file=sys.stderr)
    if unreachable or failed:
        return 3 if unreachable else 4
    for host in sorted(hosts):
        facts = hosts[host].get("ansible_facts", {})
        arch = facts.get("ansible_architecture", "") if isinstance(facts, dict) else ""
        print(f"{host} {arch or 'unknown'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
