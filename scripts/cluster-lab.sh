#!/usr/bin/env bash
# The three-node lab by hand (the cluster test builds the same one): db, compute and web as
# systemd-nspawn containers on 10.77.0.0/24, reachable over SSH from this machine. Needs root.
#
#   scripts/cluster-lab.sh image    build (or reuse) the cached Debian bookworm root file system
#   scripts/cluster-lab.sh up       boot the nodes; stays in the foreground, Ctrl-C takes them down
#   scripts/cluster-lab.sh down     remove a lab left behind (containers, mounts, network, cgroups)
#   scripts/cluster-lab.sh test     run the cluster test (pytest -m cluster tests/cluster)
#
# FALCON_LAB_ID and FALCON_LAB_SUBNET (e.g. flb1 and 10.77.1) run a second lab beside the first.
# With the lab up, deploy to it with an inventory like the one the test writes
# (/var/tmp/falcon-lab-<id>/inventory/hosts.yml while the test runs).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${FALCON_VENV:-.venv}/bin/python
[[ -x $PY ]] || PY=python3
case ${1:-} in
    image | up | down) exec "$PY" -m tests.cluster.lab "$1" ;;
    test) shift; exec "$PY" -m pytest -p no:cacheprovider -m cluster tests/cluster -v "$@" ;;
    *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
