#!/usr/bin/env bash
# Set up a single-node install (SQLite, the bundled sample data) and run Falcon's main job.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec "${FALCON_VENV:-.venv}/bin/falcon" up "$@"
