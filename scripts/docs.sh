#!/usr/bin/env bash
# Builds the documentation with warnings as errors (mkdocs build --strict): a broken
# cross-reference or a public name without a docstring fails. Usage: scripts/docs.sh [SITE_DIR]
# (default build/site). Sets up .venv with the dev extras (which include docs) if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/env.sh dev
exec .venv/bin/python -m mkdocs build --strict --quiet --site-dir "${1:-build/site}"
