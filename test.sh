#!/usr/bin/env bash
# The tests: sets up .venv if needed, checks lint, runs pytest (extra args go to pytest;
# by default the slow tests are left out: run them with ./test.sh -m slow).
set -euo pipefail
cd "$(dirname "$0")"
scripts/env.sh dev
.venv/bin/ruff check src tests examples docs/hooks
if [[ " $* " == *" -m "* ]]; then
  exec .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/python -m pytest -m "not slow" "$@"
