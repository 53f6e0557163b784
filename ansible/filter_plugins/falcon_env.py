"""Filters for the operator's secrets file (systemd EnvironmentFile syntax, KEY=value lines)."""

from __future__ import annotations

import re
from typing import Any

_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def parse_envfile(text: str) -> dict[str, str]:
    """``KEY=value`` lines into a dict; comments, blank lines and surrounding quotes dropped."""
    out: dict[str, str] = {}
    for raw in str(text).splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        match = _LINE.match(line)
        if match is None:
            continue
        key, value = match.groups()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key] = value
    return out


class FilterModule:
    """falcon_env filters."""

    def filters(self) -> dict[str, Any]:
        return {"parse_envfile": parse_envfile}
