#!/usr/bin/env bash
# Set up everything the tests need, then run the whole suite (README's test command; CI runs it).
# Extra arguments go to pytest:  scripts/test.sh -k ledger -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --dev
VENV=${FALCON_VENV:-.venv}
echo "==> ruff" >&2
"$VENV/bin/ruff" check falcon tests bench scripts
echo "==> mypy" >&2
"$VENV/bin/mypy"
echo "==> pytest" >&2
mkdir -p test-artifacts
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
