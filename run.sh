#!/usr/bin/env bash
# The main job: sets up .venv if needed, then runs the demonstration (extra args go to it).
set -euo pipefail
cd "$(dirname "$0")"
scripts/env.sh dev
exec .venv/bin/smto demo "$@"
